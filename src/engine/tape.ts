import type { Tensor } from './binding.js';

/** Disposes every tensor given (null and already-disposed ones are skipped). */
export function disposeAll(...tensors: (Tensor | null | undefined)[]): void {
  for (const t of tensors) if (t && !t.disposed) t.dispose();
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
  /** Hands `t` back to the caller, who disposes it: the tape no longer does. */
  release(t: Tensor): void {
    const i = this.held.indexOf(t);
    if (i >= 0) this.held.splice(i, 1);
  }
  dispose(): void {
    for (const t of this.held) if (!t.disposed) t.dispose();
    this.held.length = 0;
  }
}
