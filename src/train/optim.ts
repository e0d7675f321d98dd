// Optimisers over the model's parameters, with state in native memory (fp32) so that a
// checkpoint can save and restore it exactly.
import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import type { Param } from '../nn/param.js';

export interface Optimizer {
  readonly kind: 'adam' | 'sgd';
  /** Learning rate, changeable between steps (schedules, stage changes). */
  lr: number;
  /** Number of updates applied so far. */
  readonly steps: number;
  /** Applies one update to every trainable parameter that has a gradient. */
  step(params: Param[]): void;
  /** The state as named float32 arrays (for checkpoints), plus scalar settings. */
  stateArrays(): Map<string, Tensor>;
  stateScalars(): Record<string, number>;
  /** Restores state saved by stateArrays/stateScalars (tensors are copied). */
  loadState(arrays: Map<string, Tensor>, scalars: Record<string, number>): void;
  dispose(): void;
}

abstract class StatefulOptimizer {
  protected readonly slots = new Map<string, Tensor>();
  steps = 0;
  abstract lr: number;

  /** The slot `<kind>.<param name>`, zero-initialised on first use, in the layout of p's master. */
  protected slot(kind: string, p: Param): Tensor {
    const key = `${kind}.${p.name}`;
    const master = p.master;
    let t = this.slots.get(key);
    if (!t) {
      t = native.zeros(p.dims, 'float32', false, master);
      this.slots.set(key, t);
    }
    if (t.layout !== master.layout) {
      const moved = native.reorder(t, { like: master });
      t.dispose();
      this.slots.set(key, (t = moved));
    }
    return t;
  }

  /**
   * The parameters with a gradient, each master kept in its gradient's layout where that is
   * blocked: the update then reads the master, its state and the gradient in one order (a
   * plain master would cost a transpose of the gradient each step). Not where a copy the update
   * cannot rewrite must be made from the master each step (Winograd's): those read it plain.
   */
  protected live(params: Param[]): Param[] {
    const live = params.filter((p) => p.trainable && p.grad);
    for (const p of live) {
      const g = p.grad!;
      p.adoptLayout(g.dims.length === 4 && g.layout !== 'plain' && p.copiesRewritable ? g : null);
    }
    return live;
  }

  stateArrays(): Map<string, Tensor> {
    return this.slots;
  }

  stateScalars(): Record<string, number> {
    return { steps: this.steps, lr: this.lr };
  }

  loadState(arrays: Map<string, Tensor>, scalars: Record<string, number>): void {
    for (const t of this.slots.values()) t.dispose();
    this.slots.clear();
    for (const [k, t] of arrays) this.slots.set(k, native.reorder(t));
    this.steps = scalars.steps ?? 0;
  }

  dispose(): void {
    disposeAll(...this.slots.values());
    this.slots.clear();
  }
}

export interface AdamOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /** Keras `kernel_regularizer=l2(λ)` on convolution kernels: loss += λ·Σw². */
  l2?: number;
}

/** Adam as Keras implements it (ε outside the bias-corrected square root). */
export class Adam extends StatefulOptimizer implements Optimizer {
  readonly kind = 'adam' as const;
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly l2: number;

  constructor(o: AdamOptions = {}) {
    super();
    this.lr = o.lr ?? 1e-4;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.epsilon = o.epsilon ?? 1e-7;
    this.l2 = o.l2 ?? 0;
  }

  step(params: Param[]): void {
    this.steps++;
    const t = this.steps;
    const alpha = (this.lr * Math.sqrt(1 - this.beta2 ** t)) / (1 - this.beta1 ** t);
    const live = this.live(params);
    // One native call over every parameter: one pass of threads, not one per tensor, that
    // also rewrites each kernel's packed copies (no weight is packed again next step).
    const packs = live.map((p) => p.packedCopies());
    native.adamUpdateAll(
      live.map((p) => p.master),
      live.map((p) => p.grad!),
      live.map((p) => this.slot('m', p)),
      live.map((p) => this.slot('v', p)),
      live.map((p) => (p.regularized ? this.l2 : 0)),
      { alpha, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon },
      packs,
    );
    for (const p of live) p.updated(true);
  }

}

export interface SgdOptions {
  lr?: number;
  momentum?: number;
  weightDecay?: number;
}

/**
 * SGD with momentum as Caffe: v ← μv − lr·(g + wd·w); w ← w + v. Biases learn at twice the
 * rate and without decay (the FCN nets' lr_mult 2, decay_mult 0).
 */
export class Sgd extends StatefulOptimizer implements Optimizer {
  readonly kind = 'sgd' as const;
  lr: number;
  readonly momentum: number;
  readonly weightDecay: number;

  constructor(o: SgdOptions = {}) {
    super();
    this.lr = o.lr ?? 1e-10;
    this.momentum = o.momentum ?? 0.99;
    this.weightDecay = o.weightDecay ?? 5e-4;
  }

  step(params: Param[]): void {
    this.steps++;
    for (const p of this.live(params)) {
      const bias = p.role === 'bias';
      native.sgdUpdate(
        p.master,
        p.grad!,
        this.slot('velocity', p),
        { lr: this.lr * (bias ? 2 : 1), momentum: this.momentum, weightDecay: bias ? 0 : this.weightDecay },
        p.packedCopies(),
      );
      p.updated(true);
    }
  }

}
