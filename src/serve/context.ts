// What the server's routes share: its configuration, the job queue in front of the inference
// worker, and the models it shows (a list that grows when a model is loaded while it runs).
import type { InferencePrecision } from '../engine/config.js';
import type { FcnKind } from '../models/fcn.js';
import type { JobQueue } from './job-queue.js';
import type { UploadReader } from './routes/bodies.js';

export interface ServeConfig {
  /** Weight files (any format) or known names: the models shown side by side, in this order. */
  weights: string[];
  /** Folders searched for training runs (a folder holding config.json is a run). */
  runRoots: string[];
  maxUploadBytes: number;
  maxPixels: number;
  /** Pictures that may wait while one is segmented; more get 503. */
  queueLimit: number;
  threads: number;
  precision: InferencePrecision;
  /** Tests only: the worker waits for a permit from this gate before each job (see WorkerInit.gate). */
  gate?: SharedArrayBuffer;
  /** How often a followed run's files are looked at, ms (default 500). */
  pollMs?: number;
  /**
   * Answer only requests addressed to 127.0.0.1, localhost or [::1] (default true): a web page
   * elsewhere cannot reach a local server through a host name of its own (DNS rebinding).
   * Off when the server listens on another address on purpose.
   */
  loopbackOnly?: boolean;
}

export interface PublicModel {
  id: number;
  kind: FcnKind;
  title: string;
  width: number;
  style: string;
  /** The weight file's name (not its path). */
  source: string;
  classes: { index: number; name: string; color: string }[];
  /** What it was trained on, its validation mean IoU (0-1) when known, and where that comes from. */
  trainedOn: string;
  valMeanIoU: number | null;
  iouSource: string;
}

/** While the models are made (the demo trains first): what happens, and the run to follow. */
export interface Preparing {
  state: 'training' | 'loading' | 'failed';
  message: string;
  /** The run's name under the run roots (GET /api/runs/NAME), when one is training. */
  run: string | null;
}

export interface ServeContext {
  config: ServeConfig;
  jobs: JobQueue;
  models: PublicModel[];
  preparing: Preparing | null;
  /** Loads weight files or known names into the worker and shows them beside the others. */
  addModels(weights: string[]): Promise<PublicModel[]>;
  uploadOf: UploadReader;
}
