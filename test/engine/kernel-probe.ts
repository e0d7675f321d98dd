// What oneDNN's kernels do on this CPU, observed rather than told: whether a bfloat16
// convolution runs, whether int8 sums of full-range inputs are exact, whether Winograd runs.
// Tests compare these with what cpuFeatures() says. Run as a script, it prints cpuFeatures()
// and the observations as JSON, for tests that start it under an ONEDNN_MAX_CPU_ISA cap.
import { pathToFileURL } from 'node:url';
import { native } from '../../src/engine/binding.js';
import { cpuFeatures, type CpuFeatures } from '../../src/engine/config.js';

/** Deterministic integers in [lo, hi] (xorshift32). */
export function randomInts(n: number, seed: number, lo: number, hi: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return lo + (s % (hi - lo + 1));
  });
}

export const X_DIMS = [1, 32, 6, 5], W_DIMS = [8, 32, 3, 3];

/**
 * A 3×3 int8 convolution (pad 1, scale 1, float32 output) of inputs in [0, xMax] with weights
 * in [-128, 127], and its exact integer sums. The inputs hold a pixel of xMax in every channel
 * and the weights an output channel of 127 and one of −128 everywhere, so with xMax 255 pairs
 * of products reach 64770 in magnitude: vpmaddubsw (no VNNI) clips those to 16 bits, VNNI
 * does not. Every sum stays below 2^24, so float32 holds it exactly.
 */
export function int8Sums(xMax: number): { got: Float32Array; want: Float64Array } {
  const [, C, H, W] = X_DIMS, [O, , K] = W_DIMS;
  const x = randomInts(C * H * W, 7, 0, xMax), w = randomInts(O * C * K * K, 8, -128, 127);
  for (let c = 0; c < C; c++) x[(c * H + 1) * W + 1] = xMax;
  for (let k = 0; k < C * K * K; k++) {
    w[k] = 127;
    w[C * K * K + k] = -128;
  }
  const want = new Float64Array(O * H * W);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < H; i++)
      for (let j = 0; j < W; j++) {
        let sum = 0;
        for (let c = 0; c < C; c++)
          for (let ki = 0; ki < K; ki++)
            for (let kj = 0; kj < K; kj++) {
              const ii = i + ki - 1, jj = j + kj - 1;
              if (ii >= 0 && ii < H && jj >= 0 && jj < W) sum += x[(c * H + ii) * W + jj] * w[((o * C + c) * K + ki) * K + kj];
            }
        want[(o * H + i) * W + j] = sum;
      }
  const xt = native.fromArray(X_DIMS, Uint8Array.from(x)), wt = native.fromArray(W_DIMS, Int8Array.from(w));
  const r = native.convForwardInt8(xt, wt, null, { padding: [1, 1, 1, 1], scales: new Float32Array(O).fill(1), output: 'float32' });
  const got = r.y.toArray() as Float32Array;
  for (const t of [xt, wt, r.y, r.weightsCache]) t?.dispose();
  return { got, want };
}

/** How many sums differ from the exact ones. */
export function inexactSums(xMax: number): number {
  const { got, want } = int8Sums(xMax);
  return want.reduce((n, v, i) => n + (got[i] === v ? 0 : 1), 0);
}

/** Runs `op`: true when it runs, false when refused with `refusal`; any other error is thrown. */
function runsOrRefused(op: () => void, refusal: RegExp): boolean {
  try {
    op();
    return true;
  } catch (e) {
    if (e instanceof RangeError && refusal.test(e.message)) return false;
    throw e;
  }
}

function tinyConv(options: Parameters<typeof native.convForward>[3]): void {
  const x = native.fromArray([1, 16, 6, 6], new Float32Array(576).fill(0.5)), w = native.fromArray([16, 16, 3, 3], new Float32Array(2304).fill(0.25));
  try {
    const r = native.convForward(x, w, null, { padding: [1, 1, 1, 1], ...options });
    r.y.dispose();
    r.weightsCache?.dispose();
  } finally {
    x.dispose();
    w.dispose();
  }
}

export const bf16ConvRuns = () => runsOrRefused(() => tinyConv({ dtype: 'bfloat16' }), /bfloat16 needs a CPU with AVX-512/);
export const winogradRuns = () => runsOrRefused(() => tinyConv({ algorithm: 'winograd' }), /^convForward: Winograd convolution is not available on this CPU/);

export interface KernelReport {
  cpu: CpuFeatures;
  bf16Runs: boolean;
  winogradRuns: boolean;
  /** Inexact sums of full-range (8-bit) and of 7-bit inputs. */
  inexact8: number;
  inexact7: number;
}

export function kernelReport(): KernelReport {
  return { cpu: cpuFeatures(), bf16Runs: bf16ConvRuns(), winogradRuns: winogradRuns(), inexact8: inexactSums(255), inexact7: inexactSums(127) };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) console.log(JSON.stringify(kernelReport()));
