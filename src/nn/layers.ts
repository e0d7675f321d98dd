// Layers with explicit forward/backward pairs. A training forward keeps what its backward
// needs (references only: the model's Tape owns activations); backward returns the input
// gradient (or null when not needed) and sets its parameters' gradients when trainable.
import { native, type Tensor, type Precision, type WeightGradAlgorithm, type InputGradAlgorithm, type ConvOptions } from '../engine/binding.js';
import type { InferencePrecision } from '../engine/config.js';
import { Tape, disposeAll } from '../engine/tape.js';
import { chooseKernel } from '../engine/kernel-choice.js';
import { activationLevels, dequantized, quantizedSigned, quantizedUnsigned, runtimeScale, scaleOf, withScale } from './activation-scales.js';
import { Param, PreparedWeights } from './param.js';

/** How an inference forward convolution runs (binding.ts ConvOptions['algorithm']). */
type ForwardAlgorithm = NonNullable<ConvOptions['algorithm']>;

export interface ForwardContext {
  training: boolean;
  /** int8 only in inference, and only for layers that have a ConvQuant. */
  precision: InferencePrecision;
  /** Owns the activations of a training forward pass; null for inference. */
  tape: Tape | null;
  /** Seeds this pass's dropout masks. */
  seed: number;
  /** The index of this pass's first image in the whole batch (masks are drawn per image). */
  firstImage?: number;
  /** Inference: this layer's output is the logits, wanted plain float32 whatever the precision. */
  logits?: boolean;
}

export interface ConvSpec {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride?: number;
  /** Padding on every side; defaults to Keras 'same' for the kernel and stride. */
  padding?: number;
  relu?: boolean;
  bias?: boolean;
  transposed?: boolean;
  /** Leave the parameters unfilled: the layer is built only to be loaded (every value replaced). */
  uninitialized?: boolean;
}

/**
 * A convolution's int8 form, made by `fcn quantize` (src/quant/quantize.ts). Real values are
 * scale · q throughout: the kernel per output channel, activations per tensor.
 */
export interface ConvQuant {
  /**
   * int8 plain O,I,KH,KW; null for a layer that computes in float32 and only quantizes its
   * output (block1_conv1 of the int8 files written before it had an int8 form).
   */
  kernel: Tensor | null;
  /** Real kernel[o] = kernelScales[o] · q (null with a float kernel). */
  kernelScales: Float32Array | null;
  /**
   * Real input = inputScale · q: the producing layer's outputScale (uint8, 255 levels), or
   * with signedInput the image's own scale (int8, the calibrated largest magnitude at 127).
   */
  inputScale: number;
  /** The layer reads the preprocessed image (signed): its input is quantized to int8. */
  signedInput?: boolean;
  /** uint8 output with this scale (ReLU layers); null: float32 output (the score layers). */
  outputScale: number | null;
}

/** Convolution (or transposed convolution) with optional bias and fused ReLU. */
export class Conv2d {
  readonly kernel: Param;
  readonly bias: Param | null;
  readonly stride: number;
  readonly padding: number;
  readonly relu: boolean;
  readonly transposed: boolean;
  private readonly forwardWeights: PreparedWeights;
  private readonly backwardWeights: PreparedWeights;
  private savedX: Tensor | null = null;
  private savedY: Tensor | null = null;
  private savedPrecision: Precision = 'float32';
  /** The int8 form, when the model was quantized (inference with precision 'int8'). */
  quant: ConvQuant | null = null;
  /** The int8 kernel in the primitive's layout, and the output scales and bias by input factor. */
  private int8Weights: Tensor | null = null;
  private int8Terms: { factor: number; biasVersion: number; scales: Float32Array; bias: Tensor | null } | null = null;

  constructor(readonly name: string, readonly spec: ConvSpec) {
    this.stride = spec.stride ?? 1;
    this.transposed = spec.transposed ?? false;
    // Keras 'same': (k−1)/2 for odd stride-1 convolutions; (k−s)/2 for transposed ones.
    this.padding = spec.padding ?? (this.transposed ? (spec.kernel - this.stride) / 2 : (spec.kernel - 1) / 2);
    if (!Number.isInteger(this.padding)) throw new Error(`${name}: kernel ${spec.kernel} with stride ${this.stride} has no symmetric 'same' padding`);
    this.relu = spec.relu ?? false;
    const k = spec.kernel;
    this.kernel = new Param(`${name}.kernel`, native.zeros([spec.outChannels, spec.inChannels, k, k], 'float32', spec.uninitialized ?? false), 'kernel', this.transposed);
    const hasBias = spec.bias ?? !this.transposed;
    this.bias = hasBias ? new Param(`${name}.bias`, native.zeros([spec.outChannels], 'float32', spec.uninitialized ?? false), 'bias', this.transposed) : null;
    this.forwardWeights = new PreparedWeights(this.kernel);
    this.backwardWeights = new PreparedWeights(this.kernel);
  }

  params(): Param[] {
    return this.bias ? [this.kernel, this.bias] : [this.kernel];
  }

  get trainable(): boolean {
    return this.kernel.trainable;
  }
  set trainable(on: boolean) {
    for (const p of this.params()) p.trainable = on;
  }

  /** With `logits`, the phase convolution writes bfloat16 logits as float32 in its depth to space (no crop to widen them). */
  private options(precision: Precision, algorithm?: ForwardAlgorithm, logits = false) {
    const p = this.padding;
    const output = logits && algorithm === 'subpixel' && precision === 'bfloat16' ? { output: 'float32' as const } : {};
    return { stride: [this.stride, this.stride] as [number, number], padding: [p, p, p, p] as [number, number, number, number], transposed: this.transposed, dtype: precision, ...output };
  }

  /**
   * y = conv(inputFactor · x). The factor (Caffe's at-once skip scaling) is only for
   * inference: training records the scaling as a step of its own.
   */
  forward(x: Tensor, ctx: ForwardContext, inputFactor = 1): Tensor {
    if (ctx.precision === 'int8') {
      if (ctx.training) throw new Error(`${this.name}: int8 is for inference only`);
      if (this.quant) return this.forwardInt8(x, this.quant, inputFactor);
      // A layer left in float32 (the upsamplings): real values in, float32 out.
      const xf = dequantized(x);
      try {
        return this.forward(xf, { ...ctx, precision: 'float32' }, inputFactor);
      } finally {
        if (xf !== x) xf.dispose();
      }
    }
    if (inputFactor !== 1) {
      if (ctx.training) throw new Error(`${this.name}: an input factor is for inference only`);
      const scaled = native.scale(x, inputFactor);
      try {
        return this.forward(scaled, ctx);
      } finally {
        scaled.dispose();
      }
    }
    const precision = ctx.precision;
    // The packed copy lives as long as the weights it copies: an optimiser's update rewrites
    // it in place along with them (see Param.packedCopies), so training packs no weights.
    const algorithm = this.forwardAlgorithm(x, ctx);
    // The master as stored: a validation between training steps reads it in its gradient's
    // layout rather than moving it (see Param).
    const { y, weightsCache } = native.convForward(x, this.kernel.master, this.bias?.value ?? null, {
      ...this.options(precision, algorithm, ctx.logits),
      relu: this.relu,
      algorithm,
      weightsCache: this.forwardWeights.get(),
    });
    this.forwardWeights.update(weightsCache, false, algorithm === 'direct');
    if (ctx.training) {
      this.savedX = x;
      this.savedY = y;
      this.savedPrecision = precision;
    }
    return y;
  }

  /**
   * What a measured kernel choice is kept under: pass, precision, the layer's geometry and
   * the batch's pixel count rounded to a power of two (`fwd f32 64→64 k3 s1 p1 px2^18 t2`), so
   * that images of every size (an evaluation, a server) share a few measurements.
   */
  private kernelKey(pass: string, x: Tensor, precision: Precision): string {
    const [n, c, h, w] = x.dims as [number, number, number, number];
    const px = Math.round(Math.log2(n * h * w));
    const t = this.transposed ? ' T' : '';
    return `${pass} ${precision === 'float32' ? 'f32' : 'bf16'}${t} ${c}→${this.spec.outChannels} k${this.spec.kernel} s${this.stride} p${this.padding} px2^${px} t${native.info().threads}`;
  }

  /**
   * For float32 inference, stride 1: Winograd's algorithm where it is allowed and measured
   * faster — oneDNN's (3×3) or the addon's own ('winograd-gemm': 3×3 and 7×7); for an
   * upsampling in inference, the phase convolution ('subpixel') when faster.
   */
  private forwardAlgorithm(x: Tensor, ctx: ForwardContext): ForwardAlgorithm {
    const p = ctx.precision, k = this.spec.kernel;
    if (this.transposed && !ctx.training && p !== 'int8' && this.stride > 1 && k - 2 * this.padding === this.stride) return this.fastestForward(x, p, ['subpixel'], ctx.logits);
    if (p !== 'float32' || this.transposed || this.stride !== 1 || (k !== 3 && k !== 7)) return 'direct';
    const winograd: Exclude<ForwardAlgorithm, 'direct'>[] = k === 3 ? ['winograd', 'winograd-gemm'] : ['winograd-gemm'];
    return ctx.training ? this.fastestTrainingForward(x, winograd) : this.fastestForward(x, 'float32', winograd);
  }

  /**
   * The training forward's kernel, as measured. Winograd's transformed weights are a linear
   * function of the kernel the update cannot rewrite in place: a step transforms them anew, so
   * they are timed with that transform; the direct kernel's packed copy the update keeps
   * current, so it is timed with its copy.
   */
  private fastestTrainingForward(x: Tensor, winograd: Exclude<ForwardAlgorithm, 'direct'>[]): ForwardAlgorithm {
    const bias = this.bias?.value ?? null;
    return chooseKernel(this.kernelKey('fwdT', x, 'float32'), ['direct', ...winograd], (name) => {
      const algorithm = name as ForwardAlgorithm, direct = algorithm === 'direct';
      const r = native.convForward(x, this.kernel.master, bias, { ...this.options('float32'), relu: this.relu, algorithm, weightsCache: direct ? this.forwardWeights.get() : null });
      r.y.dispose();
      if (direct) this.forwardWeights.update(r.weightsCache);
      else r.weightsCache?.dispose();
    }) as ForwardAlgorithm;
  }

  /**
   * oneDNN's direct kernel or one of `others`, as measured once for this shape and precision.
   * Each candidate is timed with the packed or transformed weights its first run made, as every
   * later forward runs it (not re-packing them each time), and releases them before the next.
   */
  private fastestForward(x: Tensor, precision: Precision, others: Exclude<ForwardAlgorithm, 'direct'>[], logits = false): ForwardAlgorithm {
    const bias = this.bias?.value ?? null;
    const floatOut = logits && precision === 'bfloat16';
    return this.fastestWithWeights(this.kernelKey('fwd', x, precision) + (floatOut ? ' →f32' : ''), ['direct', ...others], (name, weightsCache) => {
      const algorithm = name as ForwardAlgorithm;
      const r = native.convForward(x, this.kernel.master, bias, { ...this.options(precision, algorithm, logits), relu: this.relu, algorithm, weightsCache });
      // Logits the kernel leaves in bfloat16 are widened by the crop that follows: timed with it.
      if (floatOut && r.y.dtype !== 'float32') native.cropPad(r.y, { height: r.y.dims[2]!, width: r.y.dims[3]! }).dispose();
      r.y.dispose();
      return r.weightsCache;
    }) as ForwardAlgorithm;
  }

  /**
   * The fastest of `candidates` for a pass that prepares its own copy of the weights: each is
   * timed with the copy its first run made (`run` returns it), as every later pass runs it.
   */
  private fastestWithWeights(key: string, candidates: string[], run: (name: string, weightsCache: Tensor | null) => Tensor | null): string {
    const prepared = new Map<string, Tensor>();
    const release = (name: string) => {
      disposeAll(prepared.get(name));
      prepared.delete(name);
    };
    const first = (name: string) => {
      const fresh = run(name, prepared.get(name) ?? null);
      if (fresh) {
        release(name);
        prepared.set(name, fresh);
      }
    };
    return chooseKernel(key, candidates, first, release);
  }

  /**
   * The input gradient as a convolution over the flipped weights (oneDNN's direct kernel, or
   * for float32 3×3 oneDNN's or the engine's Winograd), or as a matrix product and col2im, as
   * measured. Winograd's transformed weights are made anew each step (the update cannot
   * rewrite them): timed with that.
   */
  private inputGradAlgorithm(dpre: Tensor, x: Tensor): InputGradAlgorithm {
    const p = this.savedPrecision;
    if ((p !== 'float32' && p !== 'bfloat16') || this.transposed || this.stride !== 1) return 'direct';
    const candidates: InputGradAlgorithm[] = p === 'float32' && this.spec.kernel === 3 ? ['direct', 'matmul', 'winograd', 'winograd-gemm'] : ['direct', 'matmul'];
    return this.fastestWithWeights(this.kernelKey('bwdD', x, p), candidates, (name, weightsCache) => {
      const cold = name.startsWith('winograd');
      const r = native.convBackwardData(dpre, this.kernel.master, x, { ...this.options(p), algorithm: name as InputGradAlgorithm, weightsCache: cold ? null : weightsCache });
      r.dx.dispose();
      if (!cold) return r.weightsCache;
      disposeAll(r.weightsCache);
      return null;
    }) as InputGradAlgorithm;
  }

  /**
   * The im2col + matmul route or oneDNN's kernel for a weight gradient, as measured. The
   * optimiser keeps the master in a blocked gradient's layout, at no cost to the update, unless
   * a pass makes a copy each step it cannot rewrite (Winograd's; see Optimizer `live`): with
   * `plainMaster`, a blocked gradient costs the update a transpose into the master's order, so
   * each route is timed with its gradient's reorder to plain.
   */
  private weightGradAlgorithm(x: Tensor, dpre: Tensor, plainMaster: boolean): WeightGradAlgorithm {
    const p = this.savedPrecision;
    if ((p !== 'float32' && p !== 'bfloat16') || this.transposed || this.stride !== 1) return 'auto';
    const [n, , h, w] = dpre.dims as [number, number, number, number];
    const byDefault = p === 'float32' && n * h * w >= 4096 ? 'matmul' : 'direct';
    const opts = { ...this.options(p), weightsDims: this.kernel.dims, bias: this.bias !== null, gradLayout: 'any' as const };
    return chooseKernel(this.kernelKey('bwdW', x, p), [byDefault, byDefault === 'matmul' ? 'direct' : 'matmul'], (name) => {
      const r = native.convBackwardWeights(x, dpre, { ...opts, algorithm: name as WeightGradAlgorithm });
      if (r.dw.layout !== 'plain' && plainMaster) native.reorder(r.dw).dispose();
      disposeAll(r.dw, r.db);
    }) as WeightGradAlgorithm;
  }

  /**
   * The int8 convolution. With real input sIn·qx and kernel kernelScales[o]·qw, the real
   * output is s[o]·(acc + bias[o]/s[o]) where s[o] = factor·sIn·kernelScales[o] and
   * acc = Σ qx·qw (exact in int32); a uint8 output divides s by its scale sOut. sIn and sOut
   * are the stored activation scales as this CPU runs them (see runtimeScale).
   */
  private forwardInt8(x: Tensor, q: ConvQuant, factor: number): Tensor {
    const sOut = q.outputScale === null ? null : runtimeScale(q.outputScale);
    if (!q.kernel || !q.kernelScales) {
      const xf = dequantized(x);
      let y: Tensor;
      try {
        y = this.forward(xf, { training: false, precision: 'float32', tape: null, seed: 0 }, factor);
      } finally {
        if (xf !== x) xf.dispose();
      }
      if (sOut === null) return y;
      try {
        return quantizedUnsigned(y, sOut);
      } finally {
        y.dispose();
      }
    }
    // The input in the scale this layer was calibrated for: a float input (a stitched tile
    // map, the image) is quantized; a quantized one must already be in that scale. The image
    // is signed and quantized to int8 at 127 levels on every CPU (no 7-bit form: see
    // convForwardInt8 on int8 inputs).
    const sIn = q.signedInput ? q.inputScale : runtimeScale(q.inputScale);
    const dtype = q.signedInput ? 'int8' : 'uint8';
    const quantize = (t: Tensor) => (q.signedInput ? quantizedSigned(t, sIn) : quantizedUnsigned(t, sIn));
    let xq = x;
    const given = scaleOf(x);
    if (x.dtype !== 'uint8' && x.dtype !== 'int8') xq = quantize(x);
    else if (x.dtype !== dtype || given === null || Math.abs(given - sIn) > 1e-6 * sIn) {
      const xf = dequantized(x);
      try {
        xq = quantize(xf);
      } finally {
        xf.dispose();
      }
    }
    try {
      const terms = this.int8TermsFor(q, sIn, sOut, factor);
      const p = this.padding;
      const levels = activationLevels();
      const { y, weightsCache } = native.convForwardInt8(xq, q.kernel, terms.bias, {
        stride: [this.stride, this.stride],
        padding: [p, p, p, p],
        relu: this.relu,
        // uint8 outputs stay within the levels this CPU sums exactly.
        ...(sOut !== null && this.relu && levels < 255 ? { clip: levels } : {}),
        scales: terms.scales,
        output: sOut === null ? 'float32' : 'uint8',
        weightsCache: this.int8Weights,
      });
      if (weightsCache) {
        disposeAll(this.int8Weights);
        this.int8Weights = weightsCache;
      }
      return sOut === null ? y : withScale(y, sOut);
    } finally {
      if (xq !== x) xq.dispose();
    }
  }

  private int8TermsFor(q: ConvQuant, sIn: number, sOut: number | null, factor: number): { scales: Float32Array; bias: Tensor | null } {
    const biasVersion = this.bias?.version ?? 0;
    const cached = this.int8Terms;
    if (cached && cached.factor === factor && cached.biasVersion === biasVersion) return cached;
    const O = this.spec.outChannels;
    const acc = Float64Array.from(q.kernelScales!, (s) => factor * sIn * s);
    const scales = Float32Array.from(acc, (a) => (sOut === null ? a : a / sOut));
    let bias: Tensor | null = null;
    if (this.bias) {
      const b = this.bias.value.toArray() as Float32Array;
      bias = native.fromArray([O], Float32Array.from(b, (v, o) => v / acc[o]!));
    }
    disposeAll(cached?.bias ?? null);
    this.int8Terms = { factor, biasVersion, scales, bias };
    return this.int8Terms;
  }

  /** The output a training forward kept for the backward pass (null otherwise): for inspection. */
  get savedOutput(): Tensor | null {
    return this.savedY;
  }

  /** Returns dL/dx when `inputGrad`, else null; sets the parameters' gradients when trainable. */
  backward(dy: Tensor, inputGrad: boolean): Tensor | null {
    const x = this.savedX, y = this.savedY;
    if (!x || !y || x.disposed) throw new Error(`${this.name}: backward without a training forward`);
    const opts = this.options(this.savedPrecision);
    const dpre = this.relu ? native.reluBackward(dy, y) : dy;
    try {
      const algorithm = inputGrad ? this.inputGradAlgorithm(dpre, x) : null;
      if (this.trainable) {
        // The gradient stays in the layout its kernel left it in: the optimiser reads any.
        const plainMaster = !this.kernel.copiesRewritable || !!algorithm?.startsWith('winograd');
        const wg = this.weightGradAlgorithm(x, dpre, plainMaster);
        const { dw, db } = native.convBackwardWeights(x, dpre, { ...opts, weightsDims: this.kernel.dims, bias: this.bias !== null, gradLayout: 'any', algorithm: wg });
        this.kernel.setGrad(dw);
        if (this.bias) this.bias.setGrad(db);
      }
      if (!algorithm) return null;
      const { dx, weightsCache, weightsFlipped } = native.convBackwardData(dpre, this.kernel.master, x, { ...opts, weightsCache: this.backwardWeights.get(), algorithm });
      this.backwardWeights.update(weightsCache, weightsFlipped, !algorithm.startsWith('winograd'));
      return dx;
    } finally {
      if (dpre !== dy) dpre.dispose();
      this.savedX = this.savedY = null;
    }
  }

  /** Frees prepared weight copies (the parameters stay). */
  clearCaches(): void {
    this.forwardWeights.clear();
    this.backwardWeights.clear();
    this.clearInt8();
  }

  private clearInt8(): void {
    disposeAll(this.int8Weights, this.int8Terms?.bias ?? null);
    this.int8Weights = null;
    this.int8Terms = null;
  }

  /** Sets (or with null drops) the int8 form; frees what the previous one held. */
  setQuant(q: ConvQuant | null): void {
    this.clearInt8();
    if (this.quant && this.quant.kernel !== q?.kernel) disposeAll(this.quant.kernel);
    this.quant = q;
  }
}

/** k×k max pooling, stride k, floor (Keras 'valid') or ceil (Caffe) rounding. */
export class MaxPool2d {
  private savedX: Tensor | null = null;
  private savedWorkspace: Tensor | null = null;
  constructor(readonly name: string, readonly kernel = 2, readonly ceil = false) {}

  forward(x: Tensor, ctx: ForwardContext): Tensor {
    const { y, workspace } = native.maxPoolForward(x, { kernel: this.kernel, ceil: this.ceil, training: ctx.training });
    // The maximum of quantized values is the quantized maximum: the scale carries over.
    const scale = scaleOf(x);
    if (scale !== null) withScale(y, scale);
    if (ctx.training) {
      this.savedX = x;
      this.savedWorkspace = ctx.tape!.keep(workspace);
    }
    return y;
  }

  backward(dy: Tensor): Tensor {
    if (!this.savedX || !this.savedWorkspace) throw new Error(`${this.name}: backward without a training forward`);
    const dx = native.maxPoolBackward(dy, this.savedWorkspace, this.savedX, { kernel: this.kernel, ceil: this.ceil });
    this.savedX = this.savedWorkspace = null;
    return dx;
  }
}

/** Inverted dropout: active only in training; identity otherwise. */
export class Dropout {
  private savedMask: Tensor | null = null;
  constructor(readonly name: string, public rate: number, private readonly index: number) {}

  /** Returns a new tensor in training (rate > 0), else null: the caller keeps using x. */
  forward(x: Tensor, ctx: ForwardContext): Tensor | null {
    if (!ctx.training || this.rate === 0) return null;
    const { y, mask } = native.dropoutForward(x, { rate: this.rate, seed: ctx.seed * 16 + this.index, firstImage: ctx.firstImage ?? 0 });
    this.savedMask = ctx.tape!.keep(mask);
    return y;
  }

  /** Returns a new gradient when the forward pass dropped, else null (dy passes through). */
  backward(dy: Tensor): Tensor | null {
    if (!this.savedMask) return null;
    const dx = native.dropoutBackward(dy, this.savedMask, { rate: this.rate });
    this.savedMask = null;
    return dx;
  }
}
