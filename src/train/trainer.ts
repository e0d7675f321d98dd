// Staged training as Keras-FCN does it: a run is a list of stages (FCN-32s, then FCN-16s
// from it, then FCN-8s from that, then everything unfrozen), each some epochs long. After
// every epoch: validation, a checkpoint (atomic, the one before kept as `last.prev`), the best
// model by validation mean IoU, the JSONL log, the loss and mean-IoU plots and a grid of
// sample predictions. Ctrl-C finishes the step, saves and returns; `resume` continues exactly
// where a run stopped, from the previous checkpoint when the last one is missing or damaged.
// The loop is flat functions in the manner of torchvision's reference scripts: train() walks
// stages and epochs; trainOneEpoch, endOfEpoch, saveLast and stopNonFinite do the work.
import { copyFileSync, existsSync, linkSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import { FCN, type FcnKind } from '../models/fcn.js';
import { loadMatchingSource, openWeights, saveWeights } from '../models/weights.js';
import { writeFileAtomic } from '../io/atomic.js';
import { weightLayers } from '../io/weight-layers.js';
import { openDataset, type Dataset } from '../data/datasets.js';
import { DataLoader, type Batch, type LoaderOptions } from '../data/loader.js';
import { mixSeed } from '../data/prng.js';
import { evalPipeline, toRgbBytes, type PipelineSpec, type TransformSpec } from '../data/transforms.js';
import { ConfusionMatrix } from '../report/confusion.js';
import { scoreLogits } from '../eval/evaluate.js';
import { openJsonl, type JsonlLog } from '../report/jsonl.js';
import { progress as makeProgress, type ProgressStream } from '../report/progress.js';
import { writeChart } from '../report/plot.js';
import { writeSampleGrid, type SampleRow } from '../report/viz.js';
import { Adam, Sgd, type Optimizer } from './optim.js';
import { computeGradients, type StepResult } from './step.js';
import type { Distributed } from './distributed.js';
import { loadCheckpoint, saveCheckpoint, type EpochRecord, type TrainState } from './checkpoint.js';
import { validateConfig, type StageConfig, type TrainConfig } from './config.js';
import { fcnErrorClass } from '../errors.js';
import { packageRoot, packageVersion } from '../io/package-version.js';

/** The loss or a weight became NaN or infinite: the run stops, its last checkpoint stays good. */
export const NonFiniteLossError = fcnErrorClass('NON_FINITE_LOSS');

/** `resume` found no checkpoint it could load: the run is not started over in its folder. */
export const ResumeError = fcnErrorClass('RESUME');

/** The files and folders of a run directory. */
export function runPaths(dir: string) {
  return {
    dir,
    config: path.join(dir, 'config.json'),
    log: path.join(dir, 'log.jsonl'),
    last: path.join(dir, 'checkpoints', 'last.safetensors'),
    /** The checkpoint before `last` (one generation), for when `last` is lost or damaged. */
    previous: path.join(dir, 'checkpoints', 'last.prev.safetensors'),
    best: path.join(dir, 'checkpoints', 'best.safetensors'),
    plots: path.join(dir, 'plots'),
    samples: path.join(dir, 'samples'),
    /** Final weights of stage i. */
    stage: (i: number, kind: FcnKind) => path.join(dir, 'checkpoints', `stage${i + 1}-${kind}.safetensors`),
  };
}

export type RunPaths = ReturnType<typeof runPaths>;

export interface TrainOptions {
  /**
   * Continue from the run directory's last checkpoint (or, when it is missing or does not
   * load, the previous one, saying so); with neither, fail with a ResumeError.
   */
  resume?: boolean;
  /** Aborting finishes the current step, saves a checkpoint and returns 'interrupted'. */
  signal?: AbortSignal;
  /** Where progress goes (default stderr); null for none. */
  progress?: ProgressStream | null;
  /** Called after every optimiser step with the model being trained (e.g. to stop after a number of steps). */
  onStep?: (state: Readonly<TrainState>, model: FCN) => void;
  /**
   * Data-parallel training over MPI (`mpirun -np N fcn train`): this rank's context. Every rank
   * calls train() with the same configuration and the batch stays global; only rank 0 writes
   * the run folder and reports progress. A stop (the signal) takes effect when the ranks agree.
   */
  distributed?: Distributed | null;
}

export interface TrainOutcome {
  status: 'completed' | 'interrupted';
  state: TrainState;
  paths: RunPaths;
  /** Weights files of the completed stages. */
  stageWeights: string[];
  /** The checkpoint a resumed run continued from. */
  resumedFrom?: string;
}

/** Sets which layers train in a stage (bilinear upsampling layers stay frozen unless named). */
export function applyTrainable(model: FCN, stage: StageConfig, previous: FcnKind | null): void {
  const inherited = new Set(previous ? weightLayers(previous).map((l) => l.name) : []);
  for (const l of model.layers()) {
    const t = stage.trainable;
    l.trainable = Array.isArray(t)
      ? t.includes(l.name)
      : !l.transposed && (t === 'all' || (t === 'head' && !l.name.startsWith('block')) || (t === 'new' && !inherited.has(l.name)));
  }
}

function codeVersion(): string {
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot, encoding: 'utf8' });
  return git.status === 0 ? `${packageVersion()}+${git.stdout.trim()}` : packageVersion();
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

async function validate(model: FCN, loader: DataLoader, c: TrainConfig, epoch: number, dist: Distributed | null): Promise<{ record: NonNullable<EpochRecord['val']>; samples: SampleRow[] }> {
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
  if (dist) {
    // Each rank scored its slice of the split: the counts and losses add up.
    dist.sum(cm.counts);
    const sums = Float64Array.of(lossSum, validSum);
    dist.sum(sums);
    [lossSum, validSum] = [sums[0]!, sums[1]!];
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
  const charts = [
    { file: 'loss', title: 'Loss per epoch', yLabel: 'cross-entropy per pixel', key: 'loss' },
    { file: 'miou', title: 'Mean IoU per epoch', yLabel: 'mean IoU', key: 'meanIoU' },
  ] as const;
  for (const { file, title, yLabel, key } of charts) {
    await writeChart(path.join(p.plots, file), { title, xLabel: 'epoch', yLabel, series: [series((r) => r.train[key], 'train'), series((r) => r.val?.[key], 'validation')] });
  }
}

/** What the stages and epochs of one call of train() share (made by openRun). */
type Run = Awaited<ReturnType<typeof openRun>>;

/** The stage in progress: its settings, model and optimiser. */
interface StageRun {
  readonly stage: StageConfig;
  readonly model: FCN;
  readonly optimizer: Optimizer;
}

/** Epochs over the whole run before the state's epoch (from 0). */
function globalEpoch(c: TrainConfig, state: TrainState): number {
  return c.stages.slice(0, state.stage).reduce((n, st) => n + st.epochs, 0) + state.epoch;
}

/**
 * Loads the newest checkpoint of the run that loads: `last`, else `last.prev`. Anything
 * wrong with a file — missing, truncated, not a checkpoint, non-finite weights — passes to
 * the next (`skipped` says each with why); with none left, a ResumeError names every file
 * and its reason.
 */
function loadResumePoint(c: TrainConfig, paths: RunPaths): { state: TrainState; current: StageRun; from: string; skipped: string[] } {
  const skipped: string[] = [];
  for (const file of [paths.last, paths.previous]) {
    if (!existsSync(file)) {
      skipped.push(`${file}: no such file`);
      continue;
    }
    try {
      const ck = loadCheckpoint(file, c.model.dropout);
      // A finished run resumed has no stage left to train: its last one stands in.
      const stage = c.stages[Math.min(ck.state.stage, c.stages.length - 1)];
      try {
        const optimizer = makeOptimizer(c, ck.state.lr);
        optimizer.loadState(ck.optimizerArrays, ck.state.optimizer.scalars);
        optimizer.lr = ck.state.lr;
        return { state: ck.state, current: { stage, model: ck.model, optimizer }, from: file, skipped };
      } finally {
        disposeAll(...ck.optimizerArrays.values());
      }
    } catch (e) {
      const message = (e as Error).message;
      skipped.push(message.includes(file) ? message : `${file}: ${message}`);
    }
  }
  throw new ResumeError(
    `cannot resume ${paths.dir}: no checkpoint loads (${skipped.join('; ')}); it holds a run, so it is not started over: train into another folder to start afresh`,
  );
}

/** A new stage's model: seeded, then the previous stage's weights (or --init) where they fit. */
async function startStage(run: Run): Promise<StageRun> {
  const { config: c, state } = run;
  const stage = c.stages[state.stage];
  const model = new FCN({ kind: stage.model, width: c.model.width, style: c.model.style, numClasses: run.classNames.length, classNames: run.classNames, classColors: run.classColors, dropout: c.model.dropout });
  try {
    model.initialize(c.seed);
    const from = state.stage > 0 ? run.paths.stage(state.stage - 1, c.stages[state.stage - 1].model) : c.model.init;
    // Data-parallel: rank 0 loads, and every rank takes its weights when the stage begins.
    if (from && writes(run)) {
      const source = await openWeights(from);
      try {
        const loaded = loadMatchingSource(model, source);
        if (loaded.size === 0) throw new Error(`${from}: no tensor matches a layer of ${stage.model}`);
        if (state.stage === 0) {
          run.log.write({ type: 'init', from: source.path, format: source.format, layers: [...loaded], notes: source.notes });
          for (const note of source.notes) run.out?.write(`${note}\n`);
        }
      } finally {
        source.close?.();
      }
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  state.lr = stage.lr ?? c.optimizer.lr;
  return { stage, model, optimizer: makeOptimizer(c, state.lr) };
}

/** Freezes and unfreezes the stage's layers and logs what trains. */
function beginStage(run: Run, current: StageRun): void {
  const { config: c, state } = run;
  const { model, stage } = current;
  if (model.kind !== stage.model) throw new Error(`${run.resumedFrom ?? run.paths.last}: the checkpoint holds ${model.kind} but stage ${state.stage + 1} trains ${stage.model}`);
  const previousKind = state.stage > 0 ? c.stages[state.stage - 1].model : null;
  applyTrainable(model, stage, previousKind === stage.model ? null : previousKind);
  run.dist?.broadcastWeights(model);
  const trainable = model.layers().filter((l) => l.trainable).map((l) => l.name);
  run.log.write({ type: 'stage', stage: state.stage + 1, model: stage.model, epochs: stage.epochs, trainable, lr: state.lr });
}

/**
 * The batches of the epoch in progress from `state.batch` on, one optimiser step each.
 * Returns null when aborted (after finishing its step), else the epoch's totals.
 */
async function trainOneEpoch(run: Run, current: StageRun) {
  const { config: c, state, options } = run;
  const { model, optimizer, stage } = current;
  const epoch = globalEpoch(c, state);
  const label = `stage ${state.stage + 1}/${c.stages.length} ${stage.model} epoch ${state.epoch + 1}/${stage.epochs}`;
  const bar = run.out ? makeProgress({ label, total: run.trainLoader.batchesPerEpoch - state.batch, stream: run.out, unit: 'batch' }) : null;
  const confusion = new ConfusionMatrix(model.numClasses);
  // Cross-entropy summed over labelled pixels, and their number.
  let lossSum = 0, validSum = 0, images = 0;
  // Data-parallel: whether any rank asked to stop, as the ranks agreed in the last step.
  let agreedStop = false;
  const t0 = performance.now();
  for await (const b of run.trainLoader.epoch(epoch, { startBatch: state.batch })) {
    let x: Tensor | null = null, y: Tensor | null = null, logits: Tensor | null = null;
    try {
      const step = { precision: c.precision, reduction: c.loss.reduction, seed: mixSeed(c.seed, epoch, b.batchIndex), keepLogits: true };
      // Data-parallel: `b` is this rank's share (maybe none) and r the global batch's loss.
      let r: StepResult & { images?: number };
      if (run.dist) {
        const d = run.dist.computeGradients(model, b, { ...step, stop: Boolean(options.signal?.aborted) });
        agreedStop = d.stop;
        r = d;
      } else {
        [x, y] = batchTensors(b);
        r = computeGradients(model, x, y, step);
      }
      logits = r.logits;
      if (!Number.isFinite(r.loss))
        stopNonFinite(run, `the loss became ${r.loss} at stage ${state.stage + 1}, epoch ${state.epoch + 1}, batch ${b.batchIndex + 1}`, { stage: state.stage + 1, epoch: epoch + 1, batch: b.batchIndex, loss: String(r.loss) });
      optimizer.step(model.params());
      state.step++;
      if (logits) scoreLogits(confusion, logits, b.labels);
      // Loss per labelled pixel, whatever the reduction used for training.
      const loss = c.loss.reduction === 'sum' ? (r.valid > 0 ? r.loss / r.valid : 0) : r.loss;
      lossSum += loss * r.valid;
      validSum += r.valid;
      images += r.images ?? b.n;
      state.batch = b.batchIndex + 1;
      if (state.step % c.logEvery === 0) run.log.write({ type: 'step', step: state.step, stage: state.stage + 1, epoch: epoch + 1, batch: state.batch, loss, lr: state.lr, imagesPerSecond: images / ((performance.now() - t0) / 1000) });
      bar?.tick(1, { loss: loss.toFixed(4) });
    } finally {
      disposeAll(x, y, logits);
    }
    options.onStep?.(state, model);
    await tick(); // lets Ctrl-C and native finalisers in
    if (run.dist ? agreedStop : options.signal?.aborted) {
      bar?.done();
      return null;
    }
  }
  return { confusion, lossSum, validSum, images, seconds: (performance.now() - t0) / 1000, bar };
}

/**
 * Validation, the epoch's record, the best weights, the checkpoint, plots and samples; the
 * state moves to the start of the next epoch.
 */
async function endOfEpoch(run: Run, current: StageRun, totals: NonNullable<Awaited<ReturnType<typeof trainOneEpoch>>>): Promise<void> {
  const { config: c, state, paths } = run;
  const { model, stage } = current;
  const epoch = globalEpoch(c, state);
  run.dist?.sum(totals.confusion.counts);
  const tm = totals.confusion.compute();
  const val = run.validates ? await validate(model, run.valLoader, c, epoch, run.dist) : null;
  const record: EpochRecord = {
    epoch: epoch + 1,
    stage: state.stage + 1,
    model: stage.model,
    lr: state.lr,
    train: { loss: totals.validSum > 0 ? totals.lossSum / totals.validSum : 0, pixelAccuracy: tm.pixelAccuracy, meanIoU: tm.meanIoU },
    val: val?.record ?? null,
    imagesPerSecond: totals.images / totals.seconds,
    seconds: totals.seconds,
  };
  // Data-parallel: every rank must hold rank 0's weights, or the job stops before saving; the
  // checksum they agree on goes in the epoch's record.
  const checksum = run.dist?.checkWeights(model, `after epoch ${epoch + 1}`);
  if (checksum) record.weightsChecksum = checksum;
  totals.bar?.done({ loss: record.train.loss.toFixed(4), ...(val ? { 'val mIoU': val.record.meanIoU.toFixed(3) } : {}), ...(checksum ? { weights: checksum } : {}) });
  state.history.push(record);
  run.log.write({ type: 'epoch', ...record });
  // A NaN can hide in a weight whose output a ReLU clamps; never save one (best or last).
  const bad = model.params().find((p) => !Number.isFinite(native.sumSquares(p.master)));
  if (bad) stopNonFinite(run, `${bad.name} holds a non-finite value after epoch ${epoch + 1}`, { stage: state.stage + 1, epoch: epoch + 1, parameter: bad.name });
  state.epoch++;
  state.batch = 0;
  if (val && !(val.record.meanIoU <= (state.best?.meanIoU ?? -1))) {
    state.best = { meanIoU: val.record.meanIoU, epoch: epoch + 1, stage: state.stage + 1 };
    if (writes(run)) saveWeights(paths.best, model, { epoch: String(epoch + 1), val_mean_iou: String(val.record.meanIoU) });
  }
  saveLast(run, current);
  if (!writes(run)) return;
  await writePlots(paths, state.history);
  if (val && val.samples.length > 0) {
    mkdirSync(paths.samples, { recursive: true });
    await writeSampleGrid(path.join(paths.samples, `epoch${String(epoch + 1).padStart(3, '0')}.png`), val.samples, {
      classNames: run.classNames,
      title: `epoch ${epoch + 1} (${stage.model}): image | truth | prediction`,
    });
  }
}

/**
 * Writes the checkpoint of the current state (weights, optimiser, position). A good `last`
 * first becomes `last.prev`: a hard link under a temporary name renamed over it (a copy where
 * the file system has no hard links), so at every moment both names hold whole checkpoints;
 * then the new `last` replaces the old one atomically.
 */
function saveLast(run: Run, { model, optimizer }: StageRun): void {
  const { paths, state } = run;
  state.optimizer = { kind: optimizer.kind, scalars: optimizer.stateScalars() };
  if (!writes(run)) return;
  if (run.lastIsGood && existsSync(paths.last)) {
    const staging = path.join(path.dirname(paths.previous), `.${path.basename(paths.previous)}.${process.pid}.tmp`);
    rmSync(staging, { force: true });
    try {
      linkSync(paths.last, staging);
    } catch {
      copyFileSync(paths.last, staging);
    }
    renameSync(staging, paths.previous);
  }
  saveCheckpoint(paths.last, model, optimizer, state);
  run.lastIsGood = true;
}

/** Logs the non-finite value and stops the run, saying which checkpoint stays good. */
function stopNonFinite(run: Run, what: string, fields: Record<string, unknown>): never {
  run.log.write({ type: 'nonfinite', ...fields });
  const good = run.lastIsGood ? run.paths.last : run.resumedFrom;
  throw new NonFiniteLossError(`${what}: stopping (${good ? `the last good checkpoint is ${good}` : 'no checkpoint was written yet'})`);
}

/** The stage's weights file; the state moves to the next stage. */
function endOfStage(run: Run, { model, stage }: StageRun): void {
  const { state, paths } = run;
  const file = paths.stage(state.stage, stage.model);
  if (writes(run)) saveWeights(file, model, { stage: String(state.stage + 1) });
  run.stageWeights.push(file);
  run.log.write({ type: 'stage_end', stage: state.stage + 1, model: stage.model, weights: file });
  state.stage++;
  state.epoch = 0;
  state.batch = 0;
}

/** The outcome of a run stopped by its signal (its checkpoint is already written). */
function interrupted(run: Run): TrainOutcome {
  const { state } = run;
  // Mid-epoch the epoch in progress; at an epoch's end the one just completed.
  const epoch = globalEpoch(run.config, state) + (state.batch > 0 ? 1 : 0);
  run.log.write({ type: 'interrupted', stage: state.stage + 1, epoch, batch: state.batch, step: state.step, checkpoint: run.paths.last });
  return outcomeOf(run, 'interrupted');
}

/** Whether this process writes the run folder (data-parallel: rank 0 only). */
function writes(run: Run): boolean {
  return !run.dist || run.dist.isRoot;
}

function outcomeOf(run: Run, status: TrainOutcome['status']): TrainOutcome {
  return { status, state: run.state, paths: run.paths, stageWeights: run.stageWeights, ...(run.resumedFrom ? { resumedFrom: run.resumedFrom } : {}) };
}

/** The run's record (config.json on a new run), its data loaders and its log's first line. */
async function openRun(c: TrainConfig, paths: RunPaths, options: TrainOptions, resumed: ReturnType<typeof loadResumePoint> | null, out: ProgressStream | null) {
  const dist = options.distributed ?? null;
  const root = !dist || dist.isRoot;
  const ranks = dist?.size ?? 1;
  const allreduce = dist ? { allreduce: { precision: dist.options.precision, bucketMb: dist.options.bucketMb } } : {};
  if (!resumed && root) writeFileAtomic(paths.config, JSON.stringify({ ...c, ranks, ...allreduce, codeVersion: codeVersion(), created: new Date().toISOString() }, null, 2) + '\n');

  const trainSet = limit(await openDataset(c.data.root, { split: c.data.trainSplit }), c.data.limitTrain);
  const valSet = limit(await openDataset(c.data.root, { split: c.data.valSplit }), c.data.limitVal);
  // One process's loader, or, data-parallel, this rank's share of it.
  const loader = (split: 'train' | 'val', o: LoaderOptions) => (dist ? dist.loader(split, o) : new DataLoader(o));
  const state: TrainState = resumed?.state ?? { stage: 0, epoch: 0, batch: 0, step: 0, lr: c.stages[0].lr ?? c.optimizer.lr, optimizer: { kind: c.optimizer.kind, scalars: {} }, best: null, history: [] };
  const run = {
    config: c,
    paths,
    options,
    /** Where progress and notes go (null: nowhere). */
    out,
    // A rank that does not write logs nowhere.
    log: root ? openJsonl(paths.log) : ({ path: paths.log, write: () => {}, close: () => {} } as JsonlLog),
    trainLoader: loader('train', { dataset: trainSet, pipeline: trainPipelineOf(c), batchSize: c.batchSize, shuffle: true, seed: c.seed, workers: c.data.workers }),
    valLoader: loader('val', { dataset: valSet, pipeline: evalPipeline({ size: c.data.size, means: c.data.means }), batchSize: c.batchSize, shuffle: false, seed: c.seed, workers: c.data.workers }),
    classNames: trainSet.classes.names,
    classColors: trainSet.classes.colors,
    validates: valSet.entries.length > 0,
    state,
    stageWeights: c.stages.slice(0, state.stage).map((s, i) => paths.stage(i, s.model)),
    /** Data-parallel training: this rank (only rank 0 writes). */
    dist,
    /** The checkpoint this call resumed from, if any. */
    resumedFrom: resumed?.from ?? null,
    /**
     * Whether `paths.last` holds a checkpoint known to load (written by this call, or resumed
     * from): only such a file may become the previous generation, so a damaged `last` never
     * replaces a good `last.prev`.
     */
    lastIsGood: resumed?.from === paths.last,
  };
  run.log.write({
    type: resumed ? 'resume' : 'start',
    time: new Date().toISOString(),
    stage: state.stage,
    epoch: state.epoch,
    batch: state.batch,
    train: trainSet.entries.length,
    val: valSet.entries.length,
    ranks,
    ...allreduce,
    ...(resumed ? { from: resumed.from, skipped: resumed.skipped } : {}),
  });
  return run;
}

/**
 * Trains as `config` says, in `runDir`. With `resume`, continues from the run's last
 * checkpoint (same optimiser state, learning rate, epoch and data order), or the previous
 * one when the last is missing or damaged; never from scratch.
 */
export async function train(config: TrainConfig, runDir: string, options: TrainOptions = {}): Promise<TrainOutcome> {
  validateConfig(config);
  const c = config;
  const paths = runPaths(runDir);
  const dist = options.distributed ?? null;
  dist?.checkBatch(c.batchSize);
  const root = !dist || dist.isRoot;
  if (root) mkdirSync(path.dirname(paths.last), { recursive: true });
  const out = !root ? null : options.progress === undefined ? process.stderr : options.progress;

  const resumed = options.resume ? loadResumePoint(c, paths) : null;
  let current: StageRun | null = resumed?.current ?? null;
  let run: Run | null = null;
  try {
    if (resumed && resumed.skipped.length > 0) {
      const at = resumed.state;
      out?.write(`resuming from ${resumed.from} (stage ${at.stage + 1}, epoch ${at.epoch + 1}, batch ${at.batch}): ${resumed.skipped.join('; ')}\n`);
    }
    run = await openRun(c, paths, options, resumed, out);
    const state = run.state;

    while (state.stage < c.stages.length) {
      current ??= await startStage(run);
      beginStage(run, current);
      while (state.epoch < current.stage.epochs) {
        const totals = await trainOneEpoch(run, current);
        if (!totals) {
          saveLast(run, current);
          return interrupted(run);
        }
        await endOfEpoch(run, current, totals);
        if (dist ? dist.any(Boolean(options.signal?.aborted)) : options.signal?.aborted) return interrupted(run);
      }
      endOfStage(run, current);
      current.model.dispose();
      current.optimizer.dispose();
      current = null;
    }
    run.log.write({ type: 'end', time: new Date().toISOString(), best: state.best });
    return outcomeOf(run, 'completed');
  } finally {
    current?.model.dispose();
    current?.optimizer.dispose();
    if (run) {
      run.log.close();
      await run.trainLoader.close();
      await run.valLoader.close();
    }
  }
}
