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

export interface CpuFeatures {
  vendor: string;
  model: string;
  avx2: boolean;
  avx512: boolean;
  avx512Bf16: boolean;
  amx: boolean;
  /** u8×s8 dot products that accumulate exactly (avx512_vnni or avx_vnni). */
  vnni: boolean;
}

let cpuCache: CpuFeatures | null = null;

/** CPU features that decide precision, from /proc/cpuinfo (Linux) and oneDNN's ISA. */
export function cpuFeatures(): CpuFeatures {
  if (cpuCache) return cpuCache;
  let flags = new Set<string>();
  let vendor = 'unknown';
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const flagLine = /^flags\s*:\s*(.*)$/m.exec(text);
    if (flagLine) flags = new Set(flagLine[1].trim().split(/\s+/));
    vendor = /^vendor_id\s*:\s*(.*)$/m.exec(text)?.[1].trim() ?? vendor;
  } catch {
    // Not Linux: fall back on what oneDNN detected.
  }
  const isa = native.info().isa;
  cpuCache = {
    vendor,
    model: os.cpus()[0]?.model ?? 'unknown',
    avx2: flags.has('avx2') || isa.startsWith('avx'),
    avx512: flags.has('avx512f') || isa.startsWith('avx512'),
    avx512Bf16: flags.has('avx512_bf16') || isa === 'avx512_core_bf16' || isa === 'avx512_core_amx',
    amx: flags.has('amx_bf16') || isa === 'avx512_core_amx',
    vnni: flags.has('avx512_vnni') || flags.has('avx_vnni') || isa.includes('vnni') || isa.includes('amx'),
  };
  return cpuCache;
}

/** The 'auto' rule (see the top of this file). */
export function autoPrecision(cpu: CpuFeatures = cpuFeatures()): { precision: Precision; reason: string } {
  if (cpu.amx) return { precision: 'bfloat16', reason: 'AMX bf16 tiles' };
  if (cpu.avx512Bf16 && cpu.vendor === 'AuthenticAMD') return { precision: 'bfloat16', reason: 'avx512_bf16 on AMD (full-rate bf16 dot products, measured faster than fp32)' };
  if (cpu.avx512Bf16) return { precision: 'float32', reason: 'avx512_bf16 without AMX (measured slower than fp32 on Intel)' };
  return { precision: 'float32', reason: 'no native bf16 arithmetic' };
}

/**
 * Whether oneDNN runs bfloat16 primitives on this CPU at all: the 2.x line needs AVX-512
 * (avx512_core, where it emulates bf16 arithmetic when avx512_bf16 is absent); on an AVX2-only
 * CPU every bf16 convolution, pooling or eltwise primitive is refused.
 */
export function bf16Available(cpu: CpuFeatures = cpuFeatures()): boolean {
  return cpu.avx512;
}

/** Throws a clear error when `precision` cannot run on this CPU. */
export function assertPrecisionSupported(precision: InferencePrecision): void {
  if (precision === 'bfloat16' && !bf16Available())
    throw new Error('bfloat16 needs a CPU with AVX-512 (oneDNN runs no bf16 primitive without it); this CPU has AVX2 at most: use float32 (--precision float32 or auto)');
}

/**
 * Whether int8 activations must stay within 7 bits (0…127) here. Without VNNI, oneDNN's AVX2
 * int8 convolution multiplies with vpmaddubsw, which adds each pair of u8×s8 products in 16
 * bits and saturates: 255·127 + 255·127 clips to 32767, while 127·127·2 fits. (On AVX-512
 * without VNNI oneDNN halves the weights itself; with VNNI the sums are exact.) Measured on
 * the demo's model, 7-bit activations with 8-bit kernels lose less than 7-bit kernels.
 */
export function int8SevenBitActivations(cpu: CpuFeatures = cpuFeatures()): boolean {
  return !cpu.vnni && !cpu.avx512;
}

let current: EngineConfig | null = null;

function threadsFromEnv(): number | undefined {
  const raw = process.env.FCN_THREADS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`FCN_THREADS must be a positive integer, got '${raw}'`);
  return n;
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
  let choice: PrecisionChoice, source: EngineConfig['precisionSource'];
  const env = process.env.FCN_PRECISION;
  if (options.precision !== undefined) {
    choice = checkPrecision(options.precision, 'precision');
    source = choice === 'auto' ? 'auto' : 'option';
  } else if (current) {
    choice = current.precision;
    source = current.precisionSource;
  } else if (env !== undefined && env !== '') {
    choice = checkPrecision(env, 'FCN_PRECISION');
    source = choice === 'auto' ? 'auto' : 'env';
  } else {
    choice = 'auto';
    source = 'auto';
  }
  const precision = choice === 'auto' ? auto.precision : choice;
  assertPrecisionSupported(precision);
  current = { threads, precision, precisionSource: source, precisionReason: auto.reason };
  return current;
}

/** The configuration in force (configuring with defaults on first use). */
export function engineConfig(): EngineConfig {
  return current ?? configureEngine();
}
