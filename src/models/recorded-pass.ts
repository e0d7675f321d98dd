// A training forward pass recorded step by step, and its backward pass. Each step of the walk
// (network.ts) runs its layer, keeps on the tape what its backward needs, and notes which of
// its inputs a gradient must reach; backward() runs the steps in reverse, only those a
// gradient passes through, adding where two paths meet (where a skip reads a pool).
import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import type { Conv2d, Dropout, ForwardContext, MaxPool2d } from '../nn/layers.js';
import type { Param } from '../nn/param.js';
import type { Layer, NetworkOps, Pool } from './network.js';

/** A value of the recorded pass: a tensor and whether a gradient must reach it. */
export interface Value {
  t: Tensor;
  needsGrad: boolean;
}

/** One step: its backward maps dL/doutput to dL/dinputs (null where none is needed) and disposes nothing. */
interface Step {
  inputs: Value[];
  output: Value;
  backward: (dy: Tensor) => (Tensor | null)[];
  /** The parameters whose gradients this step's backward sets (a layer runs once per pass). */
  params?: Param[];
}

export class RecordedPass {
  private readonly steps: Step[] = [];
  /** The pass's input (the caller's tensor; no gradient reaches it). */
  readonly input: Value;

  constructor(x: Tensor, private readonly ctx: ForwardContext, private readonly layers: { conv(l: Layer): Conv2d; pool(p: Pool): MaxPool2d; dropout(name: string): Dropout }) {
    this.input = { t: x, needsGrad: false };
  }

  /** Runs one step and records it; the tape owns its output unless `owned` (the caller's logits). */
  private apply(inputs: Value[], forward: () => Tensor, backward: Step['backward'], opts: { trainable?: boolean; owned?: boolean; params?: Param[] } = {}): Value {
    const y = forward();
    const output: Value = { t: y, needsGrad: (opts.trainable ?? false) || inputs.some((v) => v.needsGrad) };
    if (!opts.owned) this.ctx.tape!.keep(y);
    this.steps.push({ inputs, output, backward, ...(opts.params ? { params: opts.params } : {}) });
    return output;
  }

  /** The walk's operations, each recorded with its backward. */
  ops(): NetworkOps<Value> {
    const { ctx, layers } = this;
    const apply = this.apply.bind(this);
    const conv = (l: Conv2d, v: Value) => apply([v], () => l.forward(v.t, ctx), (dy) => [l.backward(dy, v.needsGrad)], { trainable: l.trainable, params: l.params() });
    // The at-once skip scaling is a step of its own here (inference folds it into the convolution).
    const scale = (v: Value, f: number) => apply([v], () => native.scale(v.t, f), (dy) => [v.needsGrad ? native.scale(dy, f) : null]);
    // A crop's backward pads the gradient back with zeros: the crop with offsets negated.
    const cropped = (v: Value, top: number, height: number, width: number, owned = false) => {
      const [, , ih, iw] = v.t.dims as [number, number, number, number];
      return apply([v], () => native.cropPad(v.t, { top, left: top, height, width }), (dy) => [v.needsGrad ? native.cropPad(dy, { top: -top, left: -top, height: ih, width: iw }) : null], { owned });
    };
    return {
      pad: (v, m) => {
        const [, , h, w] = v.t.dims as [number, number, number, number];
        const hp = Math.ceil(h / m) * m, wp = Math.ceil(w / m) * m;
        return hp === h && wp === w ? v : cropped(v, 0, hp, wp);
      },
      conv: (l, v, factor) => conv(layers.conv(l), factor === undefined ? v : scale(v, factor)),
      pool: (p, v) => {
        const pool = layers.pool(p);
        return apply([v], () => pool.forward(v.t, ctx), (dy) => [v.needsGrad ? pool.backward(dy) : null]);
      },
      dropout: (name, v) => {
        const drop = layers.dropout(name);
        const y = drop.forward(v.t, ctx); // null: the identity (rate 0)
        return y ? apply([v], () => y, (dy) => [drop.backward(dy)]) : v;
      },
      // The crop to the input's size is the edge: the logits are the caller's, not the tape's.
      // A crop to the same size is no step at all: a bfloat16 network's logits reach the loss
      // as its last upsampling left them (no float32 plain copy), and their gradient reaches
      // that upsampling's backward the same way.
      crop: (v, offset, like, _name) => {
        if (offset === null) return v;
        const [height, width] = [like.t.dims[2]!, like.t.dims[3]!];
        if (offset !== 0 || v.t.dims[2] !== height || v.t.dims[3] !== width) return cropped(v, offset, height, width, like === this.input);
        if (like === this.input) this.ctx.tape!.release(v.t);
        return v;
      },
      add: (a, b) => apply([a, b], () => native.add(a.t, b.t), (dy) => [a.needsGrad ? native.reorder(dy) : null, b.needsGrad ? native.reorder(dy) : null]),
      free: () => {}, // the tape owns every value until the step is over
    };
  }

  /**
   * Backpropagates dL/d`output` through the recorded steps, setting the gradients of every
   * trainable parameter; `onGradReady` hears of each as soon as it is final (output layers
   * first), while the pass goes on. Disposes nothing it was given.
   */
  backward(output: Value, dOutput: Tensor, onGradReady?: (p: Param) => void): void {
    const grads = new Map<Value, Tensor>();
    const accumulate = (v: Value, g: Tensor | null) => {
      if (!g) return;
      const prev = grads.get(v);
      if (!prev) return void grads.set(v, g);
      grads.set(v, native.add(prev, g));
      disposeAll(prev, g);
    };
    try {
      for (let i = this.steps.length - 1; i >= 0; i--) {
        const step = this.steps[i]!;
        const dy = step.output === output ? dOutput : grads.get(step.output);
        if (!dy) continue;
        grads.delete(step.output);
        try {
          const dx = step.backward(dy);
          step.inputs.forEach((v, k) => (v.needsGrad ? accumulate(v, dx[k]!) : disposeAll(dx[k])));
          if (onGradReady) for (const p of step.params ?? []) if (p.trainable && p.grad) onGradReady(p);
        } finally {
          if (dy !== dOutput) dy.dispose();
        }
      }
    } finally {
      for (const g of grads.values()) disposeAll(g);
    }
  }
}
