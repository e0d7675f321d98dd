// The attainable peak of this machine with our own engine's ops, per data type: a few large
// convolutions, forward, batch 1, on every configured thread, best of `reps` after warm-up.
//
//   node --import tsx bench/peak.ts [--reps 5] [--threads N]     # prints the rows as JSON
//
// Shapes (the largest of FCN-8s at 512², and its conv7 as a matrix product):
//   3×3 256→256 at 128², 3×3 512→512 at 64², 1×1 4096→4096 at 16² (a 4096×4096×256 matmul).
// FLOPs = 2·N·O·I·KH·KW·OH·OW (a multiply-add is 2), the count bench/flops.ts uses.
// Each timed call is one convForward on an input already in the layout the kernel writes
// (the output of a first call: so no reorder of the input is timed) with the weights prepared
// once (weightsCache), the output freed inside the timing.
//
// fp32: convForward {dtype: 'float32'}; bf16: {dtype: 'bfloat16'} where oneDNN runs bf16 here
// (config.ts's bf16Available: AVX-512), else a row with a note and no value; int8:
// convForwardInt8 (uint8 input, int8 weights, per-output-channel scales, uint8 output).
// winograd_fp32: convForward {algorithm: 'winograd'} once on the 3×3 512→512 shape: its
// GFLOP/s counted with the direct convolution's FLOPs, or the error it gives.
import { pathToFileURL } from 'node:url';
import { benchArgs } from './args.js';
import { native, type Tensor, type ConvOptions, type ConvInt8Options } from '../src/engine/binding.js';
import { bf16Available, configureEngine } from '../src/engine/config.js';

export interface PeakShape {
  /** Input channels, output channels, kernel, feature-map height and width (same padding). */
  i: number;
  o: number;
  k: number;
  h: number;
  w: number;
}

export const PEAK_SHAPES: readonly PeakShape[] = [
  { i: 256, o: 256, k: 3, h: 128, w: 128 },
  { i: 512, o: 512, k: 3, h: 64, w: 64 },
  { i: 4096, o: 4096, k: 1, h: 16, w: 16 },
];

export const shapeName = (s: PeakShape) => `${s.k}×${s.k} conv ${s.i}→${s.o} at ${s.h}×${s.w}, batch 1`;
/** 2·N·O·I·KH·KW·OH·OW (batch 1, same padding: OH×OW = H×W). */
export const shapeFlops = (s: PeakShape) => 2 * s.o * s.i * s.k * s.k * s.h * s.w;

export type PeakDtype = 'fp32' | 'bf16' | 'int8';

export interface PeakResult {
  dtype: PeakDtype;
  /** Best GFLOP/s (GOP/s for int8) over the shapes, or null when this dtype cannot run here. */
  gops: number | null;
  /** The shape that reached it, or why there is no value. */
  note: string;
  /** Each shape's best, where it ran. */
  shapes: { shape: string; gops: number; bestMs: number }[];
}

/** Deterministic values in [-1, 1). */
function uniform(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

function padding(s: PeakShape): [number, number, number, number] {
  const p = (s.k - 1) / 2;
  return [p, p, p, p];
}

/** The best time of `reps` calls of `once` (each returns the tensors to free) after `warmup` calls. */
function bestOf(once: () => Tensor[], warmup: number, reps: number): number {
  for (let i = 0; i < warmup; i++) for (const t of once()) t.dispose();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    for (const t of once()) t.dispose();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/** convForward over one shape in fp32 or bf16: the best milliseconds. */
function floatConvMs(s: PeakShape, dtype: 'float32' | 'bfloat16', warmup: number, reps: number, extra: Record<string, unknown> = {}): number {
  const x0 = native.fromArray([1, s.i, s.h, s.w], uniform(s.i * s.h * s.w, 1));
  const w = native.fromArray([s.o, s.i, s.k, s.k], uniform(s.o * s.i * s.k * s.k, 2).map((v) => v * Math.sqrt(3 / (s.i * s.k * s.k))));
  const b = native.fromArray([s.o], new Float32Array(s.o));
  const opts = { padding: padding(s), relu: true, dtype, ...extra } as ConvOptions;
  const first = native.convForward(x0, w, b, opts);
  x0.dispose();
  // Square shapes: the first output, in the layout the kernel writes, is the timed input.
  let x = first.y, cache = first.weightsCache;
  try {
    if (s.i !== s.o) throw new Error('peak shapes are square (in = out channels)');
    return bestOf(
      () => {
        const r = native.convForward(x, w, b, { ...opts, weightsCache: cache });
        // A fresh copy only when the one given did not fit (null otherwise).
        if (r.weightsCache && r.weightsCache !== cache) {
          cache?.dispose();
          cache = r.weightsCache;
        }
        return [r.y];
      },
      warmup,
      reps,
    );
  } finally {
    x.dispose();
    cache?.dispose();
    w.dispose();
    b.dispose();
  }
}

/** convForwardInt8 over one shape: uint8 input, int8 weights, scales 1e-3 per output channel, uint8 output. */
function int8ConvMs(s: PeakShape, warmup: number, reps: number): number {
  if (s.i !== s.o) throw new Error('peak shapes are square (in = out channels)');
  const xu8 = Uint8Array.from(uniform(s.i * s.h * s.w, 3), (v) => Math.floor((v + 1) * 127.5));
  const wi8 = Int8Array.from(uniform(s.o * s.i * s.k * s.k, 4), (v) => Math.round(v * 127));
  let x = native.fromArray([1, s.i, s.h, s.w], xu8);
  const w = native.fromArray([s.o, s.i, s.k, s.k], wi8);
  const opts: ConvInt8Options = { padding: padding(s), relu: true, scales: new Float32Array(s.o).fill(1e-3), output: 'uint8' };
  let cache: Tensor | null = null;
  const call = () => {
    const r = native.convForwardInt8(x, w, null, { ...opts, weightsCache: cache });
    // A fresh copy only when the one given did not fit (null otherwise).
    if (r.weightsCache && r.weightsCache !== cache) {
      cache?.dispose();
      cache = r.weightsCache;
    }
    return [r.y];
  };
  try {
    // As for fp32: the first uint8 output, in the layout the kernel writes, is the timed input.
    const [y] = call();
    x.dispose();
    x = y!;
    return bestOf(call, warmup, reps);
  } finally {
    x.dispose();
    w.dispose();
    (cache as Tensor | null)?.dispose();
  }
}

function unavailable(dtype: PeakDtype): string | null {
  if (dtype === 'bf16' && !bf16Available())
    return 'absent: oneDNN 2.6 runs no bf16 primitive on this CPU (AVX2 only; bf16 needs AVX-512)';
  return null;
}

/** This machine's attainable peak for one data type (GFLOP/s; GOP/s for int8). */
export function measurePeak(dtype: PeakDtype, options: { reps?: number; warmup?: number } = {}): PeakResult {
  const reps = options.reps ?? 5, warmup = options.warmup ?? 2;
  const why = unavailable(dtype);
  if (why) return { dtype, gops: null, note: why, shapes: [] };
  const shapes: PeakResult['shapes'] = [];
  const errors: string[] = [];
  for (const s of PEAK_SHAPES) {
    try {
      const ms = dtype === 'int8' ? int8ConvMs(s, warmup, reps) : floatConvMs(s, dtype === 'fp32' ? 'float32' : 'bfloat16', warmup, reps);
      shapes.push({ shape: shapeName(s), gops: shapeFlops(s) / ms / 1e6, bestMs: ms });
    } catch (e) {
      errors.push(`${shapeName(s)}: ${(e as Error).message}`);
    }
  }
  if (shapes.length === 0) return { dtype, gops: null, note: `absent: every shape failed (${errors.join('; ')})`, shapes };
  const best = shapes.reduce((a, b) => (b.gops > a.gops ? b : a));
  const others = shapes.filter((x) => x !== best).map((x) => `${x.shape} ${x.gops.toFixed(1)}`);
  const unit = dtype === 'int8' ? 'GOP/s' : 'GFLOP/s';
  const note = `${best.shape} (best of ${reps} after ${warmup} warm-up; others: ${others.join(', ') || 'none'} ${unit}${errors.length ? `; failed: ${errors.join('; ')}` : ''})`;
  return { dtype, gops: best.gops, note, shapes };
}

export interface WinogradResult {
  gflops: number | null;
  note: string;
}

/**
 * convForward with {algorithm: 'winograd'} once on the 3×3 512→512 shape (best of `reps`); on a
 * CPU where oneDNN has no Winograd, the note gives convForward's refusal.
 */
export function measureWinograd(options: { reps?: number } = {}): WinogradResult {
  const s = PEAK_SHAPES.find((x) => x.k === 3 && x.i === 512) ?? PEAK_SHAPES[0];
  try {
    const ms = floatConvMs(s, 'float32', 1, options.reps ?? 3, { algorithm: 'winograd' });
    return { gflops: shapeFlops(s) / ms / 1e6, note: `${shapeName(s)}, fp32, algorithm 'winograd' (GFLOP/s counted as the direct convolution's FLOPs)` };
  } catch (e) {
    return { gflops: null, note: `absent: ${(e as Error).message}` };
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = benchArgs(import.meta.url, { options: { reps: { type: 'string' }, threads: { type: 'string' } } });
  configureEngine({ threads: values.threads ? Number(values.threads) : undefined, precision: 'float32' });
  const reps = Number(values.reps ?? 5);
  for (const d of ['fp32', 'bf16', 'int8'] as const) console.log(JSON.stringify(measurePeak(d, { reps })));
  console.log(JSON.stringify({ winograd_fp32: measureWinograd() }));
}
