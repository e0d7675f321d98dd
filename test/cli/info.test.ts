// fcn info reports the CPU features the precision choice rests on: its yes/no for AMX,
// avx512_bf16, AVX-512, VNNI and AVX2 agree with the flags the kernel lists in /proc/cpuinfo;
// the ISA is oneDNN's, with ONEDNN_MAX_CPU_ISA named when it caps it; and the precision and
// int8 lines follow that ISA (under the AVX2 cap, an AVX-512 CPU runs float32 and 7-bit int8).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { native } from '../../src/engine/binding.js';
import { requires } from '../prereq.js';
import { lines, runCli } from '../eval/fixtures.js';

const cpuinfo = '/proc/cpuinfo';
const skip = requires(existsSync(cpuinfo) && /^flags\s*:/m.test(readFileSync(cpuinfo, 'utf8')), `${cpuinfo} with a flags line (Linux on x86)`);
// Every processor's flags: a feature counts only if all of them have it.
const flagSets = skip ? [] : [...readFileSync(cpuinfo, 'utf8').matchAll(/^flags\s*:\s*(.*)$/gm)].map((m) => new Set(m[1].trim().split(/\s+/)));
const has = (flag: string) => flagSets.length > 0 && flagSets.every((s) => s.has(flag));
const vendor = skip ? '' : (/^vendor_id\s*:\s*(.*)$/m.exec(readFileSync(cpuinfo, 'utf8'))?.[1].trim() ?? '');

const hardware: [string, boolean][] = [
  ['AMX', has('amx_bf16') && has('amx_tile')],
  ['avx512_bf16', has('avx512_bf16')],
  ['AVX-512', has('avx512f')],
  ['VNNI', has('avx512_vnni') || has('avx_vnni')],
  ['AVX2', has('avx2')],
];

/** What oneDNN 2.x's ISAs run, by name: bf16 arithmetic that auto picks, and exact (VNNI) int8 sums. */
function expectedFromIsa(isa: string): { precision: 'float32' | 'bfloat16'; eightBit: boolean } {
  const bf16Auto = isa === 'avx512_core_amx' || (isa === 'avx512_core_bf16' && vendor === 'AuthenticAMD');
  const vnni = ['avx2_vnni', 'avx512_core_vnni', 'avx512_core_bf16', 'avx512_core_amx'].includes(isa);
  return { precision: bf16Auto ? 'bfloat16' : 'float32', eightBit: vnni };
}

function assertCpuLine(out: string): void {
  const cpuLine = lines(out).find((l) => l.startsWith('CPU '));
  assert.ok(cpuLine, `no CPU line in:\n${out}`);
  for (const [name, want] of hardware) {
    const m = new RegExp(`[:,] ${name.replace(/[-]/g, '\\-')} (yes|no)(,|$)`).exec(cpuLine);
    assert.ok(m, `${name} missing from: ${cpuLine}`);
    assert.equal(m[1], want ? 'yes' : 'no', `${name}: fcn info says ${m[1]}, /proc/cpuinfo says ${want ? 'yes' : 'no'} (${cpuLine})`);
  }
}

/** The precision and int8 lines that oneDNN's ISA `isa` calls for. */
function assertRulesFollow(out: string, isa: string): void {
  const want = expectedFromIsa(isa);
  assert.match(out, new RegExp(`^precision ${want.precision} \\(auto: `, 'm'), `ISA ${isa}`);
  assert.match(out, want.eightBit ? /^int8 .*: VNNI, 8-bit activations$/m : /^int8 .*: no VNNI: 7-bit activations/m, `ISA ${isa}`);
}

const CLI = path.join(import.meta.dirname, 'run-cli.ts');
/** `fcn ...` in a process of its own, with `env` over this one's (undefined: unset). */
function cliIn(env: Record<string, string | undefined>, ...argv: string[]) {
  const full: NodeJS.ProcessEnv = { ...process.env, FCN_PRECISION: undefined, FCN_THREADS: undefined, ...env };
  for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...argv], { env: full, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('fcn info: the CPU line is /proc/cpuinfo\'s flags; the ISA, precision and int8 lines are oneDNN\'s', { skip }, async () => {
  const r = await runCli('info', '--threads', '2');
  assert.equal(r.code, 0, r.err);
  assertCpuLine(r.out);
  const isa = native.info().isa;
  const cap = process.env.ONEDNN_MAX_CPU_ISA || process.env.DNNL_MAX_CPU_ISA;
  const onednn = lines(r.out).find((l) => l.startsWith('oneDNN '));
  assert.ok(onednn, r.out);
  assert.match(onednn, /^oneDNN \d+\.\d+\.\d+ /);
  assert.ok(onednn.includes(`, ISA ${isa}`), onednn);
  if (cap) assert.ok(onednn.includes(`(ONEDNN_MAX_CPU_ISA=${cap} in force: `), `the cap is named: ${onednn}`);
  else assert.doesNotMatch(onednn, /MAX_CPU_ISA/);
  assert.match(onednn, / 2 threads$/);
  // Without AVX-512 (the processor's or the ISA's), never bfloat16.
  if (!has('avx512f') || !isa.startsWith('avx512')) assert.match(r.out, /^precision float32 /m);
  if (!process.env.FCN_PRECISION) assertRulesFollow(r.out, isa);
});

test('fcn info under ONEDNN_MAX_CPU_ISA=AVX2: ISA avx2, the cap and what it leaves unused named, float32, 7-bit int8', { skip: skip || requires(has('avx2'), 'a CPU with AVX2') }, () => {
  const r = cliIn({ ONEDNN_MAX_CPU_ISA: 'AVX2', DNNL_MAX_CPU_ISA: undefined }, 'info');
  assert.equal(r.code, 0, r.err);
  assertCpuLine(r.out); // the processor's own features, cap or not
  const unused = hardware.filter(([name, yes]) => yes && name !== 'AVX2').map(([name]) => name);
  const note = unused.length ? `this CPU's ${unused.join(', ')} unused` : 'nothing of this CPU unused';
  assert.match(r.out, new RegExp(`^oneDNN .*, ISA avx2 \\(ONEDNN_MAX_CPU_ISA=AVX2 in force: ${note}\\), \\d+ threads$`, 'm'));
  assertRulesFollow(r.out, 'avx2');
  const bf16 = cliIn({ ONEDNN_MAX_CPU_ISA: 'AVX2', DNNL_MAX_CPU_ISA: undefined }, 'info', '--precision', 'bfloat16');
  assert.equal(bf16.code, 1, bf16.out);
  const where = has('avx512f') ? 'ONEDNN_MAX_CPU_ISA=AVX2 holds oneDNN at avx2 on this one' : 'this CPU has AVX2 at most';
  assert.equal(bf16.err.trim(), `fcn info: bfloat16 needs a CPU with AVX-512 (oneDNN runs no bf16 primitive without it); ${where}: use float32 (--precision float32 or auto)`);
});

test('fcn info with FCN_PRECISION and FCN_THREADS: the option over the variable, the variable over auto; bad values in one line', () => {
  const env = cliIn({ FCN_PRECISION: 'float32', FCN_THREADS: '1' }, 'info');
  assert.equal(env.code, 0, env.err);
  assert.match(env.out, /^precision float32 \(FCN_PRECISION; auto would say: /m);
  assert.match(env.out, /, 1 threads$/m);
  const option = cliIn({ FCN_PRECISION: 'float32', FCN_THREADS: '1' }, 'info', '--precision', 'int8', '--threads', '2');
  assert.equal(option.code, 0, option.err);
  assert.match(option.out, /^precision int8 \(--precision; auto would say: /m);
  assert.match(option.out, /, 2 threads$/m);
  const badThreads = cliIn({ FCN_THREADS: 'all' }, 'info');
  assert.notEqual(badThreads.code, 0);
  assert.equal(badThreads.err.trim(), "fcn info: FCN_THREADS must be a positive integer, got 'all'");
  const badPrecision = cliIn({ FCN_PRECISION: 'fp16' }, 'info');
  assert.notEqual(badPrecision.code, 0);
  assert.equal(badPrecision.err.trim(), "fcn info: FCN_PRECISION must be float32, bfloat16, int8 or auto, got 'fp16'");
});
