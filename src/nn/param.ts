import type { Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';

/**
 * A learnable array: its value in the engine's master layout (plain float32; kernels
 * O,I,KH,KW for convolutions and transposed convolutions alike), its latest gradient,
 * and a version that changes with every update so layers know when to re-prepare it.
 */
export class Param {
  grad: Tensor | null = null;
  version = 0;
  trainable = true;

  constructor(
    /** Checkpoint name: `<layer>.kernel` or `<layer>.bias`. */
    readonly name: string,
    public value: Tensor,
    /** Conv kernels carry the L2 regulariser / weight decay; biases and upsampling kernels do not. */
    readonly role: 'kernel' | 'bias',
    readonly transposed: boolean,
  ) {}

  get regularized(): boolean {
    return this.role === 'kernel' && !this.transposed;
  }

  get dims(): number[] {
    return this.value.dims;
  }

  /** Replaces the value (e.g. after loading) and marks prepared copies stale. */
  assign(value: Tensor): void {
    if (value !== this.value) disposeAll(this.value);
    this.value = value;
    this.version++;
  }

  setGrad(g: Tensor | null): void {
    if (this.grad !== g) disposeAll(this.grad);
    this.grad = g;
  }

  dispose(): void {
    disposeAll(this.value, this.grad);
    this.grad = null;
  }
}
