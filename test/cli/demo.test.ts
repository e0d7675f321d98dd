// fcn demo in a small setting (10 scenes of 64×64: 8 to train on, 2 to validate): it trains
// through every stage, evaluates, segments, and writes report.html with the metrics, both
// plots and the samples. The metrics are checked against the confusion matrix recomputed
// here from the label maps the demo wrote and the ground truth.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readLabel } from '../../src/data/labels.js';
import { synthClassSet } from '../../src/data/synth.js';
import { readJsonl } from '../../src/report/jsonl.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('demo');
after(() => tmp.cleanup());

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

test('fcn demo (10 scenes, 64×64): trains every stage, evaluates, segments and writes report.html with the metrics and plots', { timeout: 900_000 }, async () => {
  const out = path.join(tmp.dir, 'demo');
  const r = await runCli('demo', '--out', out, '--count', '10', '--size', '64', '--seed', '1', '--threads', '2', '--precision', 'float32');
  assert.equal(r.code, 0, r.err);

  // Training: the demo's five stages, each leaving its weights, every epoch logged.
  const run = path.join(out, 'run');
  const config = JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8')) as { stages: { model: string; epochs: number }[] };
  const epochs = config.stages.reduce((n, s) => n + s.epochs, 0);
  const log = await readJsonl<{ type: string }>(path.join(run, 'log.jsonl'));
  assert.equal(log.filter((l) => l.type === 'epoch').length, epochs);
  assert.equal(log.at(-1)!.type, 'end');
  config.stages.forEach((s, i) => assert.ok(existsSync(path.join(run, 'checkpoints', `stage${i + 1}-${s.model}.safetensors`)), `stage ${i + 1} weights`));

  // Evaluation: eval.json's metrics are the paper's formulas over its own confusion matrix,
  // and that matrix counts exactly the label maps the demo wrote against the truth.
  const evaluation = JSON.parse(readFileSync(path.join(out, 'eval.json'), 'utf8')) as EvalJson;
  const valIds = readFileSync(path.join(out, 'data', 'ImageSets', 'Segmentation', 'val.txt'), 'utf8').trim().split('\n');
  assert.equal(evaluation.images, valIds.length);
  const classes = synthClassSet();
  const hist = classes.names.map(() => classes.names.map(() => 0));
  for (const id of valIds) {
    const truth = await readLabel(path.join(out, 'data', 'SegmentationClass', `${id}.png`), classes);
    const pred = await readLabel(path.join(out, 'segments', `${id}.png`));
    assert.deepEqual([pred.width, pred.height], [truth.width, truth.height]);
    for (let i = 0; i < truth.data.length; i++) if (truth.data[i] !== 255) hist[truth.data[i]][pred.data[i]]++;
    assert.ok(existsSync(path.join(out, 'segments', `${id}_compare.png`)), `${id}: every stage side by side`);
  }
  assert.deepEqual(evaluation.confusion.hist, hist);
  const want = paperMetrics(hist);
  for (const key of ['pixelAccuracy', 'meanAccuracy', 'meanIoU', 'frequencyWeightedIoU'] as const)
    assert.ok(Math.abs(evaluation[key] - want[key]) <= 1e-12, `${key}: ${evaluation[key]} vs ${want[key]}`);

  // The report: the four metrics as percentages, both plots inline, every sample's images.
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
  const images = [...report.matchAll(/<img src="([^"]+)"/g)].map((m) => decodeURIComponent(m[1]));
  assert.equal(images.length, 3 * valIds.length, 'image, truth and prediction per sample');
  for (const src of images) assert.ok(existsSync(path.join(out, src)), `report.html links ${src}, which is missing`);

  const said = lines(r.out).find((l) => l.includes('validation mean IoU'));
  assert.ok(said?.includes(want.meanIoU.toFixed(4)), `the summary line says ${said}`);
});
