// Layers with explicit forward/backward pairs. A training forward keeps what its backward
// needs (references only: the model's Tape owns activations); backward returns the input
// gradient (or null when not needed) and sets its parameters' gradients when trainable.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { Tape, disposeAll } from '../engine/tensor.js';
import { Param } from './param.js';

export interface ForwardContext {
  training: boolean;
  precision: Precision;
  /** Owns the activations of a training forward pass; null for inference. */
  tape: Tape | null;
  /** Seeds this pass's dropout masks. */
  seed: number;
}

/** A weights copy in the layout a primitive wants, valid for one parameter version. */
class PreparedWeights {
  private tensor: Tensor | null = null;
  private version = -1;

  get(param: Param): Tensor | null {
    if (this.version !== param.version) this.clear();
    return this.tensor;
  }
  update(param: Param, fresh: Tensor | null): void {
    if (!fresh) return;
    disposeAll(this.tensor);
    this.tensor = fresh;
    this.version = param.version;
  }
  clear(): void {
    disposeAll(this.tensor);
    this.tensor = null;
    this.version = -1;
  }
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

/** Convolution (or transposed convolution) with optional bias and fused ReLU. */
export class Conv2d {
  readonly kernel: Param;
  readonly bias: Param | null;
  readonly stride: number;
  readonly padding: number;
  readonly relu: boolean;
  readonly transposed: boolean;
  private readonly forwardWeights = new PreparedWeights();
  private readonly backwardWeights = new PreparedWeights();
  private savedX: Tensor | null = null;
  private savedY: Tensor | null = null;
  private savedPrecision: Precision = 'float32';

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

  private options(precision: Precision) {
    const p = this.padding;
    return { stride: [this.stride, this.stride] as [number, number], padding: [p, p, p, p] as [number, number, number, number], transposed: this.transposed, dtype: precision };
  }

  forward(x: Tensor, ctx: ForwardContext): Tensor {
    const { y, weightsCache } = native.convForward(x, this.kernel.value, this.bias?.value ?? null, {
      ...this.options(ctx.precision),
      relu: this.relu,
      weightsCache: this.forwardWeights.get(this.kernel),
    });
    this.forwardWeights.update(this.kernel, weightsCache);
    if (ctx.training) {
      this.savedX = x;
      this.savedY = y;
      this.savedPrecision = ctx.precision;
    }
    return y;
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
      if (this.trainable) {
        const { dw, db } = native.convBackwardWeights(x, dpre, { ...opts, weightsDims: this.kernel.dims, bias: this.bias !== null });
        this.kernel.setGrad(dw);
        if (this.bias) this.bias.setGrad(db);
      }
      if (!inputGrad) return null;
      const { dx, weightsCache } = native.convBackwardData(dpre, this.kernel.value, x, { ...opts, weightsCache: this.backwardWeights.get(this.kernel) });
      this.backwardWeights.update(this.kernel, weightsCache);
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
  }
}

/** k×k max pooling, stride k, floor (Keras 'valid') or ceil (Caffe) rounding. */
export class MaxPool2d {
  private savedX: Tensor | null = null;
  private savedWorkspace: Tensor | null = null;
  constructor(readonly name: string, readonly kernel = 2, readonly ceil = false) {}

  forward(x: Tensor, ctx: ForwardContext): Tensor {
    const { y, workspace } = native.maxPoolForward(x, { kernel: this.kernel, ceil: this.ceil, training: ctx.training });
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
    const { y, mask } = native.dropoutForward(x, { rate: this.rate, seed: ctx.seed * 16 + this.index });
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
