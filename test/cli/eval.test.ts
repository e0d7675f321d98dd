import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { decode as decodePng } from 'fast-png';
import { join } from 'node:path';
import { openDataset } from '../../src/data/datasets.js';
import { evaluate } from '../../src/eval/evaluate.js';
import { loadModel } from '../../src/models/weights.js';
import { tempDir } from '../data/helpers.js';
import { HAND, handDataset, lines, runCli, saveTinyModel, SYNTH_CLASSES, tinyDataset } from '../eval/fixtures.js';
import { paperScores, scorePython, type LabelPair } from '../reference/score.js';
import { requires } from '../prereq.js';

const tmp = tempDir('cli-eval');
const data = join(tmp.dir, 'synth');
const weights = join(tmp.dir, 'fcn8.safetensors');
let hand: { root: string; predictions: string };

before(async () => {
  await tinyDataset(data);
  saveTinyModel(weights, 'fcn8', 11);
  hand = await handDataset(join(tmp.dir, 'hand'));
});
after(() => tmp.cleanup());

test('fcn eval --json: the metrics and confusion matrix of the evaluate API, with class names', async () => {
  const r = await runCli('eval', '--weights', weights, '--data', data, '--split', 'trainval', '--json');
  assert.equal(r.code, 0, r.err);
  const json = JSON.parse(r.out);
  const model = await loadModel(weights);
  try {
    const ds = await openDataset(data, { split: 'trainval' });
    const api = await evaluate(model, ds);
    assert.deepEqual(json.confusion.hist, api.confusion.toJSON().hist);
    assert.equal(json.meanIoU, api.metrics.meanIoU);
    assert.equal(json.pixelAccuracy, api.metrics.pixelAccuracy);
    assert.equal(json.images, ds.entries.length);
    assert.deepEqual(json.perClass.map((c: { name: string }) => c.name), ds.classes.names);
  } finally {
    model.dispose();
  }
  assert.equal(json.model, 'fcn8');
  assert.equal(json.split, 'trainval');
  // Progress and the final summary go to stderr, never into the JSON.
  assert.match(r.err, /eval .*6\/6/);
});

test('fcn eval: a table of the four metrics and every class; --out writes the same JSON as --json', async () => {
  const out = join(tmp.dir, 'reports', 'nested', 'metrics.json');
  const r = await runCli('eval', '--weights', weights, '--data', data, '--split', 'trainval', '--out', out, '--limit', '4');
  assert.equal(r.code, 0, r.err);
  for (const label of ['pixel accuracy', 'mean accuracy', 'mean IoU', 'frequency-weighted IoU']) assert.match(r.out, new RegExp(label));
  for (const name of ['background', 'disc', 'box', 'triangle', 'ring', 'cross']) assert.match(r.out, new RegExp(`^${name} +[0-9—]`, 'm'));
  assert.match(r.out, /4 images/);
  const written = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(written.images, 4);
  const j = await runCli('eval', '--weights', weights, '--data', data, '--split', 'trainval', '--limit', '4', '--json');
  assert.deepEqual(JSON.parse(j.out), written);
});

test('fcn eval --predictions: hand-computed numbers, and 1 for predictions equal to the truth', async () => {
  const r = await runCli('eval', '--predictions', hand.predictions, '--data', hand.root, '--split', 'val', '--json');
  assert.equal(r.code, 0, r.err);
  const json = JSON.parse(r.out);
  assert.deepEqual(json.confusion.hist, HAND.hist);
  for (const key of ['pixelAccuracy', 'meanAccuracy', 'meanIoU', 'frequencyWeightedIoU'] as const) {
    assert.ok(Math.abs(json[key] - HAND[key]) < 1e-12, `${key}: ${json[key]} vs ${HAND[key]}`);
  }
  assert.equal(json.perClass[3].iou, null);
  assert.equal(json.predictions, hand.predictions);

  const perfect = join(tmp.dir, 'perfect');
  cpSync(join(data, 'SegmentationClass'), perfect, { recursive: true });
  const p = await runCli('eval', '--predictions', perfect, '--data', data, '--split', 'train', '--json');
  assert.equal(p.code, 0, p.err);
  const pj = JSON.parse(p.out);
  assert.equal(pj.pixelAccuracy, 1);
  assert.equal(pj.meanIoU, 1);
  assert.equal(pj.images, (await openDataset(data, { split: 'train' })).entries.length);
});

/** A palette label PNG's class indices, decoded by fast-png (not the project's reader). */
function paletteIndices(file: string): { data: Uint8Array; width: number; height: number } {
  const png = decodePng(readFileSync(file));
  assert.ok(png.channels === 1 && png.palette, `${file}: a palette PNG`);
  return { data: Uint8Array.from(png.data as Uint8Array), width: png.width, height: png.height };
}

test('fcn eval --precision int8: the metrics of the int8 model\'s label maps, as the paper\'s score.py computes them', { timeout: 600_000, skip: requires(scorePython() !== null, 'python3 with NumPy (test/reference/score.py)') }, async () => {
  const int8 = join(tmp.dir, 'fcn8-int8.safetensors');
  const q = await runCli('quantize', '--weights', weights, '--calib', join(data, 'JPEGImages'), '--images', '6', '--out', int8);
  assert.equal(q.code, 0, q.err);
  const r = await runCli('eval', '--weights', int8, '--data', data, '--split', 'trainval', '--precision', 'int8', '--json');
  assert.equal(r.code, 0, r.err);
  const json = JSON.parse(r.out);
  assert.equal(json.precision, 'int8');

  // Each image's int8 label map as fcn predict writes it, scored with truth by score.py.
  const ds = await openDataset(data, { split: 'trainval' });
  const pairs: LabelPair[] = [];
  for (const e of ds.entries) {
    const labels = join(tmp.dir, 'int8-labels', `${e.id}.png`);
    const p = await runCli('predict', '--weights', int8, '--image', e.image, '--precision', 'int8', '--labels', labels);
    assert.equal(p.code, 0, p.err);
    const truth = paletteIndices(e.label), pred = paletteIndices(labels);
    assert.deepEqual([pred.width, pred.height], [truth.width, truth.height], e.id);
    pairs.push({ truth: truth.data, pred: pred.data, width: truth.width, height: truth.height });
  }
  const predicted = new Set(pairs.flatMap((p) => [...new Set(p.pred)]));
  assert.ok(predicted.size >= 2, `the model predicts ${predicted.size} class(es): too few to tell the metrics apart`);
  const paper = paperScores(SYNTH_CLASSES, pairs);
  assert.equal(json.images, paper.images);
  assert.deepEqual(json.confusion.hist, paper.hist);
  const close = (a: number | null, b: number | null, what: string) =>
    assert.ok(a === b || (a !== null && b !== null && Math.abs(a - b) <= 1e-12), `${what}: fcn eval ${a}, score.py ${b}`);
  close(json.pixelAccuracy, paper.overallAccuracy, 'pixel accuracy');
  close(json.meanAccuracy, paper.meanAccuracy, 'mean accuracy');
  close(json.meanIoU, paper.meanIU, 'mean IoU');
  close(json.frequencyWeightedIoU, paper.fwavacc, 'frequency-weighted IoU');
  json.perClass.forEach((c: { iou: number | null; accuracy: number | null }, k: number) => {
    close(c.iou, paper.perClassIU[k]!, `IoU of class ${k}`);
    close(c.accuracy, paper.perClassAccuracy[k]!, `accuracy of class ${k}`);
  });
});

test('fcn eval: every bad argument prints one clear line and exits non-zero', async () => {
  const garbage = join(tmp.dir, 'garbage.safetensors');
  writeFileSync(garbage, 'this is not a weights file at all');
  const voc = saveTinyModel(join(tmp.dir, 'voc21.safetensors'), 'fcn32', 2, 21);
  const aFile = join(tmp.dir, 'a-file');
  writeFileSync(aFile, 'x');
  const incomplete = join(tmp.dir, 'incomplete');
  cpSync(join(data, 'SegmentationClass'), incomplete, { recursive: true });
  const ds = await openDataset(data, { split: 'val' });
  rmSync(join(incomplete, `${ds.entries[0]!.id}.png`));
  const emptyDir = join(tmp.dir, 'empty');
  mkdirSync(emptyDir);

  const cases: [string[], RegExp][] = [
    [['--data', data], /--weights .* or --predictions .* is required/],
    [['--weights', weights, '--predictions', hand.predictions, '--data', data], /not both/],
    [['--weights', weights], /--data is required/],
    [['--weights', join(tmp.dir, 'nope.safetensors'), '--data', data], /--weights '.*nope\.safetensors': no such file/],
    [['--weights', garbage, '--data', data], /garbage\.safetensors: .*safetensors/],
    [['--weights', voc, '--data', data], /predicts 21 classes but .* has 6/],
    [['--weights', weights, '--data', join(tmp.dir, 'no-such-root')], /--data '.*no-such-root': no such folder/],
    [['--weights', weights, '--data', emptyDir], /neither a VOC root/],
    [['--weights', weights, '--data', data, '--split', 'vall'], /unknown split 'vall' .*available: train, trainval, val/],
    [['--weights', weights, '--data', data, '--split', join(tmp.dir, 'list.txt')], /--split '.*list\.txt': no such file/],
    [['--weights', weights, '--data', data, '--out', join(aFile, 'metrics.json')], /--out '.*a-file\/metrics\.json': '.*a-file' is a file, not a folder/],
    [['--weights', weights, '--data', data, '--limit', '0'], /--limit must be a positive integer, got '0'/],
    [['--weights', weights, '--data', data, '--precision', 'fp8'], /--precision must be float32, bfloat16, int8 or auto, got 'fp8'/],
    [['--weights', weights, '--data', data, '--bogus'], /unknown option '--bogus'/],
    [['--predictions', join(tmp.dir, 'no-preds'), '--data', data], /--predictions '.*no-preds': no such folder/],
    [['--predictions', incomplete, '--data', data, '--split', 'val'], new RegExp(`1 of ${ds.entries.length} predictions missing .*${ds.entries[0]!.id}`)],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli('eval', ...args);
    const what = `fcn eval ${args.join(' ')}`;
    assert.notEqual(r.code, 0, `${what}: exit code`);
    assert.equal(lines(r.err).length, 1, `${what}: one line on stderr, got ${JSON.stringify(r.err)}`);
    assert.match(r.err, /^fcn eval: /, what);
    assert.match(r.err, pattern, what);
    assert.equal(r.out, '', `${what}: nothing on stdout`);
  }
});
