// The engine's configuration rules: 'auto', bf16Available and the int8 activation mode as
// functions of a CPU description (each CPU family the rules name, and this CPU under oneDNN's
// ISA caps); the description of this CPU against what oneDNN's kernels do under every cap;
// and FCN_THREADS and FCN_PRECISION (in child processes: the configuration is global).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { native } from '../../src/engine/binding.js';
import {
  assertPrecisionSupported, autoPrecision, bf16Available, cpuFeatures, describeCpu, int8SevenBitActivations, unusedFeatures, type CpuReport,
} from '../../src/engine/config.js';
import { requires } from '../prereq.js';
import type { KernelReport } from './kernel-probe.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, '../..');

// /proc/cpuinfo flags of real processors (the ones the rules look at, and a few besides).
const BASE = 'fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma f16c avx2 bmi1 bmi2';
const AVX512 = 'avx512f avx512dq avx512cd avx512bw avx512vl';
interface Family {
  name: string;
  report: CpuReport;
  auto: 'float32' | 'bfloat16';
  bf16: boolean;
  sevenBit: boolean;
}
const cpu = (vendor: string, flags: string, isa: string, isaCap: string | null = null): CpuReport => ({ vendor, model: 'test', flags: flags.split(' '), isa, isaCap });
const families: Family[] = [
  { name: 'Intel with AMX (Sapphire Rapids)', report: cpu('GenuineIntel', `${BASE} ${AVX512} avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8`, 'avx512_core_amx'), auto: 'bfloat16', bf16: true, sevenBit: false },
  { name: 'AMD with avx512_bf16 (Zen 4)', report: cpu('AuthenticAMD', `${BASE} ${AVX512} avx512_vnni avx512_bf16`, 'avx512_core_bf16'), auto: 'bfloat16', bf16: true, sevenBit: false },
  { name: 'Intel with avx512_bf16, no AMX (Cooper Lake)', report: cpu('GenuineIntel', `${BASE} ${AVX512} avx512_vnni avx512_bf16`, 'avx512_core_bf16'), auto: 'float32', bf16: true, sevenBit: false },
  { name: 'AVX-512 with VNNI, no bf16 (Ice Lake)', report: cpu('GenuineIntel', `${BASE} ${AVX512} avx512_vnni`, 'avx512_core_vnni'), auto: 'float32', bf16: true, sevenBit: false },
  { name: 'AVX-512 without VNNI (Skylake-SP)', report: cpu('GenuineIntel', `${BASE} ${AVX512}`, 'avx512_core'), auto: 'float32', bf16: true, sevenBit: true },
  { name: 'AVX2 only (Zen 3)', report: cpu('AuthenticAMD', BASE, 'avx2'), auto: 'float32', bf16: false, sevenBit: true },
  { name: 'AVX2 with avx_vnni (Alder Lake)', report: cpu('GenuineIntel', `${BASE} avx_vnni`, 'avx2_vnni'), auto: 'float32', bf16: false, sevenBit: false },
  // An AVX-512 processor that oneDNN is held below: the rules follow the ISA it runs.
  { name: 'Zen 5 under ONEDNN_MAX_CPU_ISA=AVX2', report: cpu('AuthenticAMD', `${BASE} ${AVX512} avx512_vnni avx512_bf16 avx_vnni`, 'avx2', 'AVX2'), auto: 'float32', bf16: false, sevenBit: true },
  { name: 'Zen 5 under ONEDNN_MAX_CPU_ISA=AVX512_CORE', report: cpu('AuthenticAMD', `${BASE} ${AVX512} avx512_vnni avx512_bf16 avx_vnni`, 'avx512_core', 'AVX512_CORE'), auto: 'float32', bf16: true, sevenBit: true },
  { name: 'Sapphire Rapids under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16', report: cpu('GenuineIntel', `${BASE} ${AVX512} avx512_vnni avx512_bf16 amx_bf16 amx_tile`, 'avx512_core_bf16', 'AVX512_CORE_BF16'), auto: 'float32', bf16: true, sevenBit: false },
];

for (const f of families) {
  test(`auto's rules on ${f.name}: ${f.auto}, bf16 ${f.bf16 ? 'runs' : 'refused'}, ${f.sevenBit ? '7-bit' : '8-bit'} int8 activations`, () => {
    const d = describeCpu(f.report);
    assert.equal(autoPrecision(d).precision, f.auto);
    assert.equal(bf16Available(d), f.bf16);
    assert.equal(int8SevenBitActivations(d), f.sevenBit);
    if (f.bf16) assert.doesNotThrow(() => assertPrecisionSupported('bfloat16', d));
    else assert.throws(() => assertPrecisionSupported('bfloat16', d), /^Error: bfloat16 needs a CPU with AVX-512/);
    for (const p of ['float32', 'int8'] as const) assert.doesNotThrow(() => assertPrecisionSupported(p, d));
  });
}

test('a cap names what it leaves unused, in the reason and the refusal', () => {
  const capped = describeCpu(families.find((f) => f.name.includes('=AVX2'))!.report);
  assert.equal(capped.hardware.avx512, true);
  assert.equal(capped.avx512, false);
  assert.deepEqual(unusedFeatures(capped), ['avx512_bf16', 'AVX-512', 'VNNI']);
  assert.match(autoPrecision(capped).reason, /oneDNN's ISA avx2 \(ONEDNN_MAX_CPU_ISA=AVX2\)/);
  assert.throws(() => assertPrecisionSupported('bfloat16', capped), /ONEDNN_MAX_CPU_ISA=AVX2 holds oneDNN at avx2 on this one/);
  const avx2Only = describeCpu(families.find((f) => f.name.startsWith('AVX2 only'))!.report);
  assert.deepEqual(unusedFeatures(avx2Only), []);
  assert.throws(() => assertPrecisionSupported('bfloat16', avx2Only), /this CPU has AVX2 at most/);
});

test('an ISA the table does not name falls back on the flags; no flags, on the ISA alone', () => {
  const newer = describeCpu(cpu('GenuineIntel', `${BASE} ${AVX512} avx512_vnni avx512_bf16 amx_bf16 amx_tile avx512_fp16`, 'other'));
  assert.deepEqual([newer.amx, newer.avx512Bf16, newer.vnni], [true, true, true]);
  assert.equal(autoPrecision(newer).precision, 'bfloat16');
  const noFlags = describeCpu({ vendor: 'unknown', model: 'test', flags: [], isa: 'avx512_core_vnni' });
  assert.deepEqual([noFlags.avx512, noFlags.vnni, noFlags.avx512Bf16, noFlags.hardware.avx512], [true, true, false, true]);
});

// ---- this CPU ----

const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const flagSets = [...cpuinfo.matchAll(/^flags\s*:\s*(.*)$/gm)].map((m) => new Set(m[1].trim().split(/\s+/)));
const has = (flag: string) => flagSets.length > 0 && flagSets.every((s) => s.has(flag));
const x86 = requires(has('avx2'), '/proc/cpuinfo with the flags of an x86 CPU with AVX2');

/** oneDNN 2.x's ISAs, lowest first, and the flags each needs. */
const ISAS: [string, string[]][] = [
  ['avx2', ['avx2']],
  ['avx2_vnni', ['avx2', 'avx_vnni']],
  ['avx512_core', ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq']],
  ['avx512_core_vnni', ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_vnni']],
  ['avx512_core_bf16', ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_vnni', 'avx512_bf16']],
  ['avx512_core_amx', ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8', 'amx_bf16']],
];
/** The ISA oneDNN should run under `cap` (null: none): the highest this CPU's flags allow, up to the cap. */
function expectedIsa(cap: string | null): string {
  const upTo = cap === null ? ISAS.length : ISAS.findIndex(([name]) => name === cap.toLowerCase()) + 1;
  return ISAS.slice(0, upTo).filter(([, flags]) => flags.every(has)).at(-1)?.[0] ?? 'sse41';
}

const tsx = ['--import', 'tsx'];
const childEnv = (extra: Record<string, string | undefined>) => {
  const env: NodeJS.ProcessEnv = { ...process.env, FCN_THREADS: undefined, FCN_PRECISION: undefined, ...extra };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
};

test('cpuFeatures() is oneDNN\'s ISA on this CPU, and the cap in force', { skip: x86 }, () => {
  const c = cpuFeatures();
  const cap = process.env.ONEDNN_MAX_CPU_ISA || process.env.DNNL_MAX_CPU_ISA || null;
  assert.equal(c.isa, native.info().isa);
  assert.equal(c.isaCap, cap);
  assert.equal(c.isa, expectedIsa(cap), `oneDNN runs ${c.isa}; this CPU's flags and the cap ${cap} say ${expectedIsa(cap)}`);
  assert.deepEqual(c.hardware, { avx2: has('avx2'), avx512: has('avx512f'), avx512Bf16: has('avx512_bf16'), amx: has('amx_bf16') && has('amx_tile'), vnni: has('avx512_vnni') || has('avx_vnni') });
  // Without a cap, oneDNN runs everything the processor has that the rules look at.
  if (!cap) for (const k of ['avx2', 'avx512', 'avx512Bf16', 'amx', 'vnni'] as const) assert.equal(c[k], c.hardware[k], k);
});

test('under every ISA cap, the description says what oneDNN\'s kernels do: bf16, Winograd, exact int8 sums', { skip: x86 }, () => {
  // One cap per ISA this CPU can run (a cap above the CPU runs what no cap runs).
  const caps = [null, 'AVX2', 'AVX2_VNNI', 'AVX512_CORE', 'AVX512_CORE_VNNI', 'AVX512_CORE_BF16', 'AVX512_CORE_AMX'];
  for (const cap of caps.filter((c, i) => caps.findIndex((d) => expectedIsa(d) === expectedIsa(c)) === i)) {
    const out = execFileSync(process.execPath, [...tsx, path.join(here, 'kernel-probe.ts')], { env: childEnv({ ONEDNN_MAX_CPU_ISA: cap ?? undefined, DNNL_MAX_CPU_ISA: undefined }), encoding: 'utf8' });
    const r = JSON.parse(out) as KernelReport;
    const what = `under ${cap ?? 'no cap'} (ISA ${r.cpu.isa})`;
    assert.equal(r.cpu.isa, expectedIsa(cap), what);
    assert.equal(r.bf16Runs, bf16Available(r.cpu), `${what}: bf16 ${r.bf16Runs ? 'runs' : 'refused'}`);
    assert.equal(r.winogradRuns, r.cpu.avx512, `${what}: Winograd ${r.winogradRuns ? 'runs' : 'refused'} (oneDNN 2.x has it for AVX-512)`);
    assert.equal(r.inexact7, 0, `${what}: 7-bit inputs give exact sums on every kernel`);
    if (int8SevenBitActivations(r.cpu)) assert.ok(r.inexact8 > 0, `${what}: 7-bit mode, yet full-range sums are exact (VNNI kernels?)`);
    else assert.equal(r.inexact8, 0, `${what}: 8-bit mode, yet ${r.inexact8} full-range sums are inexact`);
  }
});

// ---- FCN_THREADS and FCN_PRECISION ----

interface Configured {
  threads: number;
  precision: string;
  precisionSource: string;
  nativeThreads: number;
}
type Outcome = Configured | { error: string };

interface Scenario {
  env: { FCN_THREADS?: string; FCN_PRECISION?: string };
  steps: object[];
}

/**
 * Each scenario in a fresh copy of the config module (its own global configuration), with its
 * FCN_THREADS and FCN_PRECISION, in one child process (so none leaks into this one): the last
 * configureEngine(step)'s configuration, or its error. `cap` is the child's ONEDNN_MAX_CPU_ISA,
 * which oneDNN reads once per process.
 */
function configureIn(scenarios: Scenario[], cap?: string): Outcome[] {
  const config = pathToFileURL(path.join(repo, 'src/engine/config.ts')).href;
  const binding = pathToFileURL(path.join(repo, 'src/engine/binding.ts')).href;
  const code = `import { native } from ${JSON.stringify(binding)};
const out = [];
for (const [i, { env, steps }] of JSON.parse(process.argv[1]).entries()) {
  for (const k of ['FCN_THREADS', 'FCN_PRECISION']) if (env[k] === undefined) delete process.env[k]; else process.env[k] = env[k];
  const { configureEngine } = await import(${JSON.stringify(config)} + '?' + i);
  try {
    let c; for (const s of steps) c = configureEngine(s);
    out.push({ ...c, nativeThreads: native.info().threads });
  } catch (e) { out.push({ error: e.message }); }
}
console.log(JSON.stringify(out));`;
  const env = cap ? { ONEDNN_MAX_CPU_ISA: cap, DNNL_MAX_CPU_ISA: undefined } : {};
  const out = execFileSync(process.execPath, [...tsx, '--input-type=module', '-e', code, JSON.stringify(scenarios)], { env: childEnv(env), encoding: 'utf8' });
  return JSON.parse(out);
}

function configured(r: Outcome): Configured {
  assert.ok(!('error' in r), `configureEngine failed: ${'error' in r ? r.error : ''}`);
  return r;
}

/** Runs `scenarios` and hands each outcome to its check. */
function checkScenarios(cases: [Scenario, (r: Outcome) => void][], cap?: string): void {
  const outcomes = configureIn(cases.map(([s]) => s), cap);
  cases.forEach(([, check], i) => check(outcomes[i]));
}

const s = (env: Scenario['env'], ...steps: object[]): Scenario => ({ env, steps: steps.length ? steps : [{}] });

test('FCN_THREADS: the default thread count, under the option; anything but a positive integer is refused', () => {
  const cores = os.availableParallelism();
  const threads = (want: number, what: string) => (r: Outcome) => {
    assert.equal(configured(r).threads, want, what);
    assert.equal(configured(r).nativeThreads, want, `${what}: oneDNN's threads`);
  };
  const error = (message: string | RegExp) => (r: Outcome) => assert.ok('error' in r && (typeof message === 'string' ? r.error === message : message.test(r.error)), `${JSON.stringify(r)}: expected ${message}`);
  checkScenarios([
    [s({}), threads(cores, 'no FCN_THREADS: every core')],
    [s({ FCN_THREADS: '' }), threads(cores, 'FCN_THREADS empty: every core')],
    [s({ FCN_THREADS: '1' }), threads(1, 'FCN_THREADS=1')],
    [s({ FCN_THREADS: '3' }), threads(3, 'FCN_THREADS=3')],
    [s({ FCN_THREADS: '3' }, { threads: 1 }), threads(1, 'the option wins over FCN_THREADS')],
    ...['0', '-2', '1.5', 'two', ' 2', '0x10', '1e1', '02'].map((bad): [Scenario, (r: Outcome) => void] => [s({ FCN_THREADS: bad }), error(`FCN_THREADS must be a positive integer, got '${bad}'`)]),
    [s({}, { threads: 0 }), error('threads must be a positive integer, got 0')],
    [s({ FCN_THREADS: '100000' }), error(/^setThreads: count must be an integer ≤ 1024/)],
  ]);
});

test('FCN_PRECISION: under the option, over auto; a configured precision stays; bad values are refused', () => {
  const auto = autoPrecision().precision;
  const is = (want: string) => (r: Outcome) => assert.equal(`${configured(r).precision} ${configured(r).precisionSource}`, want);
  const error = (message: string | RegExp) => (r: Outcome) => assert.ok('error' in r && (typeof message === 'string' ? r.error === message : message.test(r.error)), `${JSON.stringify(r)}: expected ${message}`);
  checkScenarios([
    [s({}), is(`${auto} auto`)],
    [s({ FCN_PRECISION: '' }), is(`${auto} auto`)],
    [s({ FCN_PRECISION: 'auto' }), is(`${auto} auto`)],
    [s({ FCN_PRECISION: 'float32' }), is('float32 env')],
    [s({ FCN_PRECISION: 'int8' }), is('int8 env')],
    [s({ FCN_PRECISION: 'bfloat16' }), bf16Available() ? is('bfloat16 env') : error(/^bfloat16 needs a CPU with AVX-512/)],
    // The option decides (FCN_PRECISION is not read then), 'auto' included.
    [s({ FCN_PRECISION: 'int8' }, { precision: 'float32' }), is('float32 option')],
    [s({ FCN_PRECISION: 'float32' }, { precision: 'auto' }), is(`${auto} auto`)],
    [s({ FCN_PRECISION: 'fp16' }, { precision: 'int8' }), is('int8 option')],
    // Once configured, a later configureEngine without a precision keeps it (not FCN_PRECISION's).
    [s({ FCN_PRECISION: 'int8' }, { precision: 'float32' }, { threads: 1 }), is('float32 option')],
    ...['fp16', 'FLOAT32', 'bf16'].map((bad): [Scenario, (r: Outcome) => void] => [s({ FCN_PRECISION: bad }), error(`FCN_PRECISION must be float32, bfloat16, int8 or auto, got '${bad}'`)]),
    [s({}, { precision: 'half' }), error("precision must be float32, bfloat16, int8 or auto, got 'half'")],
  ]);
});

test('under ONEDNN_MAX_CPU_ISA=AVX2, auto is float32 and FCN_PRECISION=bfloat16 is refused naming the cap', { skip: x86 }, () => {
  const where = has('avx512f') ? 'ONEDNN_MAX_CPU_ISA=AVX2 holds oneDNN at avx2 on this one' : 'this CPU has AVX2 at most';
  checkScenarios([
    [s({}), (r) => assert.equal(`${configured(r).precision} ${configured(r).precisionSource}`, 'float32 auto')],
    [s({ FCN_PRECISION: 'bfloat16' }), (r) => assert.deepEqual(r, { error: `bfloat16 needs a CPU with AVX-512 (oneDNN runs no bf16 primitive without it); ${where}: use float32 (--precision float32 or auto)` })],
  ], 'AVX2');
});
