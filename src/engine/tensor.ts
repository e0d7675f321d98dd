import { native, type Tensor } from './binding.js';

/** Disposes every tensor given (null and already-disposed ones are skipped). */
export function disposeAll(...tensors: (Tensor | null | undefined)[]): void {
  for (const t of tensors) if (t && !t.disposed) t.dispose();
}

/** A plain float32 tensor from JS numbers (tests and edges only; never the hot path). */
export function tensorFrom(dims: number[], values: ArrayLike<number> | Float32Array | Uint8Array): Tensor {
  if (values instanceof Uint8Array) return native.fromArray(dims, values);
  return native.fromArray(dims, values instanceof Float32Array ? values : Float32Array.from(values));
}

/**
 * Owns the tensors a training forward pass keeps for its backward pass. The model records
 * each one here; after the backward pass (or on an error) one dispose() frees them all.
 */
export class Tape {
  private readonly held: Tensor[] = [];
  keep<T extends Tensor | null>(t: T): T {
    if (t) this.held.push(t);
    return t;
  }
  get size(): number {
    return this.held.length;
  }
  dispose(): void {
    for (const t of this.held) if (!t.disposed) t.dispose();
    this.held.length = 0;
  }
}
