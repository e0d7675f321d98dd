// The server's side of inference: one worker thread that holds the models, and a bounded
// queue in front of it. One job runs at a time (the engine already uses every core for one
// forward pass); up to `queueLimit` more wait; beyond that a request is refused at once with
// 503 and a Retry-After estimated from recent job times, instead of piling up memory and
// latency. If the worker dies, the jobs it held fail with 500 and a new worker is started.
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../data/loader.js';
import { HttpError } from './errors.js';
import type { RgbImage } from '../io/image.js';
import type { Job, ModelInfo, SegmentAnswer, WorkerInit, WorkerMessage } from './protocol.js';

type Answer<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;
type JobInput = { type: 'segment'; rgb: RgbImage; models: number[]; top3: boolean } | { type: 'stages'; rgb: RgbImage; model: number } | { type: 'load'; weights: string[] };

interface Pending {
  job: Job;
  resolve: (m: WorkerMessage) => void;
  reject: (e: Error) => void;
  startedAt?: number;
}

export interface JobQueueOptions extends WorkerInit {
  /** Jobs that may wait while one runs; more are refused with 503. */
  queueLimit: number;
}

export class JobQueue {
  models: ModelInfo[] = [];
  private worker: Worker | null = null;
  private current: Pending | null = null;
  private readonly waiting: Pending[] = [];
  private nextId = 1;
  private completed = 0;
  private refused = 0;
  private restarts = 0;
  private averageMs: number | null = null;
  private closed = false;
  private ready: Promise<void> = Promise.resolve();

  private constructor(private readonly options: JobQueueOptions) {}

  /**
   * Starts the worker and waits until it has loaded every model (or failed to); with no
   * models to load, returns at once (jobs wait for the worker).
   */
  static async start(options: JobQueueOptions): Promise<JobQueue> {
    const queue = new JobQueue({ ...options, weights: [...options.weights] });
    queue.ready = queue.spawn();
    if (options.weights.length > 0) await queue.ready;
    else queue.ready.catch(() => {}); // said by the first job
    return queue;
  }

  private spawn(): Promise<void> {
    const init: WorkerInit = { weights: this.options.weights, threads: this.options.threads, precision: this.options.precision, gate: this.options.gate };
    const worker = startWorker(new URL('./worker.js', import.meta.url), init);
    this.worker = worker;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') {
          started = true;
          this.models = m.models;
          resolve();
          this.dispatch();
        } else if (m.type === 'fatal') {
          reject(new Error(m.message));
          void worker.terminate();
        } else {
          this.finish(m);
        }
      });
      const lost = (why: string) => {
        if (this.worker !== worker) return;
        this.worker = null;
        if (!started) return reject(new Error(`the inference worker stopped while loading the models (${why})`));
        // The jobs it held are lost: fail them clearly rather than leave them hanging.
        const error = new HttpError(500, `the inference worker stopped (${why}); it is being restarted: try again`);
        this.current?.reject(error);
        this.current = null;
        if (this.closed) return;
        this.restarts++;
        this.ready = this.spawn().catch((e: Error) => {
          for (const p of this.waiting.splice(0)) p.reject(new HttpError(500, `the inference worker cannot restart: ${e.message}`));
        });
      };
      worker.on('error', (e) => lost(e.message));
      worker.on('exit', (code) => lost(`exit code ${code}`));
    });
  }

  /** recentJobMs: the mean job time in ms over the recent jobs (exponential average), null before the first. */
  stats() {
    const recentJobMs = this.averageMs === null ? null : Math.round(this.averageMs);
    return { running: this.current ? 1 : 0, waiting: this.waiting.length, queueLimit: this.options.queueLimit, completed: this.completed, refused: this.refused, workerRestarts: this.restarts, recentJobMs };
  }

  /** Label maps of `models` on one picture (with the top-3 tables when asked). */
  async segment(rgb: RgbImage, models: number[], top3: boolean): Promise<SegmentAnswer[]> {
    return (await this.submit({ type: 'segment', rgb, models, top3 }, 'segmented')).answers;
  }

  /** The score maps of each stage of one model on one picture. */
  stages(rgb: RgbImage, model: number): Promise<Answer<'staged'>> {
    return this.submit({ type: 'stages', rgb, model }, 'staged');
  }

  /** Loads more models into the worker (in turn with the pictures); a restarted worker loads them too. */
  async load(weights: string[]): Promise<ModelInfo[]> {
    await this.ready;
    const m = await this.submit({ type: 'load', weights }, 'loaded', false);
    this.options.weights = [...this.options.weights, ...weights];
    this.models.push(...m.models);
    return m.models;
  }

  /**
   * Throws the 503 a new job would get now (the queue is full), so that a request can be
   * refused before its upload is decoded; submit() checks again.
   */
  admit(): void {
    if (this.closed) throw new HttpError(503, 'the server is shutting down');
    const busy = this.current !== null || this.worker === null;
    if (busy && this.waiting.length >= this.options.queueLimit) {
      this.refused++;
      const seconds = Math.max(1, Math.ceil(((this.averageMs ?? 1000) * (this.waiting.length + 1)) / 1000));
      const n = this.waiting.length;
      throw new HttpError(503, `the server is busy: ${n} picture${n === 1 ? ' already waits' : 's already wait'} for the model (--queue ${this.options.queueLimit}); retry in ${seconds} s`, { 'retry-after': String(seconds) });
    }
  }

  /** Queues a job; its answer must be of type `answer`. */
  private async submit<T extends WorkerMessage['type']>(input: JobInput, answer: T, admitted = true): Promise<Answer<T>> {
    if (admitted) this.admit();
    const job = { ...input, id: this.nextId++ } as Job;
    const m = await new Promise<WorkerMessage>((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.dispatch();
    });
    if (m.type !== answer) throw new Error(`unexpected answer ${m.type}`);
    return m as Answer<T>;
  }

  private dispatch(): void {
    if (this.current || !this.worker || this.waiting.length === 0) return;
    const next = this.waiting.shift()!;
    next.startedAt = performance.now();
    this.current = next;
    this.worker.postMessage(next.job);
  }

  private finish(m: WorkerMessage): void {
    const p = this.current;
    if (!p || !('id' in m) || m.id !== p.job.id) return;
    this.current = null;
    const ms = performance.now() - p.startedAt!;
    this.averageMs = this.averageMs === null ? ms : 0.7 * this.averageMs + 0.3 * ms;
    this.completed++;
    if (m.type === 'failed') p.reject(new HttpError(500, `${p.job.type === 'load' ? 'loading failed' : 'inference failed'}: ${m.message}`));
    else p.resolve(m);
    this.dispatch();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.waiting.splice(0)) p.reject(new HttpError(503, 'the server is shutting down'));
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
    this.current?.reject(new HttpError(503, 'the server is shutting down'));
    this.current = null;
  }
}
