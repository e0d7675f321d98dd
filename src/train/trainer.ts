// Staged training as the seed describes it: a run is a list of stages (FCN-32s, then FCN-16s
// from it, then FCN-8s from that, then everything unfrozen), each some epochs long. After
// every epoch: validation, a checkpoint (atomic), the best model by validation mean IoU, the
// JSONL log, the loss and mean-IoU plots and a grid of sample predictions. Ctrl-C finishes
// the step, saves and returns; `resume` continues exactly where a run stopped.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tensor.js';
import { FCN, type FcnKind } from '../models/fcn.js';
import { loadMatchingSource, openWeights, saveWeights } from '../models/weights.js';
import { writeFileAtomic } from '../io/atomic.js';
import { openDataset, type Dataset } from '../data/datasets.js';
import { DataLoader, type Batch } from '../data/loader.js';
import { mixSeed } from '../data/prng.js';
import { toRgbBytes, type PipelineSpec, type TransformSpec } from '../data/transforms.js';
import { ConfusionMatrix } from '../eval/confusion.js';
import { scoreLogits } from '../eval/evaluate.js';
import { openJsonl, type JsonlLog } from '../report/jsonl.js';
import { progress as makeProgress, type ProgressStream } from '../report/progress.js';
import { writeChart } from '../report/plot.js';
import { writeSampleGrid, type SampleRow } from '../report/viz.js';
import { Adam, Sgd, type Optimizer } from './optim.js';
import { computeGradients } from './step.js';
import { loadCheckpoint, saveCheckpoint, type EpochRecord, type TrainState } from './checkpoint.js';
import { validateConfig, type StageConfig, type TrainConfig } from './config.js';

/** The loss or a weight became NaN or infinite: the run stops, its last checkpoint stays good. */
export class NonFiniteLossError extends Error {}

export interface RunPaths {
  dir: string;
  config: string;
  log: string;
  last: string;
  best: string;
  plots: string;
  samples: string;
  /** Final weights of stage i. */
  stage(i: number, kind: FcnKind): string;
}

export function runPaths(dir: string): RunPaths {
  return {
    dir,
    config: path.join(dir, 'config.json'),
    log: path.join(dir, 'log.jsonl'),
    last: path.join(dir, 'checkpoints', 'last.safetensors'),
    best: path.join(dir, 'checkpoints', 'best.safetensors'),
    plots: path.join(dir, 'plots'),
    samples: path.join(dir, 'samples'),
    stage: (i, kind) => path.join(dir, 'checkpoints', `stage${i + 1}-${kind}.safetensors`),
  };
}

export interface TrainOptions {
  /** Continue from the run directory's last checkpoint. */
  resume?: boolean;
  /** Aborting finishes the current step, saves a checkpoint and returns 'interrupted'. */
  signal?: AbortSignal;
  /** Where progress goes (default stderr); null for none. */
  progress?: ProgressStream | null;
  /** Called after every optimiser step with the model being trained (e.g. to stop after a number of steps). */
  onStep?: (state: Readonly<TrainState>, model: FCN) => void;
}

export interface TrainOutcome {
  status: 'completed' | 'interrupted';
  state: TrainState;
  paths: RunPaths;
  /** Weights files of the completed stages. */
  stageWeights: string[];
}

/** The layers each model has, for deciding what a stage adds. */
export function layerNames(kind: FcnKind): string[] {
  const body = [1, 2, 3, 4, 5].flatMap((b) => Array.from({ length: b <= 2 ? 2 : 3 }, (_, i) => `block${b}_conv${i + 1}`));
  const heads = kind === 'fcn32' ? ['fcn32'] : kind === 'fcn16' ? ['score7_upsample', 'score4', 'fcn16'] : ['score7_upsample', 'score4', 'skip4_upsample', 'score3', 'fcn8'];
  return [...body, 'conv6', 'conv7', 'score7', ...heads];
}

/** Sets which layers train in a stage (bilinear upsampling layers stay frozen unless named). */
export function applyTrainable(model: FCN, stage: StageConfig, previous: FcnKind | null): void {
  const inherited = new Set(previous ? layerNames(previous) : []);
  for (const l of model.layers()) {
    const t = stage.trainable;
    l.trainable = Array.isArray(t)
      ? t.includes(l.name)
      : !l.transposed && (t === 'all' || (t === 'head' && !l.name.startsWith('block')) || (t === 'new' && !inherited.has(l.name)));
  }
}

function codeVersion(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  let version = 'unknown';
  try {
    version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* not fatal: the version is informative */
  }
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  return git.status === 0 ? `${version}+${git.stdout.trim()}` : version;
}

function trainPipelineOf(c: TrainConfig): PipelineSpec {
  const steps: TransformSpec[] = [];
  if (c.data.size > 0) steps.push({ op: 'resizeWithPad', size: c.data.size });
  const [min, max] = c.data.scale;
  if (!(min === 1 && max === 1)) {
    steps.push({ op: 'randomScale', min, max });
    if (c.data.size > 0) steps.push({ op: 'randomCrop', height: c.data.size });
  }
  if (c.data.flip) steps.push({ op: 'hflip', p: 0.5 });
  return { means: c.data.means, steps };
}

function valPipelineOf(c: TrainConfig): PipelineSpec {
  return { means: c.data.means, steps: c.data.size > 0 ? [{ op: 'resizeWithPad', size: c.data.size }] : [] };
}

function makeOptimizer(c: TrainConfig, lr: number): Optimizer {
  return c.optimizer.kind === 'adam' ? new Adam({ lr, l2: c.optimizer.l2 }) : new Sgd({ lr, momentum: c.optimizer.momentum, weightDecay: c.optimizer.weightDecay });
}

function limit(ds: Dataset, n: number): Dataset {
  return n > 0 && n < ds.entries.length ? { ...ds, entries: ds.entries.slice(0, n) } : ds;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function batchTensors(b: Batch): [Tensor, Tensor] {
  return [native.fromArray([b.n, 3, b.height, b.width], b.images), native.fromArray([b.n, b.height, b.width], b.labels)];
}

/** Loss per labelled pixel, whatever the reduction used for training. */
const perPixel = (loss: number, valid: number, reduction: 'mean' | 'sum') => (reduction === 'sum' ? (valid > 0 ? loss / valid : 0) : loss);

interface Validation {
  record: NonNullable<EpochRecord['val']>;
  samples: SampleRow[];
}

async function validate(model: FCN, loader: DataLoader, c: TrainConfig, epoch: number): Promise<Validation> {
  const cm = new ConfusionMatrix(model.numClasses);
  let lossSum = 0, validSum = 0;
  const samples: SampleRow[] = [];
  for await (const b of loader.epoch(epoch)) {
    const [x, y] = batchTensors(b);
    let logits: Tensor | null = null, grad: Tensor | null = null;
    try {
      logits = model.predictLogits(x, c.precision);
      const ce = native.softmaxCrossEntropy(logits, y, { reduction: 'sum' });
      grad = ce.grad;
      lossSum += ce.loss;
      validSum += ce.valid;
      const p = scoreLogits(cm, logits, b.labels);
      const plane = b.height * b.width;
      for (let i = 0; i < b.n && samples.length < c.samples; i++) {
        const image = b.images.subarray(i * 3 * plane, (i + 1) * 3 * plane);
        samples.push({
          image: { data: toRgbBytes(image, b.width, b.height, c.data.means), width: b.width, height: b.height },
          truth: b.labels.slice(i * plane, (i + 1) * plane),
          pred: p.slice(i * plane, (i + 1) * plane),
        });
      }
    } finally {
      disposeAll(x, y, logits, grad);
    }
    await tick();
  }
  const m = cm.compute();
  return {
    record: { loss: validSum > 0 ? lossSum / validSum : 0, pixelAccuracy: m.pixelAccuracy, meanIoU: m.meanIoU, meanAccuracy: m.meanAccuracy, frequencyWeightedIoU: m.frequencyWeightedIoU },
    samples,
  };
}

async function writePlots(p: RunPaths, history: EpochRecord[]): Promise<void> {
  mkdirSync(p.plots, { recursive: true });
  const series = (pick: (r: EpochRecord) => number | undefined, name: string) => ({ name, points: history.map((r) => [r.epoch, pick(r) ?? NaN] as [number, number]) });
  await writeChart(path.join(p.plots, 'loss'), {
    title: 'Loss per epoch',
    xLabel: 'epoch',
    yLabel: 'cross-entropy per pixel',
    series: [series((r) => r.train.loss, 'train'), series((r) => r.val?.loss, 'validation')],
  });
  await writeChart(path.join(p.plots, 'miou'), {
    title: 'Mean IoU per epoch',
    xLabel: 'epoch',
    yLabel: 'mean IoU',
    series: [series((r) => r.train.meanIoU, 'train'), series((r) => r.val?.meanIoU, 'validation')],
  });
}

/**
 * Trains as `config` says, in `runDir`. With `resume`, continues from the run's last
 * checkpoint (same optimiser state, learning rate, epoch and data order).
 */
export async function train(config: TrainConfig, runDir: string, options: TrainOptions = {}): Promise<TrainOutcome> {
  validateConfig(config);
  const paths = runPaths(runDir);
  mkdirSync(path.dirname(paths.last), { recursive: true });
  const c = config;
  const out = options.progress === undefined ? process.stderr : options.progress;

  let state: TrainState = { stage: 0, epoch: 0, batch: 0, step: 0, lr: c.stages[0].lr ?? c.optimizer.lr, optimizer: { kind: c.optimizer.kind, scalars: {} }, best: null, history: [] };
  let model: FCN | null = null;
  let optimizer: Optimizer | null = null;
  let previousKind: FcnKind | null = null;
  const resuming = options.resume && existsSync(paths.last);
  if (resuming) {
    const ck = loadCheckpoint(paths.last, c.model.dropout);
    state = ck.state;
    model = ck.model;
    optimizer = makeOptimizer(c, state.lr);
    optimizer.loadState(ck.optimizerArrays, state.optimizer.scalars);
    optimizer.lr = state.lr;
    disposeAll(...ck.optimizerArrays.values());
  } else {
    writeFileAtomic(paths.config, JSON.stringify({ ...c, codeVersion: codeVersion(), created: new Date().toISOString() }, null, 2) + '\n');
  }

  const trainSet = limit(await openDataset(c.data.root, { split: c.data.trainSplit }), c.data.limitTrain);
  const valSet = limit(await openDataset(c.data.root, { split: c.data.valSplit }), c.data.limitVal);
  const trainLoader = new DataLoader({ dataset: trainSet, pipeline: trainPipelineOf(c), batchSize: c.batchSize, shuffle: true, seed: c.seed, workers: c.data.workers });
  const valLoader = new DataLoader({ dataset: valSet, pipeline: valPipelineOf(c), batchSize: c.batchSize, shuffle: false, seed: c.seed, workers: c.data.workers });
  const log: JsonlLog = openJsonl(paths.log);
  log.write({ type: resuming ? 'resume' : 'start', time: new Date().toISOString(), stage: state.stage, epoch: state.epoch, batch: state.batch, train: trainSet.entries.length, val: valSet.entries.length });
  const stageWeights: string[] = [];
  for (let i = 0; i < state.stage; i++) stageWeights.push(paths.stage(i, c.stages[i].model));
  const epochsBefore = (s: number) => c.stages.slice(0, s).reduce((n, st) => n + st.epochs, 0);

  try {
    for (; state.stage < c.stages.length; state.stage++, state.epoch = 0, state.batch = 0) {
      const stage = c.stages[state.stage];
      previousKind = state.stage > 0 ? c.stages[state.stage - 1].model : null;
      if (!model) {
        // A new stage: its model starts from the previous stage's weights (or --init).
        model = new FCN({ kind: stage.model, width: c.model.width, style: c.model.style, numClasses: trainSet.classes.names.length, classNames: trainSet.classes.names, dropout: c.model.dropout });
        model.initialize(c.seed);
        const from = state.stage > 0 ? paths.stage(state.stage - 1, c.stages[state.stage - 1].model) : c.model.init;
        if (from) {
          const source = await openWeights(from);
          try {
            const loaded = loadMatchingSource(model, source);
            if (loaded.size === 0) throw new Error(`${from}: no tensor matches a layer of ${stage.model}`);
            if (state.stage === 0) {
              log.write({ type: 'init', from: source.path, format: source.format, layers: [...loaded], notes: source.notes });
              for (const note of source.notes) out?.write(`${note}\n`);
            }
          } finally {
            source.close?.();
          }
        }
        state.lr = stage.lr ?? c.optimizer.lr;
        optimizer = makeOptimizer(c, state.lr);
      }
      if (model.kind !== stage.model) throw new Error(`${paths.last}: the checkpoint holds ${model.kind} but stage ${state.stage + 1} trains ${stage.model}`);
      applyTrainable(model, stage, previousKind === stage.model ? null : previousKind);
      const trainingLayers = model.layers().filter((l) => l.trainable).map((l) => l.name);
      log.write({ type: 'stage', stage: state.stage + 1, model: stage.model, epochs: stage.epochs, trainable: trainingLayers, lr: state.lr });

      for (; state.epoch < stage.epochs; state.epoch++, state.batch = 0) {
        const globalEpoch = epochsBefore(state.stage) + state.epoch; // from 0
        const label = `stage ${state.stage + 1}/${c.stages.length} ${stage.model} epoch ${state.epoch + 1}/${stage.epochs}`;
        const bar = out ? makeProgress({ label, total: trainLoader.batchesPerEpoch - state.batch, stream: out, unit: 'batch' }) : null;
        const cm = new ConfusionMatrix(model.numClasses);
        let lossSum = 0, validSum = 0, images = 0;
        const t0 = performance.now();
        for await (const b of trainLoader.epoch(globalEpoch, { startBatch: state.batch })) {
          const [x, y] = batchTensors(b);
          let logits: Tensor | null = null;
          try {
            const r = computeGradients(model, x, y, { precision: c.precision, reduction: c.loss.reduction, seed: mixSeed(c.seed, globalEpoch, b.batchIndex), keepLogits: true });
            logits = r.logits;
            if (!Number.isFinite(r.loss)) {
              log.write({ type: 'nonfinite', stage: state.stage + 1, epoch: globalEpoch + 1, batch: b.batchIndex, loss: String(r.loss) });
              const kept = existsSync(paths.last) ? `the last good checkpoint is ${paths.last}` : 'no checkpoint was written yet';
              throw new NonFiniteLossError(`the loss became ${r.loss} at stage ${state.stage + 1}, epoch ${state.epoch + 1}, batch ${b.batchIndex + 1}: stopping (${kept})`);
            }
            optimizer!.step(model.params());
            state.step++;
            scoreLogits(cm, logits!, b.labels);
            lossSum += perPixel(r.loss, r.valid, c.loss.reduction) * r.valid;
            validSum += r.valid;
            images += b.n;
            state.batch = b.batchIndex + 1;
            const loss = perPixel(r.loss, r.valid, c.loss.reduction);
            if (state.step % c.logEvery === 0) log.write({ type: 'step', step: state.step, stage: state.stage + 1, epoch: globalEpoch + 1, batch: state.batch, loss, lr: state.lr, imagesPerSecond: images / ((performance.now() - t0) / 1000) });
            bar?.tick(1, { loss: loss.toFixed(4) });
          } finally {
            disposeAll(x, y, logits);
          }
          options.onStep?.(state, model);
          await tick(); // lets Ctrl-C and native finalisers in
          if (options.signal?.aborted) {
            state.optimizer = { kind: optimizer!.kind, scalars: optimizer!.stateScalars() };
            saveCheckpoint(paths.last, model, optimizer!, state);
            bar?.done();
            log.write({ type: 'interrupted', stage: state.stage + 1, epoch: globalEpoch + 1, batch: state.batch, step: state.step, checkpoint: paths.last });
            return { status: 'interrupted', state, paths, stageWeights };
          }
        }
        const seconds = (performance.now() - t0) / 1000;
        const tm = cm.compute();
        const val = valSet.entries.length > 0 ? await validate(model, valLoader, c, globalEpoch) : null;
        const record: EpochRecord = {
          epoch: globalEpoch + 1,
          stage: state.stage + 1,
          model: stage.model,
          lr: state.lr,
          train: { loss: validSum > 0 ? lossSum / validSum : 0, pixelAccuracy: tm.pixelAccuracy, meanIoU: tm.meanIoU },
          val: val?.record ?? null,
          imagesPerSecond: images / seconds,
          seconds,
        };
        bar?.done({ loss: record.train.loss.toFixed(4), ...(val ? { 'val mIoU': val.record.meanIoU.toFixed(3) } : {}) });
        state.history.push(record);
        log.write({ type: 'epoch', ...record });
        state.batch = 0;
        const nextEpoch = { ...state, epoch: state.epoch + 1 };
        if (val && !(val.record.meanIoU <= (state.best?.meanIoU ?? -1))) {
          state.best = nextEpoch.best = { meanIoU: val.record.meanIoU, epoch: globalEpoch + 1, stage: state.stage + 1 };
          saveWeights(paths.best, model, { epoch: String(globalEpoch + 1), val_mean_iou: String(val.record.meanIoU) });
        }
        // A NaN can hide in a weight whose output a ReLU clamps; never checkpoint one.
        const bad = model.params().find((p) => !Number.isFinite(native.sumSquares(p.value)));
        if (bad) {
          log.write({ type: 'nonfinite', stage: state.stage + 1, epoch: globalEpoch + 1, parameter: bad.name });
          const kept = existsSync(paths.last) ? `the last good checkpoint is ${paths.last}` : 'no checkpoint was written yet';
          throw new NonFiniteLossError(`${bad.name} holds a non-finite value after epoch ${globalEpoch + 1}: stopping (${kept})`);
        }
        nextEpoch.optimizer = { kind: optimizer!.kind, scalars: optimizer!.stateScalars() };
        saveCheckpoint(paths.last, model, optimizer!, nextEpoch);
        await writePlots(paths, state.history);
        if (val && val.samples.length > 0) {
          mkdirSync(paths.samples, { recursive: true });
          await writeSampleGrid(path.join(paths.samples, `epoch${String(globalEpoch + 1).padStart(3, '0')}.png`), val.samples, {
            classNames: trainSet.classes.names,
            title: `epoch ${globalEpoch + 1} (${stage.model}): image | truth | prediction`,
          });
        }
        if (options.signal?.aborted) {
          log.write({ type: 'interrupted', stage: state.stage + 1, epoch: globalEpoch + 1, batch: 0, step: state.step, checkpoint: paths.last });
          state = nextEpoch;
          return { status: 'interrupted', state, paths, stageWeights };
        }
      }
      saveWeights(paths.stage(state.stage, stage.model), model, { stage: String(state.stage + 1) });
      stageWeights.push(paths.stage(state.stage, stage.model));
      log.write({ type: 'stage_end', stage: state.stage + 1, model: stage.model, weights: paths.stage(state.stage, stage.model) });
      model.dispose();
      optimizer?.dispose();
      model = null;
      optimizer = null;
    }
    log.write({ type: 'end', time: new Date().toISOString(), best: state.best });
    return { status: 'completed', state, paths, stageWeights };
  } finally {
    model?.dispose();
    optimizer?.dispose();
    log.close();
    await trainLoader.close();
    await valLoader.close();
  }
}
