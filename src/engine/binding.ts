// The one place that loads the native addon and gives it types. Everything else imports
// the engine from here.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The dtypes tensors hold (native/engine.cc has the same table). */
export const DTYPES = ['float32', 'bfloat16', 'uint8', 'int8', 'int32'] as const;
export type DType = (typeof DTYPES)[number];
/** The typed arrays tensors are made from and read into (bfloat16 as raw Uint16 bits). */
export type TensorArray = Float32Array | Uint16Array | Uint8Array | Int8Array | Int32Array;
/** Compute precision of convolutions. */
export type Precision = 'float32' | 'bfloat16';

/** A tensor in native memory. Free it with dispose(); the GC finaliser is only a safety net. */
export interface Tensor {
  readonly dims: number[];
  readonly dtype: DType;
  /** 'plain' (row-major) or 'blocked:<descriptor>' for a layout a oneDNN primitive chose. */
  readonly layout: string;
  readonly disposed: boolean;
  readonly nbytes: number;
  dispose(): void;
  /** The values as a plain row-major array (bfloat16 as raw Uint16 bits). */
  toArray(): TensorArray;
}

export interface ConvOptions {
  stride?: [number, number];
  /** [top, left, bottom, right] */
  padding?: [number, number, number, number];
  relu?: boolean;
  transposed?: boolean;
  dtype?: Precision;
  /**
   * 'winograd': Winograd's algorithm (float32, not transposed). Where oneDNN has no
   * implementation of it (any CPU without AVX-512) the call throws a RangeError saying
   * "Winograd convolution is not available on this CPU". 'winograd-gemm': the addon's own
   * Winograd (float32, stride 1, 3×3 as F(4×4, 3×3) or 7×7 as F(4×4, 7×7)), its α² products in
   * one batched oneDNN matmul, on any CPU; y channels last, weightsCache the transformed weights.
   * 'subpixel' (transposed, inference, output = stride × input): an ordinary convolution per
   * output phase, then depth to space; y plain, and weightsCache the phase weights (a cache for
   * it). Default 'direct'.
   */
  algorithm?: 'direct' | 'winograd' | 'winograd-gemm' | 'subpixel';
  /** y's data type: dtype's by default; 'float32' from a bfloat16 'subpixel' convolution (else a RangeError). */
  output?: Precision;
  weightsCache?: Tensor | null;
}

/** How convBackwardWeights computes a weight gradient. */
export type WeightGradAlgorithm = 'auto' | 'direct' | 'matmul';
export type InputGradAlgorithm = 'direct' | 'matmul' | 'winograd' | 'winograd-gemm';

/** A blocked copy of a kernel that an update rewrites with it (see adamUpdate). */
export interface PackedWeights {
  tensor: Tensor;
  flipped: boolean;
}

export interface ConvInt8Options {
  stride?: [number, number];
  /** [top, left, bottom, right] */
  padding?: [number, number, number, number];
  relu?: boolean;
  /** One scale per output channel, each finite and > 0. */
  /** With relu: the output is min(max(v, 0), clip) (e.g. 127 for 7-bit uint8 activations). */
  clip?: number;
  scales: Float32Array;
  /** The output's dtype (required). */
  output: 'uint8' | 'float32';
  /** The caller's prepared copy of the weights, as for convForward. */
  weightsCache?: Tensor | null;
}

export interface PoolOptions {
  kernel?: number;
  stride?: number;
  ceil?: boolean;
  /** Keeps a workspace for maxPoolBackward (float32 and bfloat16 only: uint8 pools for inference). */
  training?: boolean;
}

export interface CropPadOptions {
  top?: number;
  left?: number;
  height?: number;
  width?: number;
  value?: number;
}

export interface NativeInfo {
  onednnVersion: string;
  isa: string;
  threads: number;
  cpuRuntime: string;
}

/** The native pool's and primitive cache's contents (this thread's; each worker has its own). */
export interface PoolStats {
  /** Bytes and count of buffers held by tensors and ops. */
  liveBytes: number;
  liveBuffers: number;
  /** Idle buffers kept for reuse (at most the poolBytes limit). */
  pooledBytes: number;
  pooledBuffers: number;
  /** Cached oneDNN primitives (at most the primitives limit). */
  primitives: number;
}

/** Bounds on what the engine keeps for reuse; the least recently used goes first. */
export interface CacheLimits {
  /** Bytes of idle buffers. Unset, the larger of 1 GiB and half the most bytes ever live at once (a training step's own buffers, released and taken back each step). */
  poolBytes: number;
  /** Cached oneDNN primitives (default 256). */
  primitives: number;
}

/**
 * The addon's exports. `Native` below is checked against this list at compile time, and
 * test/engine/exports.test.ts checks the list against the addon itself.
 */
export const NATIVE_EXPORTS = [
  'Tensor',
  'fromArray',
  'writeArray',
  'view',
  'zeros',
  'reorder',
  'permute',
  'poolStats',
  'poolTrim',
  'setCacheLimits',
  'convForward',
  'convBackwardData',
  'convBackwardWeights',
  'convForwardInt8',
  'maxPoolForward',
  'maxPoolBackward',
  'reluForward',
  'reluBackward',
  'add',
  'scale',
  'dropoutForward',
  'dropoutBackward',
  'cropPad',
  'argmax',
  'softmaxCrossEntropy',
  'adamUpdate',
  'adamUpdateAll',
  'sgdUpdate',
  'sumSquares',
  'absMax',
  'setThreads',
  'info',
] as const;
export type NativeExport = (typeof NATIVE_EXPORTS)[number];

/**
 * The typed addon. Every function checks its arguments: a wrong kind or type throws a
 * TypeError, a bad value or size a RangeError, each message starting with the function's name.
 */
export interface Native {
  Tensor: abstract new () => Tensor;
  /** A plain copy of row-major `data` of shape dims; with perm, its axes reordered as permute would (one pass). */
  fromArray(dims: number[], data: TensorArray, perm?: number[]): Tensor;
  /**
   * A zero tensor, plain or in `like`'s layout (its dims must match); `uninitialized` skips the
   * fill for a tensor about to be replaced whole.
   */
  zeros(dims: number[], dtype?: DType, uninitialized?: boolean, like?: Tensor | null): Tensor;
  /** Copies data into a plain tensor in place, from element `offset` on (dtype must match). */
  writeArray(t: Tensor, data: TensorArray, offset?: number): void;
  /**
   * A typed array over a tensor's own memory (no copy): writes through it change the tensor.
   * Elements come in the tensor's layout; a padded blocked layout is refused. The view keeps
   * the tensor alive; t.dispose() detaches it (length 0).
   */
  view(t: Tensor): TensorArray;
  /**
   * t's values in like's layout (or plain; like may be disposed) and the given dtype. With `scale` (finite, nonzero,
   * default 1) the values are t·scale, rounded to nearest even and saturated into integer
   * dtypes: float32 → uint8/int8 quantizes, uint8/int8 → float32 dequantizes.
   */
  reorder(t: Tensor, options?: { dtype?: DType; like?: Tensor | null; scale?: number }): Tensor;
  /** A plain tensor with t's axes reordered (t plain): out dims[k] = t dims[perm[k]]. */
  permute(t: Tensor, perm: number[]): Tensor;
  poolStats(): PoolStats;
  /** Frees every idle buffer (and, with clearPrimitives, every cached primitive). */
  poolTrim(clearPrimitives?: boolean): void;
  /** Sets either bound (lowering one releases what is over it at once); returns those in force. */
  setCacheLimits(limits?: Partial<CacheLimits>): CacheLimits;
  convForward(x: Tensor, w: Tensor, bias: Tensor | null, options: ConvOptions): { y: Tensor; weightsCache: Tensor | null };
  /**
   * Quantized inference convolution. x: uint8 N,C,H,W in any layout (as an earlier
   * convForwardInt8 or maxPoolForward left it), or int8 (a signed input: the first layer's
   * image); w: int8 O,I,KH,KW, plain; bias: float32 [O].
   * With acc[n,o,i,j] = Σ x·w (int32),
   *   y[n,o,i,j] = relu?(scales[o] · (acc + bias[o]))
   * (the bias is in accumulator units: it joins the sum before the scale). 'float32' output is
   * that value; 'uint8' output is it rounded to nearest and saturated to [0, 255]. y is in the
   * layout the primitive chose. weightsCache works as convForward's.
   *
   * The sum is exact when every x ≤ 127 or every |w| ≤ 64. Beyond that, on CPUs without VNNI
   * (AVX2, AVX-512 before Cascade Lake) oneDNN's kernels add pairs of products in 16 bits with
   * saturation (vpmaddubsw), and a pair above 32767 in magnitude is clipped: quantize
   * activations to [0, 127] or weights to [-64, 64] to get the same results on every CPU.
   * An int8 x is exact with VNNI; without it oneDNN halves the weights (rounding their last bit).
   */
  convForwardInt8(x: Tensor, w: Tensor, bias: Tensor | null, options: ConvInt8Options): { y: Tensor; weightsCache: Tensor | null };
  /**
   * weightsFlipped: the weights cache holds the flipped I,O,KH,KW form (the input gradient computed as a convolution).
   * algorithm: 'direct' (a convolution kernel), 'matmul' (a matrix product and col2im: stride-1 only), 'winograd'
   * (oneDNN's Winograd convolution over the flipped weights: float32, stride 1; a RangeError where oneDNN lacks it)
   * or 'winograd-gemm' (the engine's: float32, stride 1, 3×3 or 7×7; dx channels last).
   */
  convBackwardData(dy: Tensor, w: Tensor, x: Tensor, options: Omit<ConvOptions, 'algorithm'> & { bias?: boolean; algorithm?: InputGradAlgorithm }): { dx: Tensor; weightsCache: Tensor | null; weightsFlipped: boolean };
  /**
   * algorithm: 'direct' (oneDNN's backward-weights kernel), 'matmul' (im2col and a matrix
   * product: stride-1 only) or 'auto' (float32: matmul over ≥ 4096 output pixels). gradLayout
   * 'any': dw stays float32 in the layout its computation left it (no reorder to plain).
   */
  convBackwardWeights(
    x: Tensor,
    dy: Tensor,
    options: Omit<ConvOptions, 'algorithm' | 'weightsCache'> & { weightsDims: number[]; bias: boolean; algorithm?: WeightGradAlgorithm; gradLayout?: 'plain' | 'any' },
  ): { dw: Tensor; db: Tensor | null };
  /** Max pooling in x's layout and dtype (float32, bfloat16, or uint8 for inference). */
  maxPoolForward(x: Tensor, options: PoolOptions): { y: Tensor; workspace: Tensor | null };
  maxPoolBackward(dy: Tensor, workspace: Tensor, x: Tensor, options: PoolOptions): Tensor;
  reluForward(x: Tensor): Tensor;
  reluBackward(dy: Tensor, y: Tensor): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  scale(x: Tensor, factor: number): Tensor;
  /** Inverted dropout; masks drawn per image from (seed, firstImage + its index), at logical positions; y and mask plain. */
  dropoutForward(x: Tensor, options: { rate: number; seed: number; firstImage?: number }): { y: Tensor; mask: Tensor };
  dropoutBackward(dy: Tensor, mask: Tensor, options: { rate: number }): Tensor;
  cropPad(x: Tensor, options: CropPadOptions): Tensor;
  argmax(x: Tensor): Tensor;
  /** logits float32 or bfloat16 in any layout; grad = dL/dlogits in the logits' own layout and dtype. */
  softmaxCrossEntropy(logits: Tensor, labels: Tensor, options?: { reduction?: 'mean' | 'sum'; ignore?: number }): { loss: number; valid: number; grad: Tensor };
  /**
   * Adam in place on plain float32 w, m, v; g float32 in any layout (a kernel's gradient as
   * its primitive left it). `packs`: blocked copies of w (float32 or bfloat16, flipped: the
   * I,O,KH,KW input-gradient form) rewritten from the new w in the same pass, as a fresh
   * pack of it would be.
   */
  adamUpdate(w: Tensor, g: Tensor, m: Tensor, v: Tensor, options: { alpha: number; beta1: number; beta2: number; epsilon: number; l2: number }, packs?: PackedWeights[] | null): void;
  /** adamUpdate over many parameters in one call; l2[i] and packs[i] apply to weights[i]. */
  adamUpdateAll(
    weights: Tensor[],
    grads: Tensor[],
    m: Tensor[],
    v: Tensor[],
    l2: number[],
    options: { alpha: number; beta1: number; beta2: number; epsilon: number },
    packs?: (PackedWeights[] | null)[],
  ): void;
  /** SGD in place; g and packs as adamUpdate's. */
  sgdUpdate(w: Tensor, g: Tensor, v: Tensor, options: { lr: number; momentum: number; weightDecay: number }, packs?: PackedWeights[] | null): void;
  sumSquares(t: Tensor): number;
  /** max |v| over a float32 or bfloat16 tensor in any layout (NaN if any value is NaN): for calibration. */
  absMax(t: Tensor): number;
  setThreads(n: number): void;
  info(): NativeInfo;
}

// Native must name exactly the listed exports (a compile error otherwise).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type NativeMatchesExports = Assert<Same<keyof Native, NativeExport>>;

function load(): Native {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // src/engine/ when run from source, dist/engine/ when compiled: the addon is at the root.
  const root = path.resolve(here, '..', '..');
  const file = path.join(root, 'build', 'Release', 'fcn_native.node');
  if (!existsSync(file)) {
    throw new Error(`fcn: native addon not built (${file} is missing): run \`npm run setup\``);
  }
  return createRequire(import.meta.url)(file) as Native;
}

export const native: Native = load();
