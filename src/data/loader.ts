// The data loader: shuffled, augmented, padded batches with decoding and augmentation in
// worker threads and a prefetch window, so training does not wait for data.
//
// Determinism: epoch k's order depends only on (seed, k), and the augmentation of a sample
// only on (seed, k, its index in the dataset). Results are therefore the same for any
// number of workers, and an interrupted epoch can be resumed at any batch.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { BadSample, Dataset } from './datasets.js';
import { loadSample, type LoadResult } from './load-sample.js';
import { mixSeed, Rng } from './prng.js';
import { padTo, validatePipeline, type PipelineSpec, type Sample } from './transforms.js';
import type { WorkerInit, WorkerTask } from './worker.js';

export type { Sample } from './transforms.js';

/** A batch: images NCHW (BGR, mean-subtracted, padding 0), labels NHW (255 = void and padding). */
export interface Batch {
  ids: string[];
  /** Dataset indices of the samples. */
  indices: number[];
  images: Float32Array;
  labels: Uint8Array;
  n: number;
  height: number;
  width: number;
  /** Original (post-transform) size of each sample before padding to the batch size. */
  sizes: { height: number; width: number }[];
  epoch: number;
  /** Index of this batch within its epoch. */
  batchIndex: number;
}

export interface LoaderOptions {
  dataset: Dataset;
  pipeline: PipelineSpec;
  batchSize?: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  seed?: number;
  /** Worker threads for decode + augment (default 1; 0 decodes on the calling thread). */
  workers?: number;
  /** Batches prepared ahead of the one being consumed (default 2). */
  prefetch?: number;
  /** Drop the last, smaller batch of an epoch (default false). */
  dropLast?: boolean;
  /** A pair that fails to decode: 'throw' (default) stops the epoch; 'skip' leaves it out and reports it. */
  onBad?: 'throw' | 'skip';
  onSkip?: (bad: BadSample) => void;
}

/** Pads samples to the largest height and width and packs them into one batch. */
export function collate(samples: Sample[], extra: { indices?: number[]; epoch?: number; batchIndex?: number } = {}): Batch {
  if (samples.length === 0) throw new Error('collate: no samples');
  const height = Math.max(...samples.map((s) => s.height));
  const width = Math.max(...samples.map((s) => s.width));
  const n = samples.length;
  const plane = height * width;
  const images = new Float32Array(n * 3 * plane);
  const labels = new Uint8Array(n * plane);
  samples.forEach((s, b) => {
    const padded = padTo(s, height, width);
    images.set(padded.image, b * 3 * plane);
    labels.set(padded.label, b * plane);
  });
  return {
    ids: samples.map((s) => s.id),
    indices: extra.indices ?? samples.map((_, i) => i),
    images, labels, n, height, width,
    sizes: samples.map((s) => ({ height: s.height, width: s.width })),
    epoch: extra.epoch ?? 0,
    batchIndex: extra.batchIndex ?? 0,
  };
}

/**
 * Starts a worker thread (data workers, serve's inference worker): the compiled `.js` at `js`,
 * or, when running from the TypeScript sources (tests, tsx), a small bootstrap that registers
 * tsx's loader inside the worker and then imports the `.ts` beside it (an `--import tsx` in
 * execArgv is not enough: tsx registers its hooks on the main thread only).
 */
export function startWorker(js: URL, workerData: unknown): Worker {
  const execArgv = workerExecArgv(process.execArgv);
  if (existsSync(fileURLToPath(js))) return new Worker(js, { workerData, execArgv });
  let api: string;
  try {
    api = import.meta.resolve('tsx/esm/api');
  } catch (e) {
    throw new Error(`${fileURLToPath(js)}: not found, and tsx is not available to run its .ts source (${(e as Error).message})`);
  }
  const ts = js.href.replace(/\.js$/, '.ts');
  return new Worker(`import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(ts)}); });`, { workerData, eval: true, execArgv });
}

/** The parent's Node options minus those that only apply to a main script (they would stop a worker). */
function workerExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (/^(-e|-p|--eval|--print)$/.test(a)) {
      i++; // and its value
      continue;
    }
    if (/^--(input-type|eval|print|test)(\b|-)|^-pe?$/.test(a)) continue;
    out.push(a);
  }
  return out;
}

interface Pending {
  resolve: (r: LoadResult) => void;
  worker: PoolWorker;
  entry: WorkerTask['entry'];
}
interface PoolWorker {
  worker: Worker;
  inFlight: number;
  dead?: Error;
}

/** A fixed pool of data workers; idle workers do not keep the process alive. */
class WorkerPool {
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextTask = 1;
  private closed = false;

  constructor(count: number, init: WorkerInit) {
    for (let i = 0; i < count; i++) {
      const worker = startWorker(new URL('./worker.js', import.meta.url), init);
      const pw: PoolWorker = { worker, inFlight: 0 };
      worker.unref();
      worker.on('message', (m: { taskId: number; result: LoadResult }) => this.finish(m.taskId, m.result));
      worker.on('error', (e) => this.fail(pw, e));
      worker.on('exit', (code) => {
        if (!this.closed) this.fail(pw, new Error(`data worker exited with code ${code}`));
      });
      this.workers.push(pw);
    }
  }

  run(task: Omit<WorkerTask, 'taskId'>): Promise<LoadResult> {
    const live = this.workers.filter((w) => !w.dead);
    if (this.closed || live.length === 0) {
      const why = this.closed ? 'loader is closed' : `all data workers failed (${this.workers[0]?.dead?.message})`;
      return Promise.resolve({ ok: false, bad: { id: task.entry.id, file: task.entry.image, reason: why } });
    }
    const pw = live.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
    const taskId = this.nextTask++;
    return new Promise((resolve) => {
      this.pending.set(taskId, { resolve, worker: pw, entry: task.entry });
      if (pw.inFlight++ === 0) pw.worker.ref();
      pw.worker.postMessage({ ...task, taskId } satisfies WorkerTask);
    });
  }

  private finish(taskId: number, result: LoadResult): void {
    const p = this.pending.get(taskId);
    if (!p) return;
    this.pending.delete(taskId);
    if (--p.worker.inFlight === 0) p.worker.worker.unref();
    p.resolve(result);
  }

  private fail(pw: PoolWorker, e: Error): void {
    if (pw.dead) return;
    pw.dead = e;
    for (const [id, p] of this.pending) {
      if (p.worker !== pw) continue;
      this.pending.delete(id);
      p.resolve({ ok: false, bad: { id: p.entry.id, file: p.entry.image, reason: `data worker failed: ${e.message}` } });
    }
    pw.inFlight = 0;
    pw.worker.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    // A terminating worker busy in native code (libvips) holds no handle the event loop
    // counts, so the process could end while awaiting its exit: hold the loop open until then.
    const keepAlive = setInterval(() => {}, 1 << 30);
    try {
      await Promise.all(this.workers.map((w) => w.worker.terminate()));
    } finally {
      clearInterval(keepAlive);
    }
  }
}

export class DataLoader {
  readonly dataset: Dataset;
  readonly pipeline: PipelineSpec;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly workers: number;
  readonly prefetch: number;
  readonly dropLast: boolean;
  readonly onBad: 'throw' | 'skip';
  /** Pairs left out with onBad: 'skip', across all epochs so far. */
  readonly skipped: BadSample[] = [];
  private readonly onSkip?: (bad: BadSample) => void;
  private pool?: WorkerPool;

  constructor(o: LoaderOptions) {
    this.dataset = o.dataset;
    this.pipeline = o.pipeline;
    this.batchSize = o.batchSize ?? 1;
    this.shuffle = o.shuffle ?? true;
    this.seed = (o.seed ?? 0) >>> 0;
    this.workers = o.workers ?? 1;
    this.prefetch = o.prefetch ?? 2;
    this.dropLast = o.dropLast ?? false;
    this.onBad = o.onBad ?? 'throw';
    if (o.onSkip) this.onSkip = o.onSkip;
    if (!(Number.isInteger(this.batchSize) && this.batchSize >= 1)) throw new Error(`batchSize must be a positive integer, got ${o.batchSize}`);
    if (!(Number.isInteger(this.workers) && this.workers >= 0)) throw new Error(`workers must be an integer ≥ 0, got ${o.workers}`);
    if (!(Number.isInteger(this.prefetch) && this.prefetch >= 0)) throw new Error(`prefetch must be an integer ≥ 0, got ${o.prefetch}`);
    if (this.dataset.entries.length === 0) throw new Error(`${this.dataset.name}: empty dataset`);
    validatePipeline(this.pipeline);
  }

  get size(): number {
    return this.dataset.entries.length;
  }

  get batchesPerEpoch(): number {
    return this.dropLast ? Math.floor(this.size / this.batchSize) : Math.ceil(this.size / this.batchSize);
  }

  /** Dataset indices in epoch k's order: a function of (seed, k) only. */
  order(epoch: number): number[] {
    const idx = Array.from({ length: this.size }, (_, i) => i);
    return this.shuffle ? new Rng(mixSeed(this.seed, epoch, 0x5eed)).shuffle(idx) : idx;
  }

  /** The seed of the augmentation of dataset item `index` in epoch `epoch`. */
  sampleSeed(epoch: number, index: number): number {
    return mixSeed(this.seed, epoch, index, 0xa09);
  }

  private load(index: number, epoch: number): Promise<LoadResult> {
    const entry = this.dataset.entries[index]!;
    const seed = this.sampleSeed(epoch, index);
    if (this.workers === 0) return loadSample(entry, this.dataset.classes, this.pipeline, seed);
    this.pool ??= new WorkerPool(this.workers, { classes: this.dataset.classes, pipeline: this.pipeline });
    return this.pool.run({ entry, seed });
  }

  /**
   * The batches of epoch k, in order; `startBatch` resumes an epoch part-way (the batches
   * are the same as in an uninterrupted run).
   */
  async *epoch(epoch: number, opts: { startBatch?: number } = {}): AsyncGenerator<Batch> {
    const order = this.order(epoch);
    const count = this.batchesPerEpoch;
    const start = opts.startBatch ?? 0;
    if (!(Number.isInteger(start) && start >= 0 && start <= count)) throw new Error(`startBatch must be in 0-${count}, got ${start}`);
    const window: { batchIndex: number; indices: number[]; results: Promise<LoadResult>[] }[] = [];
    let next = start;
    // While the caller works on batch b, batches b+1 … b+prefetch are being prepared.
    const fill = () => {
      while (next < count && window.length < Math.max(1, this.prefetch)) {
        const indices = order.slice(next * this.batchSize, (next + 1) * this.batchSize);
        window.push({ batchIndex: next, indices, results: indices.map((i) => this.load(i, epoch)) });
        next++;
      }
    };
    fill();
    while (window.length > 0) {
      const b = window.shift()!;
      if (this.prefetch > 0) fill();
      const results = await Promise.all(b.results);
      const samples: Sample[] = [];
      const indices: number[] = [];
      results.forEach((r, i) => {
        if (r.ok) {
          samples.push(r.sample);
          indices.push(b.indices[i]!);
          return;
        }
        if (this.onBad === 'throw') throw new Error(`${r.bad.file}: ${r.bad.reason}`);
        this.skipped.push(r.bad);
        this.onSkip?.(r.bad);
      });
      if (samples.length > 0) yield collate(samples, { indices, epoch, batchIndex: b.batchIndex });
      if (this.prefetch === 0) fill();
    }
  }

  /** Stops the worker threads. The loader starts new ones if used again. */
  async close(): Promise<void> {
    const p = this.pool;
    this.pool = undefined;
    await p?.close();
  }
}
