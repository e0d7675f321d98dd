import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDataset, readSample, vocDataset, type Dataset } from '../../src/data/datasets.js';
import { readIdList } from '../../src/data/datasets.js';
import { readLabel } from '../../src/data/labels.js';
import { writeLabelPng } from '../../src/io/image.js';
import { evaluate, evaluationToJson, scorePredictions } from '../../src/eval/evaluate.js';
import type { FCN } from '../../src/models/fcn.js';
import { segment } from '../../src/infer/inference.js';
import { needShared, tempDir, vocRoot } from '../data/helpers.js';
import { HAND, SYNTH_CLASSES, handDataset, tinyDataset, tinyModel } from './fixtures.js';

const tmp = tempDir('evaluate');
let dataset: Dataset;
let model: FCN;

before(async () => {
  await tinyDataset(join(tmp.dir, 'synth'));
  dataset = await openDataset(join(tmp.dir, 'synth'), { split: 'trainval' });
  model = tinyModel('fcn8', 7);
});
after(() => {
  model?.dispose();
  tmp.cleanup();
});

/** hist[t][p] counted pixel by pixel over `segment`'s own predictions, void skipped. */
async function naiveHist(ds: Dataset, m: FCN, count = ds.entries.length): Promise<number[][]> {
  const n = ds.classes.names.length;
  const hist = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (const entry of ds.entries.slice(0, count)) {
    const s = await readSample(entry, ds.classes);
    const { labels } = await segment(m, { data: s.image, width: s.width, height: s.height });
    assert.equal(labels.length, s.label.length);
    for (let i = 0; i < labels.length; i++) if (s.label[i] !== 255) hist[s.label[i]!]![labels[i]!]!++;
  }
  return hist;
}

test('evaluate: the confusion matrix equals a pixel-by-pixel count over the same predictions', async () => {
  const sizes = new Set<string>();
  for (const e of dataset.entries) {
    const s = await readSample(e, dataset.classes);
    sizes.add(`${s.width}x${s.height}`);
  }
  assert.ok(sizes.size >= 3, `the fixture mixes image sizes (got ${[...sizes].join(', ')})`);
  const seen: string[] = [];
  const result = await evaluate(model, dataset, { onProgress: (done, total, id) => { seen.push(id); assert.equal(total, dataset.entries.length); assert.equal(done, seen.length); } });
  assert.deepEqual(seen, dataset.entries.map((e) => e.id));
  assert.equal(result.images, dataset.entries.length);
  const naive = await naiveHist(dataset, model);
  assert.deepEqual(result.confusion.toJSON().hist, naive);
  // Every non-void truth pixel is counted exactly once.
  let nonVoid = 0;
  for (const e of dataset.entries) nonVoid += (await readLabel(e.label, dataset.classes)).data.filter((v) => v !== 255).length;
  assert.equal(result.metrics.pixels, nonVoid);
  const diag = naive.reduce((s, row, k) => s + row[k]!, 0);
  assert.equal(result.metrics.pixelAccuracy, diag / nonVoid);
  assert.deepEqual(result.classNames, dataset.classes.names);
});

test('evaluate: --limit counts only the first images', async () => {
  const result = await evaluate(model, dataset, { limit: 2 });
  assert.equal(result.images, 2);
  assert.deepEqual(result.confusion.toJSON().hist, await naiveHist(dataset, model, 2));
  await assert.rejects(evaluate(model, dataset, { limit: 0 }), /limit must be a positive integer/);
});

test('evaluate: a model for other classes is refused', async () => {
  const voc = tinyModel('fcn32', 1, 21);
  try {
    await assert.rejects(evaluate(voc, dataset), (e: Error) => e.message.includes('21 classes') && e.message.includes(`has ${SYNTH_CLASSES}`));
  } finally {
    voc.dispose();
  }
});

test('evaluate: an unreadable image stops with its file named, also when it was read ahead', async () => {
  const root = join(tmp.dir, 'broken');
  cpSync(join(tmp.dir, 'synth'), root, { recursive: true });
  const ds = await openDataset(root, { split: 'trainval' });
  const bad = ds.entries[3]!.image;
  writeFileSync(bad, 'not a jpeg');
  const done: string[] = [];
  await assert.rejects(evaluate(model, ds, { onProgress: (_d, _t, id) => done.push(id) }), (e: Error) => e.message.startsWith(`${bad}: `));
  // The images before it were scored; the failure came when its turn came.
  assert.deepEqual(done, ds.entries.slice(0, 3).map((e) => e.id));
});

test('scorePredictions: predictions equal to the ground truth score 1 on every metric', async () => {
  const pred = join(tmp.dir, 'perfect');
  cpSync(join(tmp.dir, 'synth', 'SegmentationClass'), pred, { recursive: true });
  const r = await scorePredictions({ predictionsDir: pred, dataset });
  assert.equal(r.images, dataset.entries.length);
  assert.equal(r.metrics.pixelAccuracy, 1);
  assert.equal(r.metrics.meanAccuracy, 1);
  assert.equal(r.metrics.meanIoU, 1);
  assert.equal(r.metrics.frequencyWeightedIoU, 1);
  // Off-diagonal counts are all zero.
  r.confusion.toJSON().hist.forEach((row, t) => row.forEach((v, p) => { if (t !== p) assert.equal(v, 0); }));
});

test('scorePredictions: one corrupted image gives the hand-computed numbers', async () => {
  const { root, predictions } = await handDataset(join(tmp.dir, 'hand'));
  const ds = await openDataset(root, { split: 'val' });
  const r = await scorePredictions({ predictionsDir: predictions, dataset: ds });
  assert.deepEqual(r.confusion.toJSON().hist, HAND.hist);
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);
  close(r.metrics.pixelAccuracy, HAND.pixelAccuracy, 'pixel accuracy');
  close(r.metrics.meanAccuracy, HAND.meanAccuracy, 'mean accuracy');
  close(r.metrics.meanIoU, HAND.meanIoU, 'mean IoU');
  close(r.metrics.frequencyWeightedIoU, HAND.frequencyWeightedIoU, 'fwIoU');
  HAND.perClassIoU.forEach((v, k) => (Number.isNaN(v) ? assert.ok(Number.isNaN(r.metrics.perClassIoU[k]!)) : close(r.metrics.perClassIoU[k]!, v, `IoU ${k}`)));
  // JSON keeps the undefined IoU of the absent class as null, and names the classes.
  const json = evaluationToJson(r);
  assert.equal(json.perClass[3]!.iou, null);
  assert.deepEqual(json.perClass.map((c) => c.name), ['background', 'left', 'right', 'unused']);
  assert.deepEqual(json.confusion.hist, HAND.hist);
  assert.deepEqual(JSON.parse(JSON.stringify(json)), json);
});

test('scorePredictions: a prediction of the wrong size is an error naming the file', async () => {
  const pred = join(tmp.dir, 'wrong-size');
  cpSync(join(tmp.dir, 'synth', 'SegmentationClass'), pred, { recursive: true });
  const victim = dataset.entries[2]!;
  const file = join(pred, `${victim.id}.png`);
  const truth = await readLabel(victim.label);
  await writeLabelPng(file, new Uint8Array((truth.width + 1) * truth.height), truth.width + 1, truth.height);
  await assert.rejects(scorePredictions({ predictionsDir: pred, dataset }), (e: Error) =>
    e.message.startsWith(`${file}: `) && e.message.includes(`${truth.width + 1}×${truth.height}`) && e.message.includes(`${truth.width}×${truth.height}`));
});

test('scorePredictions: missing predictions are an error listing the first ids', async () => {
  const pred = join(tmp.dir, 'missing');
  cpSync(join(tmp.dir, 'synth', 'SegmentationClass'), pred, { recursive: true });
  const gone = [dataset.entries[1]!.id, dataset.entries[4]!.id];
  for (const id of gone) rmSync(join(pred, `${id}.png`));
  await assert.rejects(scorePredictions({ predictionsDir: pred, dataset }), (e: Error) =>
    e.message.includes(`2 of ${dataset.entries.length} predictions missing`) && gone.every((id) => e.message.includes(id)));
});

test('scorePredictions: a value that is no class, where the truth is not void, names file and pixel', async () => {
  const { root, predictions } = await handDataset(join(tmp.dir, 'hand-bad'));
  await writeLabelPng(join(predictions, 'b.png'), Uint8Array.from([0, 0, 0, 0, 1, 9, 1, 1]), 4, 2);
  const ds = await openDataset(root, { split: 'val' });
  await assert.rejects(scorePredictions({ predictionsDir: predictions, dataset: ds }), (e: Error) =>
    e.message.startsWith(join(predictions, 'b.png')) && e.message.includes('value 9 at pixel (1, 1)'));
});

const vocSkip = needShared(join(vocRoot, 'ImageSets', 'Segmentation', 'val.txt'));
test('scorePredictions: real VOC labels scored against themselves give 1, and their void is excluded', { skip: vocSkip }, async () => {
  const ids = (await readIdList(join(vocRoot, 'ImageSets', 'Segmentation', 'val.txt'))).slice(0, 12);
  const ds = await vocDataset(vocRoot, { split: { ids } });
  const pred = join(tmp.dir, 'voc-pred');
  mkdirSync(pred);
  for (const id of ids) writeFileSync(join(pred, `${id}.png`), readFileSync(join(vocRoot, 'SegmentationClass', `${id}.png`)));
  assert.equal(readdirSync(pred).length, ids.length);
  const r = await scorePredictions({ predictionsDir: pred, dataset: ds });
  assert.equal(r.metrics.pixelAccuracy, 1);
  assert.equal(r.metrics.meanIoU, 1);
  let total = 0, nonVoid = 0;
  for (const e of ds.entries) {
    const l = await readLabel(e.label);
    total += l.data.length;
    nonVoid += l.data.filter((v) => v !== 255).length;
  }
  assert.ok(nonVoid < total, 'VOC labels have void borders');
  assert.equal(r.metrics.pixels, nonVoid);
  assert.ok(existsSync(pred));
});
