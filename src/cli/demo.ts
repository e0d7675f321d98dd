// `fcn demo`: the whole system, offline, in a few minutes on 2 cores. It synthesises a
// dataset, trains a narrow FCN-8s through the staged recipe (FCN-32s → 16s → 8s → all
// layers), evaluates it, segments validation images with every stage's model side by side,
// and writes an HTML report.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { engineConfig, trainingPrecision } from '../engine/config.js';
import { synthesizeDataset } from '../data/synth.js';
import { openDataset, type Dataset, type SampleEntry } from '../data/datasets.js';
import { readLabel } from '../data/labels.js';
import { loadModel } from '../models/weights.js';
import type { FcnKind } from '../models/network.js';
import { evaluate, evaluationToJson } from '../eval/evaluate.js';
import { formatMetricsTable } from '../report/confusion.js';
import { segmentFiles, modelTitle } from '../infer/segment-files.js';
import { readImageRgb } from '../io/image.js';
import { colorize, writeRgbPng } from '../report/viz.js';
import { writeHtmlReport } from '../report/html.js';
import { defaultConfig, type StageConfig, type TrainConfig } from '../train/config.js';
import { runTraining } from './train.js';
import { parse, parseNumber } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { engineOptionSpecs, type CommandSpec } from './help.js';
import { prepareOutputDir } from './paths.js';

/** The demo's recipe: Keras-FCN's staging on a narrow network and small images. */
export function demoConfig(root: string, seed: number, size: number): TrainConfig {
  const c = defaultConfig(root);
  c.data = { ...c.data, size, workers: 1 };
  c.model = { ...c.model, width: 0.25, dropout: 0.1 };
  c.optimizer = { ...c.optimizer, kind: 'adam', lr: 1e-3, l2: 1e-5 };
  c.batchSize = 8;
  c.seed = seed;
  c.samples = 6;
  // From random weights (no ImageNet backbone offline) the first stage trains every layer;
  // the last stage is split in two to lower the learning rate for its final epochs.
  c.stages = [
    { model: 'fcn32', epochs: 5, trainable: 'all' },
    { model: 'fcn16', epochs: 2, trainable: 'new' },
    { model: 'fcn8', epochs: 2, trainable: 'new' },
    { model: 'fcn8', epochs: 4, trainable: 'all', lr: 5e-4 },
    { model: 'fcn8', epochs: 2, trainable: 'all', lr: 1.5e-4 },
  ];
  return c;
}

export const demoSpec = {
  name: 'demo',
  summary: 'synthesise data, train FCN-32s → 16s → 8s, evaluate, write a report',
  usage: ['[--out DIR] [--count N] [--size PX] [--seed N]'],
  details: `Offline, a few minutes on 2 cores: synthesises scenes of five object classes, trains a
narrow FCN-8s (width 0.25) through the staged recipe, evaluates it, segments validation images
with every stage's model side by side, and writes DIR/report.html.`,
  options: {
    out: { type: 'string', value: 'DIR', help: 'output folder (data, run, segments, report)', default: 'runs/demo-<date>' },
    count: { type: 'string', value: 'N', help: 'synthetic scenes, at least 10', default: '300' },
    size: { type: 'string', value: 'PX', help: 'scene size, a multiple of 32, at least 64', default: '128' },
    seed: { type: 'string', value: 'N', help: 'random seed of the data and the training', default: '0' },
    ...engineOptionSpecs,
  },
  examples: ['fcn demo --out runs/demo --threads 2'],
} satisfies CommandSpec;

/** A stage's model as the side-by-side figure names it. */
function stageTitle(i: number, kind: FcnKind, st: StageConfig): string {
  const what = st.trainable === 'new' ? 'new layers' : st.trainable === 'all' ? 'all layers' : 'some layers';
  return `${i + 1}: ${modelTitle(kind)}, ${what}${st.lr !== undefined ? `, lr ${st.lr}` : ''}`;
}

/** The report's sample rows: each picture, its truth and the final model's labels, as PNGs in `assets`. */
async function reportSamples(valSet: Dataset, entries: SampleEntry[], predictions: string[], assets: string) {
  const samples = [];
  const png = async (file: string, label: string) => {
    const l = await readLabel(label, valSet.classes);
    await writeRgbPng(file, { data: colorize(l.data, l.width, l.height), width: l.width, height: l.height });
    return file;
  };
  for (const [i, e] of entries.entries()) {
    const imagePng = path.join(assets, `${e.id}_image.png`);
    await writeRgbPng(imagePng, await readImageRgb(e.image));
    const truthPng = await png(path.join(assets, `${e.id}_truth.png`), e.label);
    const predPng = await png(path.join(assets, `${e.id}_pred.png`), predictions[i]!);
    samples.push({ id: e.id, imagePng, truthPng, predPng });
  }
  return samples;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parse(demoSpec, argv);
  applyEngineFlags(demoSpec, values);
  const count = parseNumber('demo', values.count, 'count', (n) => Number.isInteger(n) && n >= 10, 'an integer ≥ 10') ?? 300;
  const size = parseNumber('demo', values.size, 'size', (n) => Number.isInteger(n) && n >= 64 && n % 32 === 0, 'a multiple of 32, at least 64') ?? 128;
  const seed = parseNumber('demo', values.seed, 'seed', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer') ?? 0;
  const out = path.resolve(values.out ?? path.join('runs', `demo-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`));
  prepareOutputDir('demo', 'out', values.out ?? out);
  const t0 = performance.now();
  const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
  const cfg = engineConfig();
  console.log(`fcn demo: ${out} (${cfg.threads} threads, ${cfg.precision})`);

  // 1. Data.
  const dataDir = path.join(out, 'data');
  const synth = await synthesizeDataset({ out: dataDir, count, seed, size });
  console.log(`[${elapsed()}] synthesised ${synth.train.length} training and ${synth.val.length} validation images (${size}×${size}) in ${dataDir}`);

  // 2. Staged training.
  const config = demoConfig(dataDir, seed, size);
  config.precision = trainingPrecision(cfg.precision);
  const runDir = path.join(out, 'run');
  const outcome = await runTraining(config, runDir, false);
  if (!outcome) return 1;
  if (outcome.status === 'interrupted') return 0;
  console.log(`[${elapsed()}] trained ${outcome.state.history.length} epochs in ${outcome.stageWeights.length} stages`);

  // 3. Evaluation of the final FCN-8s at each image's own size.
  const valSet = await openDataset(dataDir, { split: 'val' });
  const finalWeights = outcome.stageWeights.at(-1)!;
  // Every stage's model side by side: what each added, as in the paper's comparison figure.
  const stageModels = await Promise.all(outcome.stageWeights.map((w) => loadModel(w)));
  const model = stageModels.at(-1)!;
  try {
    const result = await evaluate(model, valSet, { precision: cfg.precision });
    const evalJson = { weights: finalWeights, split: 'val', ...evaluationToJson(result) };
    writeFileSync(path.join(out, 'eval.json'), JSON.stringify(evalJson, null, 2) + '\n');
    console.log(`[${elapsed()}] evaluated ${result.images} validation images:\n`);
    console.log(formatMetricsTable(result.metrics, valSet.classes.names));

    // 4. A few validation images through every stage's model, side by side.
    const segDir = path.join(out, 'segments');
    mkdirSync(segDir, { recursive: true });
    const sampleEntries = valSet.entries.slice(0, 6);
    const titles = stageModels.map((m, i) => stageTitle(i, m.kind, config.stages[i]!));
    const files = await segmentFiles(
      sampleEntries.map((e) => e.image),
      { out: segDir, model, compare: stageModels.map((m, i) => ({ title: titles[i], model: m })), classNames: valSet.classes.names, precision: cfg.precision },
    );

    // 5. The report.
    const assets = path.join(out, 'report-assets');
    mkdirSync(assets, { recursive: true });
    const samples = await reportSamples(valSet, sampleEntries, files.map((f) => f.labels), assets);
    const report = path.join(out, 'report.html');
    await writeHtmlReport(report, {
      title: 'fcn demo: staged FCN training on synthetic scenes',
      subtitle: `FCN-32s → FCN-16s → FCN-8s → all layers, width ${config.model.width}, ${synth.train.length} training images, ${cfg.threads} threads, ${cfg.precision}, ${elapsed()}`,
      metrics: result.metrics,
      classNames: valSet.classes.names,
      charts: [
        { title: 'Loss per epoch', svgPath: path.join(outcome.paths.plots, 'loss.svg') },
        { title: 'Mean IoU per epoch', svgPath: path.join(outcome.paths.plots, 'miou.svg') },
      ],
      samples,
      config,
    });
    console.log(`\n[${elapsed()}] validation mean IoU ${result.metrics.meanIoU.toFixed(4)}, pixel accuracy ${result.metrics.pixelAccuracy.toFixed(4)}`);
    console.log(`report: ${report}`);
    console.log(`every stage's model side by side: ${path.join(segDir, '*_compare.png')}`);
  } finally {
    for (const m of stageModels) m.dispose();
  }
  return 0;
}
