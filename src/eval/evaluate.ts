// Evaluation of a model on a dataset split, and scoring of label maps made by other tools,
// both through the same confusion matrix so their numbers compare on equal terms.
//
// Each image is segmented at its own size, so the ground truth is never resized (resizing a
// label map would invent or drop pixels of small objects and change the metrics); void (255)
// truth pixels are left out, as the paper's score.py does. The split streams one image at a
// time: only the confusion matrix grows, never a list of predictions. Each image goes through
// the same inference as fcn predict (infer/inference.ts: whole, or in tiles when large), which
// releases the engine's idle buffers before an image of another size, so memory stays flat
// over a split of many image sizes (VOC val, full-width FCN-8s: 1.7 GB peak, was 3.5).
import { existsSync } from 'node:fs';
import { extname, join } from 'node:path';
import { native, type Tensor } from '../engine/binding.js';
import { engineConfig, type InferencePrecision } from '../engine/config.js';
import { readLabel } from '../data/labels.js';
import { readSample, type Dataset, type SampleEntry } from '../data/datasets.js';
import type { Means } from '../data/transforms.js';
import type { LabelMap } from '../data/mat.js';
import { checkPixelLimit, imageSize } from '../io/image.js';
import type { FCN } from '../models/fcn.js';
import { segmentImage } from '../infer/inference.js';
import { ConfusionMatrix, type Metrics } from '../report/confusion.js';

export interface EvaluationResult {
  metrics: Metrics;
  confusion: ConfusionMatrix;
  /** Number of images scored. */
  images: number;
  classNames: string[];
}

export interface EvaluateOptions {
  precision?: InferencePrecision;
  means?: Means;
  /** Called after each image with the count done, the total and the image's id. */
  onProgress?: (done: number, total: number, id: string) => void;
  /** Only the first N images of the split. */
  limit?: number;
  /** Refuse images (and label PNGs) with more decoded pixels than this, before decoding. */
  maxPixels?: number;
  /** Activation memory for one image (see infer/inference.ts); larger images run in tiles. */
  memoryBudget?: number;
}

function selectEntries(dataset: Dataset, limit: number | undefined): SampleEntry[] {
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) throw new Error(`limit must be a positive integer, got ${limit}`);
  const entries = limit === undefined ? dataset.entries : dataset.entries.slice(0, limit);
  if (entries.length === 0) throw new Error(`${dataset.name}: the split has no images`);
  return entries;
}

/**
 * Reads items one ahead of their use: item i+1 is decoding (sharp works on libuv's thread
 * pool) while the caller works on item i. A failed read surfaces only when its item is
 * awaited; until then the rejection is marked as handled so Node does not report it early.
 */
async function* readAhead<T>(count: number, read: (i: number) => Promise<T>): AsyncGenerator<T> {
  const start = (i: number): Promise<T> => {
    const p = read(i);
    p.catch(() => undefined);
    return p;
  };
  let next = count > 0 ? start(0) : undefined;
  for (let i = 0; i < count; i++) {
    const current = next!;
    next = i + 1 < count ? start(i + 1) : undefined;
    yield await current;
  }
}

function checkClassCount(what: string, numClasses: number, dataset: Dataset): void {
  const n = dataset.classes.names.length;
  if (numClasses !== n) throw new Error(`${what} predicts ${numClasses} classes but ${dataset.name} has ${n} (${dataset.classes.names.slice(0, 4).join(', ')}${n > 4 ? ', …' : ''})`);
}

/**
 * The labels the logits (N×classes×H×W) predict, counted into `cm` against `truth` (N×H×W):
 * how training, validation and evaluation all score a batch.
 */
export function scoreLogits(cm: ConfusionMatrix, logits: Tensor, truth: Uint8Array): Uint8Array {
  const pred = native.argmax(logits);
  try {
    const labels = pred.toArray() as Uint8Array;
    cm.update(truth, labels);
    return labels;
  } finally {
    pred.dispose();
  }
}

/** Segments every image of the dataset and scores the predictions against its labels. */
export async function evaluate(model: FCN, dataset: Dataset, options: EvaluateOptions = {}): Promise<EvaluationResult> {
  checkClassCount(`model ${model.kind}`, model.numClasses, dataset);
  const entries = selectEntries(dataset, options.limit);
  const precision = options.precision ?? engineConfig().precision;
  const means = options.means ?? model.means;
  const confusion = new ConfusionMatrix(model.numClasses);
  // The image and the ground truth are both checked against the pixel limit from their
  // headers before either is decoded (a label PNG can be a decompression bomb as well).
  const read = async (i: number) => {
    const entry = entries[i]!;
    await checkLabelPixels(entry.label, options.maxPixels);
    const { width, height, image, label } = await readSample(entry, dataset.classes, options.maxPixels);
    return { entry, image: { data: image, width, height }, label };
  };
  let done = 0;
  for await (const { entry, image, label } of readAhead(entries.length, read)) {
    const { labels } = segmentImage(model, image, { precision, means, name: entry.image, ...(options.memoryBudget !== undefined ? { memoryBudget: options.memoryBudget } : {}) });
    confusion.update(label, labels);
    done++;
    options.onProgress?.(done, entries.length, entry.id);
  }
  return { metrics: confusion.compute(), confusion, images: done, classNames: [...dataset.classes.names] };
}

/** A PNG label map's declared size checked against the pixel limit (SBD's .mat files are small). */
async function checkLabelPixels(file: string, maxPixels: number | undefined): Promise<void> {
  if (extname(file).toLowerCase() !== '.png') return;
  const size = await imageSize(file);
  checkPixelLimit(file, size.width, size.height, maxPixels);
}

export interface ScoreOptions {
  /** Folder holding `<id>.png` for every id of the split (palette or greyscale PNGs of class indices). */
  predictionsDir: string;
  dataset: Dataset;
  onProgress?: (done: number, total: number, id: string) => void;
  limit?: number;
  /** Refuse label PNGs with more decoded pixels than this, before decoding. */
  maxPixels?: number;
}

/** The path of each id's prediction; an error listing the first few ids that have none. */
export function predictionFiles(predictionsDir: string, entries: SampleEntry[]): string[] {
  const files = entries.map((e) => join(predictionsDir, `${e.id}.png`));
  const missing = entries.filter((_, i) => !existsSync(files[i]!)).map((e) => e.id);
  if (missing.length > 0) {
    const shown = missing.slice(0, 5).join(', ');
    throw new Error(`${predictionsDir}: ${missing.length} of ${entries.length} predictions missing (no <id>.png for ${shown}${missing.length > 5 ? ', …' : ''})`);
  }
  return files;
}

/**
 * Scores label maps made elsewhere against the dataset's ground truth, the same way as
 * {@link evaluate}. A prediction is read as the ground truth is (palette index, grey value, or
 * a colour of the dataset's classes), must have the ground truth's size, and may only hold
 * class indices where the truth is not void.
 */
export async function scorePredictions(options: ScoreOptions): Promise<EvaluationResult> {
  const { dataset, predictionsDir } = options;
  const entries = selectEntries(dataset, options.limit);
  const files = predictionFiles(predictionsDir, entries);
  const classes = dataset.classes;
  const confusion = new ConfusionMatrix(classes.names.length);
  const read = async (i: number): Promise<[LabelMap, LabelMap]> => {
    await Promise.all([checkLabelPixels(entries[i]!.label, options.maxPixels), checkLabelPixels(files[i]!, options.maxPixels)]);
    return Promise.all([readLabel(entries[i]!.label, classes), readLabel(files[i]!, classes)]);
  };
  let done = 0;
  for await (const [truth, pred] of readAhead(entries.length, read)) {
    const entry = entries[done]!, file = files[done]!;
    if (truth.width !== pred.width || truth.height !== pred.height) {
      throw new Error(`${file}: prediction is ${pred.width}×${pred.height} but the ground truth ${entry.label} is ${truth.width}×${truth.height}`);
    }
    checkPrediction(file, truth.data, pred.data, pred.width, classes.names.length);
    confusion.update(truth.data, pred.data);
    done++;
    options.onProgress?.(done, entries.length, entry.id);
  }
  return { metrics: confusion.compute(), confusion, images: done, classNames: [...classes.names] };
}

/** A prediction value that is no class, where it counts, is an error naming file and pixel. */
function checkPrediction(file: string, truth: Uint8Array, pred: Uint8Array, width: number, numClasses: number): void {
  for (let i = 0; i < pred.length; i++) {
    if (pred[i]! >= numClasses && truth[i]! < numClasses) {
      throw new Error(`${file}: value ${pred[i]} at pixel (${i % width}, ${Math.floor(i / width)}) is not a class index (0-${numClasses - 1}) but the ground truth there is not void`);
    }
  }
}

/** NaN (a class in neither truth nor prediction) becomes null, which JSON can hold. */
const num = (v: number): number | null => (Number.isNaN(v) ? null : v);

/** The result as plain JSON: the four metrics, each class's IoU and accuracy, the confusion matrix. */
export function evaluationToJson(result: EvaluationResult) {
  const { metrics: m, confusion } = result;
  const { hist } = confusion.toJSON();
  return {
    pixelAccuracy: num(m.pixelAccuracy),
    meanAccuracy: num(m.meanAccuracy),
    meanIoU: num(m.meanIoU),
    frequencyWeightedIoU: num(m.frequencyWeightedIoU),
    pixels: m.pixels,
    images: result.images,
    perClass: m.perClassIoU.map((iou, k) => ({
      index: k,
      name: result.classNames[k] ?? `class ${k}`,
      iou: num(iou),
      accuracy: num(m.perClassAccuracy[k]!),
      pixels: hist[k]!.reduce((a, b) => a + b, 0),
    })),
    confusion: { numClasses: confusion.numClasses, rows: 'truth' as const, columns: 'prediction' as const, hist },
  };
}
