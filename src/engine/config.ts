// The one place that chooses threads and precision.
//
// Precision 'auto' (the default) picks bfloat16 where this engine measured it faster than
// float32 and float32 elsewhere:
//   - AMX (amx_bf16): bf16 convolutions run ~10× faster than fp32 (oneDNN's
//     avx512_core_amx kernels);
//   - AMD Zen 4 and later with avx512_bf16: vdpbf16ps runs at the full FMA rate, and full
//     FCN-8s at 512² measured ~1.7–2× faster in bf16 than fp32 for inference and training
//     (BENCHMARKS.md);
//   - Intel with avx512_bf16 but no AMX (Cooper Lake): bf16 was measured slower than fp32
//     (225 vs 400 GFLOP/s on one 3×3 conv), so float32;
//   - everything else: float32 (no native bf16 arithmetic).
// The rules read the features of oneDNN's effective ISA (cpuFeatures), which
// ONEDNN_MAX_CPU_ISA can hold below the processor's.
// `--precision float32|bfloat16` (configureEngine({precision})) or FCN_PRECISION override it.
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { native, type Precision } from './binding.js';

/**
 * What inference can run in: the training precisions, or int8 — quantized convolutions
 * (oneDNN's u8×s8 kernels) for a model made by `fcn quantize`. int8 is always the user's
 * explicit choice: 'auto' never picks it.
 */
export type InferencePrecision = Precision | 'int8';
export type PrecisionChoice = InferencePrecision | 'auto';

export interface EngineConfig {
  threads: number;
  /** The precision in force (never 'auto': that is resolved when configuring). */
  precision: InferencePrecision;
  /** Where the precision came from: an explicit option, FCN_PRECISION, or the 'auto' rule. */
  precisionSource: 'option' | 'env' | 'auto';
  /** Why 'auto' chose what it chose (or would have). */
  precisionReason: string;
}

/** What decides precision and the int8 mode. */
export interface IsaFeatures {
  avx2: boolean;
  avx512: boolean;
  avx512Bf16: boolean;
  amx: boolean;
  /** u8×s8 dot products that accumulate exactly (avx512_vnni or avx_vnni). */
  vnni: boolean;
}

/**
 * The CPU as oneDNN runs it. The feature fields are those of oneDNN's effective ISA, which
 * ONEDNN_MAX_CPU_ISA can hold below the processor's own: under ONEDNN_MAX_CPU_ISA=AVX2 an
 * AVX-512 CPU runs the AVX2 kernels, where bf16 is refused and int8 sums saturate, so every
 * rule must follow the ISA, not the processor. `hardware` is what the processor itself has.
 */
export interface CpuFeatures extends IsaFeatures {
  vendor: string;
  model: string;
  /** oneDNN's effective ISA (native.info().isa): 'avx2', 'avx512_core_bf16'…; 'other' when the addon has no name for it. */
  isa: string;
  /** The processor's features (its /proc/cpuinfo flags). */
  hardware: IsaFeatures;
  /** ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) when set: the cap oneDNN was started with. */
  isaCap: string | null;
}

const NONE: IsaFeatures = { avx2: false, avx512: false, avx512Bf16: false, amx: false, vnni: false };

/** What each of oneDNN 2.x's effective ISAs runs. */
const ISA_FEATURES: Record<string, IsaFeatures> = {
  sse41: NONE,
  avx: NONE,
  avx2: { ...NONE, avx2: true },
  avx2_vnni: { ...NONE, avx2: true, vnni: true },
  avx512_core: { ...NONE, avx2: true, avx512: true },
  avx512_core_vnni: { ...NONE, avx2: true, avx512: true, vnni: true },
  avx512_core_bf16: { ...NONE, avx2: true, avx512: true, vnni: true, avx512Bf16: true },
  avx512_core_amx: { avx2: true, avx512: true, vnni: true, avx512Bf16: true, amx: true },
};

/** The inputs of describeCpu: what /proc/cpuinfo and oneDNN say. */
export interface CpuReport {
  vendor: string;
  model: string;
  /** /proc/cpuinfo's flags (empty where there is none: then the ISA alone speaks). */
  flags: Iterable<string>;
  isa: string;
  isaCap?: string | null;
}

/**
 * The features oneDNN runs: those of its effective ISA where the addon names it, else (an ISA
 * newer than this table, or none) the processor's flags.
 */
export function describeCpu(report: CpuReport): CpuFeatures {
  const flags = new Set(report.flags);
  const known = ISA_FEATURES[report.isa];
  const hardware: IsaFeatures = flags.size > 0
    ? {
        avx2: flags.has('avx2'),
        avx512: flags.has('avx512f'),
        avx512Bf16: flags.has('avx512_bf16'),
        amx: flags.has('amx_bf16') && flags.has('amx_tile'),
        vnni: flags.has('avx512_vnni') || flags.has('avx_vnni'),
      }
    : (known ?? NONE);
  return { vendor: report.vendor, model: report.model, isa: report.isa, ...(known ?? hardware), hardware, isaCap: report.isaCap ?? null };
}

let cpuCache: CpuFeatures | null = null;

/** This CPU as oneDNN runs it, from /proc/cpuinfo (Linux) and oneDNN's effective ISA. */
export function cpuFeatures(): CpuFeatures {
  if (cpuCache) return cpuCache;
  let flags: string[] = [];
  let vendor = 'unknown';
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    // A feature counts only if every processor has it.
    const sets = [...text.matchAll(/^flags\s*:\s*(.*)$/gm)].map((m) => new Set(m[1].trim().split(/\s+/)));
    if (sets.length) flags = [...sets[0]].filter((f) => sets.every((s) => s.has(f)));
    vendor = /^vendor_id\s*:\s*(.*)$/m.exec(text)?.[1].trim() ?? vendor;
  } catch {
    // Not Linux: oneDNN's ISA alone says what runs.
  }
  const isaCap = process.env.ONEDNN_MAX_CPU_ISA || process.env.DNNL_MAX_CPU_ISA || null;
  cpuCache = describeCpu({ vendor, model: os.cpus()[0]?.model ?? 'unknown', flags, isa: native.info().isa, isaCap });
  return cpuCache;
}

/** The processor's features that oneDNN's ISA leaves unused (under a cap), by name. */
export function unusedFeatures(cpu: CpuFeatures): string[] {
  const names: [keyof IsaFeatures, string][] = [['amx', 'AMX'], ['avx512Bf16', 'avx512_bf16'], ['avx512', 'AVX-512'], ['vnni', 'VNNI'], ['avx2', 'AVX2']];
  return names.filter(([k]) => cpu.hardware[k] && !cpu[k]).map(([, name]) => name);
}

/** The 'auto' rule (see the top of this file), on the features oneDNN runs. */
export function autoPrecision(cpu: CpuFeatures = cpuFeatures()): { precision: Precision; reason: string } {
  if (cpu.amx) return { precision: 'bfloat16', reason: 'AMX bf16 tiles' };
  if (cpu.avx512Bf16 && cpu.vendor === 'AuthenticAMD') return { precision: 'bfloat16', reason: 'avx512_bf16 on AMD (full-rate bf16 dot products, measured faster than fp32)' };
  if (cpu.avx512Bf16) return { precision: 'float32', reason: 'avx512_bf16 without AMX (measured slower than fp32 on Intel)' };
  if (cpu.hardware.avx512Bf16) return { precision: 'float32', reason: `no native bf16 arithmetic in oneDNN's ISA ${cpu.isa}${cpu.isaCap ? ` (ONEDNN_MAX_CPU_ISA=${cpu.isaCap})` : ''}` };
  return { precision: 'float32', reason: 'no native bf16 arithmetic' };
}

/**
 * Whether oneDNN runs bfloat16 primitives at all: the 2.x line needs AVX-512 (avx512_core,
 * where it emulates bf16 arithmetic when avx512_bf16 is absent); with the AVX2 kernels (an
 * AVX2-only CPU, or ONEDNN_MAX_CPU_ISA=AVX2) every bf16 primitive is refused.
 */
export function bf16Available(cpu: CpuFeatures = cpuFeatures()): boolean {
  return cpu.avx512;
}

/** Throws a clear error when `precision` cannot run on this CPU. */
export function assertPrecisionSupported(precision: InferencePrecision, cpu: CpuFeatures = cpuFeatures()): void {
  if (precision !== 'bfloat16' || bf16Available(cpu)) return;
  const where = cpu.isaCap && cpu.hardware.avx512
    ? `ONEDNN_MAX_CPU_ISA=${cpu.isaCap} holds oneDNN at ${cpu.isa} on this one`
    : 'this CPU has AVX2 at most';
  throw new Error(`bfloat16 needs a CPU with AVX-512 (oneDNN runs no bf16 primitive without it); ${where}: use float32 (--precision float32 or auto)`);
}

/**
 * Whether int8 activations must stay within 7 bits (0…127) here: wherever oneDNN's ISA has no
 * VNNI. Without it, the int8 convolution multiplies with vpmaddubsw, which adds each pair of
 * u8×s8 products in 16 bits and saturates: 255·127 + 255·127 clips to 32767, while 127·127·2
 * fits. That holds for the AVX-512 kernels without VNNI too (measured under
 * ONEDNN_MAX_CPU_ISA=AVX512_CORE: 64 channels of 255·127 summed to 32·32767, not 2072640);
 * with VNNI (avx512_vnni or avx_vnni) the sums are exact. Measured on the demo's model, 7-bit
 * activations with 8-bit kernels lose less than 7-bit kernels.
 */
export function int8SevenBitActivations(cpu: CpuFeatures = cpuFeatures()): boolean {
  return !cpu.vnni;
}

let current: EngineConfig | null = null;

function threadsFromEnv(): number | undefined {
  const raw = process.env.FCN_THREADS;
  if (raw === undefined || raw === '') return undefined;
  // Digits only: Number() would also take ' 2', '0x10' and '1e1'.
  if (!/^[1-9][0-9]*$/.test(raw)) throw new Error(`FCN_THREADS must be a positive integer, got '${raw}'`);
  return Number(raw);
}

function checkPrecision(p: string, where: string): PrecisionChoice {
  if (p === 'float32' || p === 'bfloat16' || p === 'int8' || p === 'auto') return p;
  throw new Error(`${where} must be float32, bfloat16, int8 or auto, got '${p}'`);
}

/** The precision for training: int8 is for inference only. */
export function trainingPrecision(p: InferencePrecision): Precision {
  if (p === 'int8') throw new Error('int8 is for inference (a model made by `fcn quantize`); training runs in float32 or bfloat16');
  return p;
}

export interface EngineOptions {
  threads?: number;
  precision?: PrecisionChoice;
}

/**
 * Sets the engine's thread count (default: FCN_THREADS, else every core) and precision
 * (default: the precision already configured, else FCN_PRECISION, else 'auto').
 */
export function configureEngine(options: EngineOptions = {}): EngineConfig {
  const threads = options.threads ?? threadsFromEnv() ?? os.availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
  native.setThreads(threads);
  const auto = autoPrecision();
  const env = process.env.FCN_PRECISION || undefined;
  // The option, else the precision already in force, else FCN_PRECISION, else 'auto'.
  const [choice, source]: [PrecisionChoice, EngineConfig['precisionSource']] =
    options.precision !== undefined ? [checkPrecision(options.precision, 'precision'), 'option']
    : current ? [current.precision, current.precisionSource]
    : env !== undefined ? [checkPrecision(env, 'FCN_PRECISION'), 'env']
    : ['auto', 'auto'];
  const precision = choice === 'auto' ? auto.precision : choice;
  assertPrecisionSupported(precision);
  current = { threads, precision, precisionSource: choice === 'auto' ? 'auto' : source, precisionReason: auto.reason };
  return current;
}

/** The configuration in force (configuring with defaults on first use). */
export function engineConfig(): EngineConfig {
  return current ?? configureEngine();
}
