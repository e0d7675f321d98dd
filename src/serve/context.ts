// What the server's routes share: its configuration, the job queue in front of the inference
// worker, and the models it shows (a list that grows when a model is loaded while it runs).
import type { FcnKind } from '../models/fcn.js';
import type { JobQueue, JobQueueOptions } from './job-queue.js';
import type { ModelCard } from './model-cards.js';
import type { UploadReader } from './routes/bodies.js';

/** `weights`: the models shown side by side, in this order. */
export interface ServeConfig extends JobQueueOptions {
  /** Folders searched for training runs (a folder holding config.json is a run). */
  runRoots: string[];
  maxUploadBytes: number;
  maxPixels: number;
  /** How often a followed run's files are looked at, ms (default 500). */
  pollMs?: number;
  /**
   * Answer only requests addressed to 127.0.0.1, localhost or [::1] (default true): a web page
   * elsewhere cannot reach a local server through a host name of its own (DNS rebinding).
   * Off when the server listens on another address on purpose.
   */
  loopbackOnly?: boolean;
}

/** A model as the page shows it: its card says what it was trained on and how well it does. */
export interface PublicModel extends ModelCard {
  id: number;
  kind: FcnKind;
  title: string;
  width: number;
  style: string;
  /** The weight file's name (not its path). */
  source: string;
  classes: { index: number; name: string; color: string }[];
}

export interface ServeContext {
  config: ServeConfig;
  jobs: JobQueue;
  models: PublicModel[];
  /**
   * While the models are made (the demo trains first): what happens, and the run to follow by
   * its name under the run roots (GET /api/runs/NAME), when one is training.
   */
  preparing: { state: 'training' | 'loading' | 'failed'; message: string; run: string | null } | null;
  /** Loads weight files or known names into the worker and shows them beside the others. */
  addModels(weights: string[]): Promise<PublicModel[]>;
  uploadOf: UploadReader;
}
