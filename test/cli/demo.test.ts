// fcn demo as the README runs it (300 scenes of 128×128: 240 to train on, 60 to validate): it
// trains through every stage, evaluates, segments, and writes report.html with the metrics,
// both plots and the samples. The model it trains is good (the README: mean IoU ~0.75; the
// floor here leaves a margin for the rounding of other CPUs and thread counts), and its
// metrics are checked against two independent computations from label maps: the confusion
// matrix counted here, and the FCN paper's score.py in NumPy (test/reference/score.py).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readLabel } from '../../src/data/labels.js';
import { synthClassSet } from '../../src/data/synth.js';
import { configureEngine } from '../../src/engine/config.js';
import { segment } from '../../src/infer/inference.js';
import { loadModel } from '../../src/models/weights.js';
import { readJsonl } from '../support/jsonl.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';
import { requires } from '../prereq.js';
import { paperScores, scorePython, type LabelPair } from '../reference/score.js';

const tmp = tempDir('demo');
after(() => tmp.cleanup());

/** The README's demo: fcn demo's defaults (300 scenes, 128×128), on 2 threads in float32. */
const COUNT = 300, SIZE = 128;
/** The validation mean IoU the trained model must reach (the README's demo: ~0.75). */
const MEAN_IOU_FLOOR = 0.6;

interface EvalJson {
  meanIoU: number;
  pixelAccuracy: number;
  meanAccuracy: number;
  frequencyWeightedIoU: number;
  images: number;
  confusion: { hist: number[][] };
}

/** The paper's four metrics from a confusion matrix (rows truth, columns prediction). */
function paperMetrics(hist: number[][]): { pixelAccuracy: number; meanAccuracy: number; meanIoU: number; frequencyWeightedIoU: number } {
  const k = hist.length;
  const total = hist.flat().reduce((a, b) => a + b, 0);
  const row = hist.map((r) => r.reduce((a, b) => a + b, 0));
  const col = Array.from({ length: k }, (_, j) => hist.reduce((a, r) => a + r[j], 0));
  const diag = hist.map((r, i) => r[i]);
  const nanmean = (v: number[]) => {
    const f = v.filter(Number.isFinite);
    return f.reduce((a, b) => a + b, 0) / f.length;
  };
  const iou = diag.map((d, i) => d / (row[i] + col[i] - d));
  return {
    pixelAccuracy: diag.reduce((a, b) => a + b, 0) / total,
    meanAccuracy: nanmean(diag.map((d, i) => d / row[i])),
    meanIoU: nanmean(iou),
    frequencyWeightedIoU: row.reduce((a, r, i) => (r > 0 ? a + (r / total) * iou[i] : a), 0),
  };
}

test('fcn demo (300 scenes, 128×128): trains every stage to a mean IoU ≥ 0.6, evaluates as score.py does, segments and writes report.html', { timeout: 3_600_000, skip: requires(scorePython() !== null, 'python3 with NumPy (test/reference/score.py)') }, async (t) => {
  const out = path.join(tmp.dir, 'demo');
  const r = await runCli('demo', '--out', out, '--count', String(COUNT), '--size', String(SIZE), '--seed', '1', '--threads', '2', '--precision', 'float32');
  assert.equal(r.code, 0, r.err);

  // Training: the demo's five stages, each leaving its weights, every epoch logged.
  const run = path.join(out, 'run');
  const config = JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8')) as { stages: { model: string; epochs: number }[] };
  const epochs = config.stages.reduce((n, s) => n + s.epochs, 0);
  const log = await readJsonl<{ type: string }>(path.join(run, 'log.jsonl'));
  assert.equal(log.filter((l) => l.type === 'epoch').length, epochs);
  assert.equal(log.at(-1)!.type, 'end');
  const stageWeights = config.stages.map((s, i) => path.join(run, 'checkpoints', `stage${i + 1}-${s.model}.safetensors`));
  for (const w of stageWeights) assert.ok(existsSync(w), `${w} missing`);

  // Evaluation: the final model's label map of every validation image (as fcn eval makes
  // them, at each image's own size), counted here and scored by score.py: eval.json holds
  // exactly that confusion matrix and those metrics, and the paper's formulas over it.
  const evaluation = JSON.parse(readFileSync(path.join(out, 'eval.json'), 'utf8')) as EvalJson;
  const valIds = readFileSync(path.join(out, 'data', 'ImageSets', 'Segmentation', 'val.txt'), 'utf8').trim().split('\n');
  assert.equal(evaluation.images, valIds.length);
  const classes = synthClassSet();
  const hist = classes.names.map(() => classes.names.map(() => 0));
  const pairs: LabelPair[] = [];
  configureEngine({ threads: 2, precision: 'float32' });
  const model = await loadModel(stageWeights.at(-1)!);
  try {
    for (const id of valIds) {
      const truth = await readLabel(path.join(out, 'data', 'SegmentationClass', `${id}.png`), classes);
      const pred = await segment(model, path.join(out, 'data', 'JPEGImages', `${id}.jpg`));
      assert.deepEqual([pred.width, pred.height], [truth.width, truth.height]);
      for (let i = 0; i < truth.data.length; i++) if (truth.data[i] !== 255) hist[truth.data[i]!]![pred.labels[i]!]!++;
      pairs.push({ truth: truth.data, pred: pred.labels, width: truth.width, height: truth.height });
      // The label maps the demo wrote for its samples are these.
      const written = path.join(out, 'segments', `${id}.png`);
      if (existsSync(written)) {
        assert.deepEqual((await readLabel(written)).data, pred.labels, `segments/${id}.png`);
        assert.ok(existsSync(path.join(out, 'segments', `${id}_compare.png`)), `${id}: every stage side by side`);
      }
    }
  } finally {
    model.dispose();
  }
  assert.deepEqual(evaluation.confusion.hist, hist);
  const want = paperMetrics(hist);
  for (const key of ['pixelAccuracy', 'meanAccuracy', 'meanIoU', 'frequencyWeightedIoU'] as const)
    assert.ok(Math.abs(evaluation[key] - want[key]) <= 1e-12, `${key}: ${evaluation[key]} vs ${want[key]}`);
  const paper = paperScores(classes.names.length, pairs);
  assert.deepEqual(paper.hist, hist, 'score.py\'s fast_hist');
  const python = { pixelAccuracy: paper.overallAccuracy, meanAccuracy: paper.meanAccuracy, meanIoU: paper.meanIU, frequencyWeightedIoU: paper.fwavacc };
  for (const key of ['pixelAccuracy', 'meanAccuracy', 'meanIoU', 'frequencyWeightedIoU'] as const)
    assert.ok(Math.abs(evaluation[key] - python[key]!) <= 1e-12, `${key}: ${evaluation[key]} vs score.py ${python[key]}`);
  t.diagnostic(`validation mean IoU ${evaluation.meanIoU.toFixed(4)} (score.py ${paper.meanIU!.toFixed(4)}), pixel accuracy ${evaluation.pixelAccuracy.toFixed(4)}`);
  assert.ok(evaluation.meanIoU >= MEAN_IOU_FLOOR, `the demo's model reaches a validation mean IoU of ${evaluation.meanIoU.toFixed(4)}, under ${MEAN_IOU_FLOOR}`);

  // The report: the four metrics as percentages, both plots inline, every sample's images.
  const samples = valIds.filter((id) => existsSync(path.join(out, 'segments', `${id}.png`)));
  assert.ok(samples.length >= 1, 'the demo segments some validation images');
  const report = readFileSync(path.join(out, 'report.html'), 'utf8');
  for (const key of ['meanIoU', 'pixelAccuracy', 'meanAccuracy', 'frequencyWeightedIoU'] as const)
    assert.ok(report.includes(`<div class="value">${(100 * want[key]).toFixed(2)}</div>`), `report.html lacks ${key} = ${(100 * want[key]).toFixed(2)}%`);
  for (const name of classes.names) assert.ok(report.includes(`<td>${name}</td>`), `report.html lacks the ${name} row`);
  for (const [plot, title] of [['loss', 'Loss per epoch'], ['miou', 'Mean IoU per epoch']]) {
    const svg = readFileSync(path.join(run, 'plots', `${plot}.svg`), 'utf8');
    const body = svg.slice(svg.indexOf('<svg'));
    assert.ok(report.includes(body.trim()), `report.html does not inline plots/${plot}.svg`);
    assert.ok(report.includes(`<figcaption>${title}</figcaption>`));
  }
  const images = [...report.matchAll(/<img src="([^"]+)"/g)].map((m) => decodeURIComponent(m[1]!));
  assert.equal(images.length, 3 * samples.length, 'image, truth and prediction per sample');
  for (const src of images) assert.ok(existsSync(path.join(out, src)), `report.html links ${src}, which is missing`);

  const said = lines(r.out).find((l) => l.includes('validation mean IoU'));
  assert.ok(said?.includes(want.meanIoU.toFixed(4)), `the summary line says ${said}`);
});
