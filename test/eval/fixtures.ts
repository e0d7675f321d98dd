// Small datasets, models and an in-process CLI runner shared by the evaluation and
// inference tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { synthesizeDataset, SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { readLabel } from '../../src/data/labels.js';
import { writeLabelPng } from '../../src/io/image.js';
import { FCN, type FcnKind } from '../../src/models/fcn.js';
import { saveWeights } from '../../src/models/weights.js';
import { main } from '../../src/cli/main.js';
import { captureOutput } from '../data/helpers.js';

export const SYNTH_CLASSES = SYNTH_CLASS_NAMES.length;

/**
 * A synthetic VOC-layout dataset of `count` 64×64 scenes, where two scenes are cropped to
 * other, non-square sizes (image and label alike) so that "each image at its own size" and
 * width/height mix-ups are exercised.
 */
export async function tinyDataset(root: string, count = 6, seed = 3): Promise<{ root: string; ids: string[] }> {
  const r = await synthesizeDataset({ out: root, count, seed, size: 64 });
  const crops: [number, number][] = [[64, 40], [36, 64]];
  const ids = [...r.train, ...r.val].sort();
  for (let k = 0; k < crops.length && k < ids.length; k++) {
    const [w, h] = crops[k]!;
    const id = ids[k]!;
    const img = join(root, 'JPEGImages', `${id}.jpg`), lab = join(root, 'SegmentationClass', `${id}.png`);
    const cropped = await sharp(img).extract({ left: 0, top: 0, width: w, height: h }).jpeg({ quality: 95 }).toBuffer();
    writeFileSync(img, cropped);
    const full = await readLabel(lab);
    const out = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) out.set(full.data.subarray(y * full.width, y * full.width + w), y * w);
    await writeLabelPng(lab, out, w, h);
  }
  return { root, ids };
}

/** A narrow random-initialised model for the synthetic classes, saved to `file`. */
export function tinyModel(kind: FcnKind = 'fcn8', seed = 7, numClasses = SYNTH_CLASSES): FCN {
  const model = new FCN({ kind, width: 0.0625, numClasses });
  model.initialize(seed);
  return model;
}

export function saveTinyModel(file: string, kind: FcnKind = 'fcn8', seed = 7, numClasses = SYNTH_CLASSES): string {
  const model = tinyModel(kind, seed, numClasses);
  try {
    saveWeights(file, model);
  } finally {
    model.dispose();
  }
  return file;
}

/**
 * A hand-made 4-class dataset of two 4×2 images (VOC layout) whose predictions are known:
 *   a: truth  0 0 1 1 / 0 0 2 255   prediction = truth (void predicted as 2)
 *   b: truth  0 0 0 0 / 1 1 1 1     prediction 0 0 1 1 / 1 1 2 0  (the corrupted one)
 * Class 3 ("unused") is in neither truth nor prediction.
 */
export async function handDataset(root: string): Promise<{ root: string; predictions: string }> {
  const w = 4, h = 2;
  const truth = { a: [0, 0, 1, 1, 0, 0, 2, 255], b: [0, 0, 0, 0, 1, 1, 1, 1] };
  const pred = { a: [0, 0, 1, 1, 0, 0, 2, 2], b: [0, 0, 1, 1, 1, 1, 2, 0] };
  for (const d of ['JPEGImages', 'SegmentationClass', join('ImageSets', 'Segmentation'), 'pred']) mkdirSync(join(root, d), { recursive: true });
  for (const id of ['a', 'b'] as const) {
    await sharp({ create: { width: w, height: h, channels: 3, background: { r: 90, g: 120, b: 150 } } }).jpeg().toFile(join(root, 'JPEGImages', `${id}.jpg`));
    await writeLabelPng(join(root, 'SegmentationClass', `${id}.png`), Uint8Array.from(truth[id]), w, h);
    await writeLabelPng(join(root, 'pred', `${id}.png`), Uint8Array.from(pred[id]), w, h);
  }
  writeFileSync(join(root, 'ImageSets', 'Segmentation', 'val.txt'), 'a\nb\n');
  writeFileSync(join(root, 'classes.json'), JSON.stringify({ classes: ['background', 'left', 'right', 'unused'].map((name) => ({ name })) }));
  return { root, predictions: join(root, 'pred') };
}

/**
 * The hand-computed metrics of {@link handDataset}. Confusion (rows truth, columns prediction):
 *   [6 2 0 0; 1 4 1 0; 0 0 1 0; 0 0 0 0], 15 pixels, 11 on the diagonal.
 *   rows 8 6 1, columns 7 6 2. Recall 6/8, 4/6, 1/1. IoU 6/9, 4/8, 1/2, class 3 undefined.
 */
export const HAND = {
  hist: [[6, 2, 0, 0], [1, 4, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
  pixelAccuracy: 11 / 15,
  meanAccuracy: (3 / 4 + 2 / 3 + 1) / 3, // 29/36
  meanIoU: (2 / 3 + 1 / 2 + 1 / 2) / 3, // 5/9
  frequencyWeightedIoU: (8 / 15) * (2 / 3) + (6 / 15) * (1 / 2) + (1 / 15) * (1 / 2), // 53/90
  perClassIoU: [2 / 3, 1 / 2, 1 / 2, NaN],
};

/** Runs `fcn ...` in-process, capturing what it writes to stdout and stderr. */
export const runCli = (...argv: string[]) => captureOutput(() => main(argv));

/** Lines of text, without the empty one after the last newline. */
export const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);
