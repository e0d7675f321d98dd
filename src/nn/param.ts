import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';

/** A packed copy of a kernel that an update can rewrite along with the master weights. */
export interface PackedCopy {
  tensor: Tensor;
  /** The input-gradient convolution's form: I,O,KH,KW with the kernel flipped. */
  flipped: boolean;
}

/**
 * A learnable array: its value (float32; kernels O,I,KH,KW for convolutions and transposed
 * convolutions alike), its latest gradient (in whatever layout the weight-gradient kernel left
 * it), and a version that changes with every update so layers know when to re-prepare it.
 *
 * The value is read in the plain layout. While training, an optimiser may keep the master in
 * its gradient's blocked layout (`master`, `adoptLayout`): the update then streams the master,
 * its state and its gradient in one order, where a plain master would cost each step a
 * transpose of the gradient (conv6: 411 MB). Reading `value` puts such a master back in the
 * plain layout; its values, version and prepared copies stay as they were.
 */
export class Param {
  grad: Tensor | null = null;
  version = 0;
  trainable = true;
  private readonly copies = new Set<PreparedWeights>();
  private store: Tensor;

  constructor(
    /** Checkpoint name: `<layer>.kernel` or `<layer>.bias`. */
    readonly name: string,
    value: Tensor,
    /** Conv kernels carry the L2 regulariser / weight decay; biases and upsampling kernels do not. */
    readonly role: 'kernel' | 'bias',
    readonly transposed: boolean,
  ) {
    this.store = value;
  }

  /** The value in the plain layout. */
  get value(): Tensor {
    if (this.store.layout !== 'plain') this.adoptLayout(null);
    return this.store;
  }

  /**
   * The master as stored, plain or in its gradient's layout: for the passes (the convolutions
   * make their copies from either), the update, and saving a checkpoint, so that nothing in a
   * training run moves it after its first step.
   */
  get master(): Tensor {
    return this.store;
  }

  /**
   * Keeps the master in `like`'s layout (null: plain), the same values: no new version, and
   * the prepared copies stay current.
   */
  adoptLayout(like: Tensor | null): void {
    if (like ? this.store.layout === like.layout : this.store.layout === 'plain') return;
    const moved = native.reorder(this.store, { like });
    this.store.dispose();
    this.store = moved;
  }

  /** Whether every prepared copy is one an update rewrites (Winograd's transformed weights are not). */
  get copiesRewritable(): boolean {
    for (const c of this.copies) if (c.current() && !c.rewritable) return false;
    return true;
  }

  get regularized(): boolean {
    return this.role === 'kernel' && !this.transposed;
  }

  get dims(): number[] {
    return this.store.dims;
  }

  /** Replaces the value (e.g. after loading) and marks prepared copies stale. */
  assign(value: Tensor): void {
    if (value !== this.store) disposeAll(this.store);
    this.store = value;
    this.version++;
  }

  setGrad(g: Tensor | null): void {
    if (this.grad !== g) disposeAll(this.grad);
    this.grad = g;
  }

  /** The prepared copies current at this version: an optimiser rewrites them in its update. */
  packedCopies(): PackedCopy[] {
    const out: PackedCopy[] = [];
    for (const c of this.copies) {
      const t = c.current();
      if (t && c.rewritable) out.push({ tensor: t, flipped: c.flipped });
    }
    return out;
  }

  /**
   * After an update of the value: a new version. With `rewrote`, the copies packedCopies()
   * gave were rewritten in the same pass and stay current; the others go stale.
   */
  updated(rewrote: boolean): void {
    const before = this.version++;
    if (rewrote) for (const c of this.copies) if (c.rewritable) c.carry(before, this.version);
  }

  /** @internal: PreparedWeights registers itself while it holds a copy. */
  track(c: PreparedWeights, on: boolean): void {
    if (on) this.copies.add(c);
    else this.copies.delete(c);
  }

  dispose(): void {
    disposeAll(this.store, this.grad);
    this.grad = null;
  }
}

/**
 * A copy of a parameter in the layout a primitive wants, valid for one parameter version.
 * Registered with the parameter, so an optimiser's fused update keeps it current (a training
 * step then packs no weights: conv6's copy is 411 MB in float32).
 */
export class PreparedWeights {
  private tensor: Tensor | null = null;
  private version = -1;
  flipped = false;
  /** False for a layout the update cannot write (Winograd's transformed weights): it goes stale instead. */
  rewritable = true;

  constructor(private readonly param: Param) {}

  get(): Tensor | null {
    if (this.version !== this.param.version) this.clear();
    return this.tensor;
  }
  /** The copy if current (without dropping a stale one). */
  current(): Tensor | null {
    return this.version === this.param.version && this.tensor && !this.tensor.disposed ? this.tensor : null;
  }
  update(fresh: Tensor | null, flipped = false, rewritable = true): void {
    if (!fresh) return;
    disposeAll(this.tensor);
    this.tensor = fresh;
    this.flipped = flipped;
    this.rewritable = rewritable;
    this.version = this.param.version;
    this.param.track(this, true);
  }
  /** The update that moved the parameter from version `from` to `to` rewrote this copy. */
  carry(from: number, to: number): void {
    if (this.version === from && this.tensor) this.version = to;
  }
  clear(): void {
    disposeAll(this.tensor);
    this.tensor = null;
    this.version = -1;
    this.param.track(this, false);
  }
}
