// Messages between the server and its inference worker.
import type { InferencePrecision } from '../engine/config.js';
import type { RgbImage } from '../io/image.js';
import type { ClassShare } from '../report/viz.js';
import type { FcnKind, FcnStyle, StageMapName } from '../models/fcn.js';

export interface WorkerInit {
  /** Weight files (any format) or known names, loaded in this order. */
  weights: string[];
  threads: number;
  precision: InferencePrecision;
  /**
   * Tests only: a gate of one Int32 of permits. Before each job the worker waits for a permit
   * and takes it, so a test holds a job in flight for exactly as long as it needs (to observe
   * the queue and the event loop meanwhile) and lets jobs through one by one.
   */
  gate?: SharedArrayBuffer;
}

export interface ModelInfo {
  kind: FcnKind;
  style: FcnStyle;
  width: number;
  numClasses: number;
  classNames: string[];
  /** "#rrggbb" per class: the colours of the label PNGs. */
  classColors: string[];
}

export type Job =
  | { type: 'segment'; id: number; rgb: RgbImage; models: number[]; top3: boolean }
  | { type: 'stages'; id: number; rgb: RgbImage; model: number }
  | { type: 'load'; id: number; weights: string[] };

export interface SegmentAnswer {
  model: number;
  png: Uint8Array;
  shares: ClassShare[];
  ms: number;
  top3?: Uint8Array;
}

/** One step of the "How it works" walk through the network. */
export interface StageView {
  name: StageMapName;
  stride: number;
  /** The winning class of each cell of the map at its own resolution, cropped to the picture. */
  coarse: { width: number; height: number; png: Uint8Array };
  /** The winning class after bilinear upsampling of the scores to the picture's size. */
  upsampled: Uint8Array;
  /** Classes present in the upsampled map, largest first. */
  shares: ClassShare[];
}

export interface StagesAnswer {
  width: number;
  height: number;
  views: StageView[];
  /** The model's own output: identical to segment()'s labels. */
  final: { png: Uint8Array; shares: ClassShare[] };
  ms: number;
}

export type WorkerMessage =
  | { type: 'ready'; models: ModelInfo[] }
  | { type: 'fatal'; message: string }
  | { type: 'loaded'; id: number; models: ModelInfo[] }
  | { type: 'segmented'; id: number; answers: SegmentAnswer[] }
  | ({ type: 'staged'; id: number } & StagesAnswer)
  | { type: 'failed'; id: number; message: string };
