// fcn info reports the CPU features the precision choice rests on: its yes/no for AMX,
// avx512_bf16, AVX-512 and AVX2 agree with the flags the kernel lists in /proc/cpuinfo.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { requires } from '../prereq.js';
import { lines, runCli } from '../eval/fixtures.js';

const cpuinfo = '/proc/cpuinfo';
const skip = requires(existsSync(cpuinfo) && /^flags\s*:/m.test(readFileSync(cpuinfo, 'utf8')), `${cpuinfo} with a flags line (Linux on x86)`);

test('fcn info: the AMX, avx512_bf16, AVX-512 and AVX2 answers are the flags of /proc/cpuinfo', { skip }, async () => {
  // Every processor's flags: a feature counts only if all of them have it.
  const flagSets = [...readFileSync(cpuinfo, 'utf8').matchAll(/^flags\s*:\s*(.*)$/gm)].map((m) => new Set(m[1].trim().split(/\s+/)));
  assert.ok(flagSets.length > 0);
  const has = (flag: string) => flagSets.every((s) => s.has(flag));
  const expected: [string, boolean][] = [
    ['AMX', has('amx_bf16') && has('amx_tile')],
    ['avx512_bf16', has('avx512_bf16')],
    ['AVX-512', has('avx512f')],
    ['AVX2', has('avx2')],
  ];

  const r = await runCli('info', '--threads', '2');
  assert.equal(r.code, 0, r.err);
  const cpuLine = lines(r.out).find((l) => l.startsWith('CPU '));
  assert.ok(cpuLine, `no CPU line in:\n${r.out}`);
  for (const [name, want] of expected) {
    const m = new RegExp(`[:,] ${name.replace(/[-]/g, '\\-')} (yes|no)(,|$)`).exec(cpuLine);
    assert.ok(m, `${name} missing from: ${cpuLine}`);
    assert.equal(m[1], want ? 'yes' : 'no', `${name}: fcn info says ${m[1]}, /proc/cpuinfo says ${want ? 'yes' : 'no'} (${cpuLine})`);
  }
  // The precision line follows from those features: bf16 only with AVX-512.
  const precision = lines(r.out).find((l) => l.startsWith('precision '));
  assert.ok(precision, r.out);
  if (!has('avx512f')) assert.match(precision, /^precision float32 /);
  assert.match(r.out, /^oneDNN \d+\.\d+/m);
  assert.match(r.out, / 2 threads$/m);
});
