// Synchronous data-parallel training over MPI: `mpirun -np N fcn train …` runs N copies of
// the trainer, one per rank, that together do what one process does with the same global batch.
//
//  - Data: every rank computes the global order of each epoch (a function of the seed and the
//    epoch only) and takes its slice of every global batch: rank r gets images
//    [r·B/N, (r+1)·B/N) of each batch of B. Augmentation is seeded per dataset item, so each
//    image is augmented as one process would. The last, shorter batch of an epoch is split the
//    same way; a rank whose share is empty still takes part in the step with zero gradients.
//  - Gradients: each rank computes the summed cross-entropy of its share; the sum over ranks
//    of the labelled pixels (and of the loss) travels first, then the gradients, summed over
//    ranks and scaled by 1/(labelled pixels of the global batch) for the 'mean' loss (by 1 for
//    'sum'): exactly the gradient of one process on the whole batch, up to float32 summation
//    order. The gradients travel in buckets (PyTorch DDP's scheme): parameters in the order the
//    backward pass finishes them, grouped up to a size, each bucket's MPI_Iallreduce started as
//    soon as its last gradient is final, while the backward pass carries on below it.
//  - Dropout draws its masks per image of the global batch (a rank's share starts at image
//    r·B/N), so the ranks drop what one process drops.
//  - Every rank applies the same update to the same weights, so weights stay identical; a
//    checksum compared across ranks after every epoch proves it (a mismatch stops the job).
//
// Only rank 0 writes (config, log, plots, samples, checkpoints) and reports progress; the
// other ranks compute. The run folder must be visible to every rank (as mpirun's working
// directory usually is): a resumed run reads its checkpoint on every rank.
import { native, type Tensor } from '../engine/binding.js';
import { configureEngine } from '../engine/config.js';
import { disposeAll } from '../engine/tape.js';
import { startMpi, mpiLaunch, type AllreducePrecision, type MpiNative, type MpiSession } from '../engine/mpi.js';
import type { FCN } from '../models/fcn.js';
import type { Param } from '../nn/param.js';
import { DataLoader, type Batch, type LoaderOptions } from '../data/loader.js';
import { computeGradients, type GradientExchange, type StepOptions, type StepResult } from './step.js';
import os from 'node:os';
import { fcnErrorClass } from '../errors.js';

/** Ranks disagree (weights, settings) or one cannot take part: the job stops. */
export const DistributedError = fcnErrorClass('DISTRIBUTED');

export interface DistributedOptions {
  /** How gradients travel: float32, or bfloat16 (half the bytes, float32 additions). */
  precision: AllreducePrecision;
  /** Bucket size in MB (10^6 bytes of float32 gradients). */
  bucketMb: number;
  /**
   * Start each bucket as soon as the backward pass has finished it (default); false: all
   * after the backward pass (to measure what the overlap hides).
   */
  overlap?: boolean;
}

export const DEFAULT_BUCKET_MB = 25;
/** The first bucket is small so that communication starts early (as DDP's 1 MB one). */
const FIRST_BUCKET_BYTES = 1e6;

/** A parameter's gradient, or a piece of it, in a bucket. */
interface Slot {
  param: Param;
  bucket: number;
  /** Element offset in the bucket. */
  offset: number;
  /** Element offset in the parameter's gradient. */
  from: number;
  size: number;
}

interface Bucket {
  slots: Slot[];
  /** Elements. */
  size: number;
  /**
   * What travels. A bucket of one parameter, or of a piece of one (conv6, conv7: most of the
   * bytes), is a view of that gradient's own memory, where the engine wrote it, in the layout
   * it was written in: MPI sums it in place and the optimiser reads the sum there, no copy
   * either way. A bucket of several small parameters has memory of its own, in their order
   * and layout, that their gradients are copied into and back out of.
   */
  buffer: Float32Array | null;
  /** Whether `buffer` is memory of the bucket's own (several parameters). */
  owned: boolean;
  /** Gradients of this step still to come. */
  pending: number;
  /** The request in flight, once started. */
  request: number | null;
}

/** What one step's gradient exchange did. */
export interface ReduceStats {
  buckets: number;
  /** float32 bytes of gradients exchanged (half travels with bfloat16). */
  bytes: number;
  /** Time spent copying gradients out of and back into the engine. */
  copyMs: number;
  /** Bytes of gradients reordered into the layout they travel in (0 once layouts are agreed and stay). */
  convertedBytes: number;
  /** Time the step waited for the exchange after its backward pass: what the overlap did not hide. */
  exposedMs: number;
}

/**
 * Sums the gradients of a set of trainable parameters over every rank, in buckets started
 * as the backward pass finishes them. The buckets are the same on every rank (built from the
 * parameter list and trainable flags, which every rank shares), and are always started in the
 * same order, which MPI's collectives require.
 */
export class GradientReducer {
  readonly buckets: Bucket[] = [];
  private readonly slots = new Map<Param, Slot[]>();
  private filled = new Set<Param>();
  private next = 0;
  private scale = 1;
  private active = false;
  private copyMs = 0;
  private convertedBytes = 0;
  /**
   * The layout each parameter's gradient travels in, named by a tensor that had it (maybe
   * disposed): one every rank's engine produced in an earlier step; absent: plain. Summing
   * needs one layout on every rank, and a gradient's layout depends on the image's shape and
   * the kernel chosen for it, which can differ between ranks in a step.
   */
  private readonly exchangeLayout = new Map<Param, Tensor>();
  /** This step's gradients as the engine produced them, for the next agreement. */
  private produced = new Map<Param, Tensor>();

  constructor(
    private readonly mpi: MpiNative,
    /** The trainable parameters, input to output (model.params() order). */
    params: Param[],
    private readonly options: DistributedOptions,
  ) {
    const cap = Math.max(1, Math.floor((options.bucketMb * 1e6) / 4));
    let current: Slot[] = [], size = 0;
    const add = (slot: Omit<Slot, 'bucket' | 'offset'>, offset: number) => {
      const full: Slot = { ...slot, bucket: this.buckets.length, offset };
      this.slots.set(slot.param, [...(this.slots.get(slot.param) ?? []), full]);
      return full;
    };
    const close = () => {
      if (current.length === 0) return;
      const owned = current.length > 1;
      this.buckets.push({ slots: current, size, buffer: owned ? new Float32Array(size) : null, owned, pending: 0, request: null });
      current = [];
      size = 0;
    };
    // The backward pass finishes parameters from the output back: buckets follow that order.
    for (const param of [...params].reverse()) {
      const n = param.dims.reduce((a, b) => a * b, 1);
      const limit = this.buckets.length === 0 ? Math.min(cap, FIRST_BUCKET_BYTES / 4) : cap;
      if (size > 0 && size + n > limit) close();
      if (n <= limit) {
        current.push(add({ param, from: 0, size: n }, size));
        size += n;
        continue;
      }
      // A gradient larger than a bucket travels in pieces of its own memory: MPI's large
      // messages then pipeline, and its temporary buffers stay bucket-sized (glibc serves
      // blocks above 32 MB by fresh mappings, each page faulted in on every call).
      for (let from = 0; from < n; from += cap) {
        current = [add({ param, from, size: Math.min(cap, n - from) }, 0)];
        size = current[0]!.size;
        close();
      }
    }
    close();
  }

  get bytes(): number {
    return this.buckets.reduce((s, b) => s + 4 * b.size, 0);
  }

  /** A new step: gradients will be multiplied by `scale` once summed. */
  begin(scale: number): void {
    if (this.active) throw new Error('GradientReducer: begin() while a step is in progress');
    this.active = true;
    this.scale = scale;
    this.next = 0;
    this.filled = new Set();
    this.produced = new Map();
    this.copyMs = 0;
    this.convertedBytes = 0;
    for (const b of this.buckets) {
      b.pending = b.slots.length;
      b.request = null;
      if (!b.owned) b.buffer = null;
    }
  }

  /** The backward pass's callback: `p`'s gradient is final. */
  ready(p: Param): void {
    const slots = this.slots.get(p);
    if (!slots || !this.active || this.filled.has(p)) return;
    const t0 = performance.now();
    this.produced.set(p, p.grad!);
    this.place(p, this.exchangeView(p));
    this.copyMs += performance.now() - t0;
    if (this.options.overlap ?? true) this.startReady();
  }

  /** `p`'s gradient in its exchange layout, as float32 (a view; converted first if it is not). */
  private exchangeView(p: Param): Float32Array {
    const g = p.grad;
    if (!g || g.disposed) throw new Error(`${p.name}: no gradient to exchange`);
    const like = this.exchangeLayout.get(p);
    const layout = like?.layout ?? 'plain';
    if (g.layout !== layout || g.dtype !== 'float32') {
      this.convertedBytes += g.nbytes;
      p.setGrad(native.reorder(g, { dtype: 'float32', like }));
    }
    return native.view(p.grad!) as Float32Array;
  }

  /**
   * The next step's exchange layouts: where every rank's engine produced one layout for a
   * gradient this step, it travels in that layout from now on (if unpadded); elsewhere the
   * layout stays. Rank 0's layouts (hashed) go to every rank, and which differ is summed.
   */
  private agreeOnLayouts(): void {
    const params = [...this.slots.keys()];
    const mine = params.map((p) => this.produced.get(p)?.layout ?? 'none');
    const hashes = new BigUint64Array(params.length);
    mine.forEach((l, i) => (hashes[i] = BigInt(`0x${this.mpi.checksum(new TextEncoder().encode(l))}`)));
    const root = hashes.slice();
    this.mpi.broadcast(root, 0);
    const differs = Float64Array.from(hashes, (h, i) => (h === root[i] ? 0 : 1));
    this.mpi.allreduce(differs);
    params.forEach((p, i) => {
      const g = this.produced.get(p);
      if (differs[i]! > 0 || !g || g.dtype !== 'float32' || g.nbytes !== 4 * g.dims.reduce((a, b) => a * b, 1)) return;
      if (g.layout === 'plain') this.exchangeLayout.delete(p);
      else this.exchangeLayout.set(p, g);
    });
  }

  /** Puts `p`'s gradient (values) in its buckets: a view of it, or a copy into a bucket's own memory. */
  private place(p: Param, values: Float32Array): void {
    for (const s of this.slots.get(p)!) {
      const b = this.buckets[s.bucket]!;
      const piece = values.subarray(s.from, s.from + s.size);
      if (b.owned) b.buffer!.set(piece, s.offset);
      else b.buffer = piece;
      b.pending--;
    }
    this.filled.add(p);
  }

  /** Starts, in order, every bucket whose gradients are all in. */
  private startReady(): void {
    while (this.next < this.buckets.length && this.buckets[this.next]!.pending === 0) {
      const b = this.buckets[this.next++]!;
      b.request = this.mpi.iallreduce(b.buffer!, { precision: this.options.precision, scale: this.scale });
    }
  }

  /**
   * After the backward pass (or instead of it, on a rank without images this step): any
   * gradient that did not come is zero; every bucket is started and waited for, and the summed
   * gradients are the parameters' gradients (in place where a bucket is a view of them).
   */
  finish(): ReduceStats {
    if (!this.active) throw new Error('GradientReducer: finish() without begin()');
    const t0 = performance.now();
    try {
      for (const p of this.slots.keys()) {
        if (this.filled.has(p)) continue;
        p.setGrad(native.zeros(p.dims));
        this.place(p, this.exchangeView(p));
      }
      this.startReady();
      for (const b of this.buckets) this.mpi.wait(b.request!);
      const exposedMs = performance.now() - t0;
      const t1 = performance.now();
      for (const b of this.buckets) {
        if (!b.owned) continue;
        for (const s of b.slots) native.view(s.param.grad!).set(b.buffer!.subarray(s.offset, s.offset + s.size), s.from);
      }
      this.copyMs += performance.now() - t1;
      this.agreeOnLayouts();
      return { buckets: this.buckets.length, bytes: this.bytes, copyMs: this.copyMs, convertedBytes: this.convertedBytes, exposedMs };
    } finally {
      this.active = false;
      // A view belongs to that step's gradient: let it go.
      for (const b of this.buckets) if (!b.owned) b.buffer = null;
    }
  }
}

/** A placeholder for a rank's empty share of a global batch. */
function emptyBatch(epoch: number, batchIndex: number): Batch {
  return { ids: [], indices: [], images: new Float32Array(0), labels: new Uint8Array(0), n: 0, height: 0, width: 0, sizes: [], epoch, batchIndex };
}

/**
 * The training batches of one rank: its slice of every global batch of one process's order,
 * one batch (possibly empty) for every global batch, so that every rank steps together.
 */
export class ShardedTrainLoader extends DataLoader {
  readonly globalBatch: number;

  constructor(options: LoaderOptions, readonly rank: number, readonly ranks: number) {
    const global = options.batchSize ?? 1;
    if (global % ranks !== 0) throw new DistributedError(`the batch (${global}) must divide evenly among ${ranks} ranks`);
    super({ ...options, batchSize: global / ranks });
    this.globalBatch = global;
  }

  override order(epoch: number): number[] {
    const all = super.order(epoch);
    const mine: number[] = [];
    for (let start = 0; start < all.length; start += this.globalBatch) {
      mine.push(...all.slice(start + this.rank * this.batchSize, Math.min(start + this.globalBatch, start + (this.rank + 1) * this.batchSize)));
    }
    return mine;
  }

  /** Global batches per epoch, as one process has. */
  override get batchesPerEpoch(): number {
    return this.dropLast ? Math.floor(this.size / this.globalBatch) : Math.ceil(this.size / this.globalBatch);
  }

  override async *epoch(epoch: number, opts: { startBatch?: number } = {}): AsyncGenerator<Batch> {
    let expected = opts.startBatch ?? 0;
    for await (const b of super.epoch(epoch, opts)) {
      while (expected < b.batchIndex) yield emptyBatch(epoch, expected++);
      yield b;
      expected = b.batchIndex + 1;
    }
    while (expected < this.batchesPerEpoch) yield emptyBatch(epoch, expected++);
  }
}

/**
 * The validation images of one rank: a contiguous slice of the split (rank 0's first, so its
 * sample grid shows the images one process shows), scored locally and summed over ranks.
 */
export class ShardedValLoader extends DataLoader {
  private readonly lo: number;
  private readonly hi: number;

  constructor(options: LoaderOptions, rank: number, ranks: number) {
    const global = options.batchSize ?? 1;
    super({ ...options, shuffle: false, batchSize: Math.max(1, Math.floor(global / ranks)) });
    const chunk = Math.ceil(this.size / ranks);
    this.lo = Math.min(this.size, rank * chunk);
    this.hi = Math.min(this.size, (rank + 1) * chunk);
  }

  override order(): number[] {
    return Array.from({ length: this.hi - this.lo }, (_, i) => this.lo + i);
  }

  override get batchesPerEpoch(): number {
    return Math.ceil((this.hi - this.lo) / this.batchSize);
  }
}

/** A data-parallel run's context: this rank, its gradient reducer, and the collectives the trainer needs. */
export class Distributed {
  readonly rank: number;
  readonly size: number;
  readonly mpi: MpiNative;
  private reducer: { key: string; model: FCN; reducer: GradientReducer } | null = null;
  /** Images per rank in a full global batch (the train loader's), for dropout's image indices. */
  private share: number | null = null;

  constructor(readonly session: MpiSession, readonly options: DistributedOptions) {
    this.rank = session.rank;
    this.size = session.size;
    this.mpi = session.mpi;
    if (!(options.bucketMb > 0)) throw new DistributedError(`the bucket size must be positive, got ${options.bucketMb} MB`);
  }

  get isRoot(): boolean {
    return this.rank === 0;
  }

  /** Fails when the global batch does not divide among the ranks. */
  checkBatch(batch: number): void {
    if (batch % this.size !== 0)
      throw new DistributedError(`the batch (${batch} images per step, over all ranks) does not divide among ${this.size} ranks: use a batch that is a multiple of ${this.size}`);
  }

  /** This rank's share of the training batches or of the validation split. */
  loader(split: 'train' | 'val', options: LoaderOptions): DataLoader {
    if (split === 'val') return new ShardedValLoader(options, this.rank, this.size);
    const loader = new ShardedTrainLoader(options, this.rank, this.size);
    this.share = loader.batchSize;
    return loader;
  }

  /** The reducer of the model's trainable parameters (rebuilt when they change). */
  reducerFor(model: FCN): GradientReducer {
    const params = model.params().filter((p) => p.trainable);
    const key = params.map((p) => p.name).join(',');
    if (!this.reducer || this.reducer.model !== model || this.reducer.key !== key) this.reducer = { key, model, reducer: new GradientReducer(this.mpi, params, this.options) };
    return this.reducer.reducer;
  }

  /**
   * One step's gradients on this rank's share `b` of the global batch (maybe empty), summed
   * over ranks into every trainable parameter's gradient: one process's step (train/step.ts)
   * with this rank's exchange as its hook. The returned loss, labelled pixels and `images` are
   * the global batch's, and `stop` whether any rank asked to stop. `o.stop`: this rank wants to
   * stop after this step.
   */
  computeGradients(model: FCN, b: Batch, o: StepOptions & { stop?: boolean } = {}): StepResult & { images: number; stop: boolean; reduce: ReduceStats } {
    const reducer = this.reducerFor(model);
    const reduction = o.reduction ?? 'mean';
    let images = 0, stop = false, reduce: ReduceStats | null = null;
    const exchange: GradientExchange = {
      totals: (loss, valid) => {
        // The global batch's loss, labelled pixels, images, and whether anyone stops.
        const t = Float64Array.of(loss, valid, b.n, o.stop ? 1 : 0);
        this.mpi.allreduce(t);
        images = t[2]!;
        stop = t[3]! > 0;
        reducer.begin(reduction === 'mean' ? (t[1]! > 0 ? 1 / t[1]! : 0) : 1);
        return { loss: t[0]!, valid: t[1]! };
      },
      ready: (p) => reducer.ready(p),
      finish: () => void (reduce = reducer.finish()),
    };
    let x: Tensor | null = null, y: Tensor | null = null;
    try {
      if (b.n > 0) {
        x = native.fromArray([b.n, 3, b.height, b.width], b.images);
        y = native.fromArray([b.n, b.height, b.width], b.labels);
      }
      // Rank r's share starts at image r·share of the global batch: dropout draws there what
      // one process draws for those images.
      const r = computeGradients(model, x, y, { ...o, firstImage: this.rank * (this.share ?? b.n), exchange });
      return { ...r, images, stop, reduce: reduce! };
    } finally {
      disposeAll(x, y);
    }
  }

  /** Sums the array over every rank, in place. */
  sum(values: Float64Array): void {
    this.mpi.allreduce(values);
  }

  /** Whether any rank says yes. */
  any(flag: boolean): boolean {
    const v = Float64Array.of(flag ? 1 : 0);
    this.mpi.allreduce(v);
    return v[0]! > 0;
  }

  /** Every parameter of `model` becomes rank 0's (DDP does the same when it starts). */
  broadcastWeights(model: FCN): void {
    for (const p of model.params()) {
      const values = p.value.toArray() as Float32Array;
      this.mpi.broadcast(values, 0);
      if (this.isRoot) continue;
      native.writeArray(p.value, values);
      p.version++;
    }
  }

  /**
   * Stops the job (a DistributedError on every rank) unless every rank holds rank 0's weights;
   * returns the checksum of every parameter's bytes, in model order.
   */
  checkWeights(model: FCN, when: string): string {
    const sums = model.params().map((p) => `${p.name}:${this.mpi.checksum(p.master.toArray())}`);
    const mine = this.mpi.checksum(new TextEncoder().encode(sums.join('\n')));
    const root = new TextEncoder().encode(mine);
    this.mpi.broadcast(root, 0);
    const rootSum = new TextDecoder().decode(root);
    const differs = new Float64Array(this.size);
    differs[this.rank] = rootSum === mine ? 0 : 1;
    this.mpi.allreduce(differs);
    const bad = [...differs].flatMap((v, i) => (v > 0 ? [i] : []));
    if (bad.length > 0)
      throw new DistributedError(`the weights differ across ranks ${when}: rank${bad.length > 1 ? 's' : ''} ${bad.join(', ')} hold${bad.length > 1 ? '' : 's'} other weights than rank 0 (checksum ${rootSum}); stopping`);
    return mine;
  }
}

/**
 * The data-parallel context when this process was started by mpirun with more than one rank,
 * else null. Ranks on one machine share its cores unless the thread count was chosen
 * (`threadsGiven`: --threads, FCN_THREADS).
 */
export function startDistributed(o: DistributedOptions & { threadsGiven: boolean }): Distributed | null {
  const launch = mpiLaunch();
  if (!launch || launch.size <= 1) return null;
  let session: MpiSession;
  try {
    session = startMpi();
  } catch (e) {
    throw new DistributedError(`started by mpirun as rank ${launch.rank} of ${launch.size}, but ${(e as Error).message}`);
  }
  if (session.size !== launch.size) throw new DistributedError(`mpirun says ${launch.size} ranks but MPI has ${session.size}: is the MPI library the one mpirun belongs to?`);
  if (!o.threadsGiven && launch.localSize > 1) configureEngine({ threads: Math.max(1, Math.floor(os.availableParallelism() / launch.localSize)) });
  return new Distributed(session, o);
}
