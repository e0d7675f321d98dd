// `fcn train`: one model or a whole staged recipe, with checkpoints, resume and Ctrl-C.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { engineConfig, trainingPrecision } from '../engine/config.js';
import { FCN_KINDS, FCN_STYLES, type FcnKind } from '../models/fcn.js';
import { applySchedule, defaultConfig, mergeConfig, validateConfig, type Schedule, type TrainConfig } from '../train/config.js';
import { NonFiniteLossError, runPaths, train, type TrainOutcome } from '../train/trainer.js';
import { DEFAULT_BUCKET_MB, startDistributed, type Distributed } from '../train/distributed.js';
import { UsageError, asUsageError, parse, parseChoice, parseNumber, type ParsedValues } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { REQUIRED, engineOptionSpecs, type CommandSpec } from './help.js';
import { checkInputDir, checkInputFile, checkWeightsArgument, prepareOutputDir } from './paths.js';

// The defaults --help shows come from the configuration itself, so they cannot drift from it.
const kerasDefaults = defaultConfig('');
const paperDefaults = applySchedule(kerasDefaults, 'paper');

export const trainSpec = {
  name: 'train',
  summary: 'train one model or a staged recipe, with checkpoints, resume and Ctrl-C',
  usage: ['--data ROOT [--schedule keras|paper | --model M [--init FILE]] [--out RUN] [options]', '--resume RUN [--threads N] [--precision P] [--allreduce-precision P] [--bucket-mb MB]'],
  details: `--schedule keras (Keras-FCN's recipe; 'seed' is its old name): FCN-32s, then FCN-16s from it training its new layers, then FCN-8s the
same way, then every layer (Adam). --schedule paper: the Caffe solver (SGD momentum ${paperDefaults.optimizer.momentum},
summed loss, batch ${paperDefaults.batchSize}, lr ${paperDefaults.stages.map((s) => s.lr).join(' / ')}). Settings come from the defaults, then the
schedule, then --config, then flags. The run folder holds config.json, log.jsonl, plots/,
samples/ and checkpoints/ (last, last.prev before it, best, one per stage). Ctrl-C finishes
the step, saves and exits; --resume RUN continues where it stopped (from last.prev if last is
missing or damaged; never from scratch). Started by mpirun -np N, the ranks train one model
together: --batch stays the global batch (a multiple of N), each rank computes its share and
the gradients are summed across ranks during the backward pass; only rank 0 writes the run
folder, which every rank must see. A run resumes with any number of ranks. Example:
mpirun -np 2 fcn train --data data/synth --model fcn8 --batch 8 --out runs/two`,
  options: {
    data: { type: 'string', value: 'ROOT', help: 'dataset root: VOC, SBD or custom (see fcn data)', default: `${REQUIRED}, unless --resume` },
    schedule: { type: 'string', value: 'S', help: "keras (Keras-FCN's) or paper (the Caffe solver): a staged recipe", default: 'keras, unless --model' },
    model: { type: 'string', value: 'M', help: `train one stage of this model instead (${FCN_KINDS.join(', ')})`, default: 'the schedule\'s stages' },
    init: { type: 'string', value: 'FILE|NAME', help: 'weights to start the first stage from: any weights file (.safetensors, Keras .h5, .caffemodel) or a fetched name (vgg16, vgg16-notop, fcn32s…)', default: 'random initialisation' },
    style: { type: 'string', value: 'S', help: "network: keras (Keras-FCN's: 'same' convs, input padded to 32) or caffe (the paper's: conv1 padding 100, ceil pooling, crops; Caffe means)", default: `${kerasDefaults.model.style}; paper: ${paperDefaults.model.style}` },
    epochs: { type: 'string', value: 'N', help: 'epochs per stage', default: String(kerasDefaults.stages[0]!.epochs) },
    'final-epochs': { type: 'string', value: 'N', help: 'epochs of the keras schedule\'s last stage (all layers)', default: '--epochs' },
    config: { type: 'string', value: 'FILE', help: 'a JSON file of settings (any part of config.json)', default: 'none' },
    out: { type: 'string', value: 'RUN', help: 'the run folder', default: 'runs/<date>-<model>' },
    resume: { type: 'string', value: 'RUN', help: 'continue this run with its own settings', default: 'a new run' },
    width: { type: 'string', value: 'W', help: 'channel width factor in (0, 1]', default: String(kerasDefaults.model.width) },
    batch: { type: 'string', value: 'N', help: 'images per step', default: `${kerasDefaults.batchSize}; paper: ${paperDefaults.batchSize}` },
    lr: { type: 'string', value: 'LR', help: 'learning rate of every stage', default: `${kerasDefaults.optimizer.lr}; paper: ${paperDefaults.stages.map((s) => s.lr).join(' / ')} by stage` },
    l2: { type: 'string', value: 'L', help: 'Adam: L2 penalty on conv kernels', default: String(kerasDefaults.optimizer.l2) },
    optimizer: { type: 'string', value: 'O', help: 'adam or sgd', default: `${kerasDefaults.optimizer.kind}; paper: ${paperDefaults.optimizer.kind}` },
    momentum: { type: 'string', value: 'M', help: 'SGD momentum', default: String(kerasDefaults.optimizer.momentum) },
    'weight-decay': { type: 'string', value: 'D', help: 'SGD weight decay', default: String(kerasDefaults.optimizer.weightDecay) },
    reduction: { type: 'string', value: 'R', help: 'loss over pixels: mean or sum', default: `${kerasDefaults.loss.reduction}; paper: ${paperDefaults.loss.reduction}` },
    size: { type: 'string', value: 'PX', help: 'images padded/resized to PX×PX, a multiple of 32 (0 keeps their size)', default: String(kerasDefaults.data.size) },
    scale: { type: 'string', value: 'MIN,MAX', help: 'random rescaling range for training', default: `${kerasDefaults.data.scale.join(',')} (off)` },
    flip: { type: 'boolean', help: 'random horizontal flips for training', default: kerasDefaults.data.flip ? 'on' : 'off' },
    dropout: { type: 'string', value: 'P', help: 'dropout rate after conv6 and conv7', default: `${kerasDefaults.model.dropout}; paper: ${paperDefaults.model.dropout}` },
    seed: { type: 'string', value: 'N', help: 'random seed (initialisation, data order, augmentation)', default: String(kerasDefaults.seed) },
    workers: { type: 'string', value: 'N', help: 'image decoding worker threads', default: String(kerasDefaults.data.workers) },
    'train-split': { type: 'string', value: 'NAME', help: 'training split (a name or a list file)', default: kerasDefaults.data.trainSplit },
    'val-split': { type: 'string', value: 'NAME', help: 'validation split (a name or a list file)', default: kerasDefaults.data.valSplit },
    'limit-train': { type: 'string', value: 'N', help: 'use at most N training images (0: all)', default: String(kerasDefaults.data.limitTrain) },
    'limit-val': { type: 'string', value: 'N', help: 'use at most N validation images (0: all)', default: String(kerasDefaults.data.limitVal) },
    'allreduce-precision': { type: 'string', value: 'P', help: 'under mpirun: gradients travel as float32 or bfloat16 (half the bytes, float32 additions)', default: 'float32' },
    'bucket-mb': { type: 'string', value: 'MB', help: 'under mpirun: gradients are sent in buckets of this size as the backward pass finishes them', default: String(DEFAULT_BUCKET_MB) },
    ...engineOptionSpecs,
  },
  examples: [
    'fcn train --data data/VOCdevkit/VOC2012 --schedule keras --init vgg16 --out runs/keras',
    'fcn train --data data/synth --model fcn8 --width 0.25 --size 128 --epochs 5 --out runs/small',
    'fcn train --resume runs/small',
  ],
} satisfies CommandSpec;

/** Defaults, then the schedule, then a JSON config file, then flags: the last one wins. */
export function resolveConfig(v: ParsedValues<typeof trainSpec.options>): TrainConfig {
  const cmd = 'train';
  if (!v.data) throw new UsageError('fcn train: --data is required (a dataset root: see fcn data)');
  checkInputDir(cmd, 'data', v.data);
  if (v.schedule && v.model) throw new UsageError('fcn train: give --schedule or --model, not both');
  // 'seed' was the Keras recipe's first name; it still works so old scripts keep running.
  const schedule = (v.schedule === 'seed' ? 'keras' : v.schedule ?? (v.model ? undefined : 'keras')) as Schedule | undefined;
  if (schedule && !['keras', 'paper'].includes(schedule)) throw new UsageError(`fcn train: unknown schedule '${schedule}' (expected keras or paper)`);
  if (v.model && !FCN_KINDS.includes(v.model as FcnKind)) throw new UsageError(`fcn train: unknown model '${v.model}' (expected ${FCN_KINDS.join(', ')})`);
  const int = (flag: string, value: string | undefined, min = 0) => parseNumber(cmd, value, flag, (n) => Number.isInteger(n) && n >= min, min > 0 ? 'a positive integer' : 'a non-negative integer');
  const pos = (flag: string, value: string | undefined) => parseNumber(cmd, value, flag, (n) => n > 0, 'a positive number');
  const nonneg = (flag: string, value: string | undefined) => parseNumber(cmd, value, flag, (n) => n >= 0, 'a non-negative number');
  const epochs = int('epochs', v.epochs);
  const finalEpochs = int('final-epochs', v['final-epochs']);
  let c = defaultConfig(v.data);
  if (v.init) {
    // A known name (vgg16, fcn8s…) stays a name in config.json; it must be in the cache.
    checkWeightsArgument(cmd, 'init', v.init);
    c.model.init = v.init;
  }
  if (schedule) c = applySchedule(c, schedule, epochs, finalEpochs);
  else c.stages = [{ model: v.model as FcnKind, epochs: epochs ?? 10, trainable: 'all' }];
  if (v.config) {
    checkInputFile(cmd, 'config', v.config);
    const json: unknown = asUsageError(() => JSON.parse(readFileSync(v.config!, 'utf8')), (m) => `fcn train: ${v.config}: not valid JSON (${m})`);
    c = mergeConfig(c, json, v.config);
  }
  const set = <T>(value: T | undefined, apply: (x: T) => void) => value !== undefined && apply(value);
  set(parseNumber(cmd, v.width, 'width', (n) => n > 0 && n <= 1, 'in (0, 1]'), (x) => (c.model.width = x));
  set(int('batch', v.batch, 1), (x) => (c.batchSize = x));
  set(pos('lr', v.lr), (x) => {
    c.optimizer.lr = x;
    for (const s of c.stages) delete s.lr;
  });
  set(nonneg('l2', v.l2), (x) => (c.optimizer.l2 = x));
  set(parseChoice(cmd, v.optimizer, 'optimizer', ['adam', 'sgd'] as const), (x) => (c.optimizer.kind = x));
  set(nonneg('momentum', v.momentum), (x) => (c.optimizer.momentum = x));
  set(nonneg('weight-decay', v['weight-decay']), (x) => (c.optimizer.weightDecay = x));
  set(parseChoice(cmd, v.reduction, 'reduction', ['mean', 'sum'] as const), (x) => (c.loss.reduction = x));
  set(int('size', v.size), (x) => (c.data.size = x));
  set(v.scale, (x) => {
    const parts = x.split(',').map(Number);
    if (parts.length !== 2 || parts.some((p) => !(p > 0))) throw new UsageError(`fcn train: --scale must be MIN,MAX (e.g. 0.5,2), got '${x}'`);
    c.data.scale = [parts[0], parts[1]];
  });
  set(v.flip, (x) => (c.data.flip = x));
  set(parseChoice(cmd, v.style, 'style', FCN_STYLES), (x) => (c.model.style = c.data.means = x));
  set(parseNumber(cmd, v.dropout, 'dropout', (n) => n >= 0 && n < 1, 'in [0, 1)'), (x) => (c.model.dropout = x));
  set(int('seed', v.seed), (x) => (c.seed = x));
  set(int('workers', v.workers), (x) => (c.data.workers = x));
  set(v['train-split'], (x) => (c.data.trainSplit = x));
  set(v['val-split'], (x) => (c.data.valSplit = x));
  set(int('limit-train', v['limit-train']), (x) => (c.data.limitTrain = x));
  set(int('limit-val', v['limit-val']), (x) => (c.data.limitVal = x));
  c.precision = trainingPrecision(engineConfig().precision);
  asUsageError(() => validateConfig(c, 'fcn train'));
  return c;
}

/**
 * Runs training with Ctrl-C wired to a clean stop; prints how it ended. Data-parallel, only
 * rank 0 prints, and an error on any rank names it (the job then ends on every rank).
 */
export async function runTraining(config: TrainConfig, runDir: string, resume: boolean, distributed: Distributed | null = null): Promise<TrainOutcome | null> {
  const root = !distributed || distributed.isRoot;
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) {
      console.error('\nfcn train: second Ctrl-C, exiting without saving');
      process.exit(130);
    }
    // Data-parallel: every rank gets the signal (kill -INT to the ranks); rank 0 speaks.
    if (root) console.error(`\nfcn train: Ctrl-C: finishing the step${distributed ? ' the ranks agree on' : ''} and saving a checkpoint (Ctrl-C again to quit at once)`);
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const outcome = await train(config, runDir, { resume, signal: abort.signal, distributed });
    if (outcome.status === 'interrupted' && root) {
      console.error(`fcn train: stopped at stage ${outcome.state.stage + 1}, epoch ${outcome.state.epoch + 1}, batch ${outcome.state.batch}; saved ${outcome.paths.last}`);
      console.error(`fcn train: continue with: fcn train --resume ${runDir}`);
    }
    return outcome;
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      // Every rank sees the same global loss and stops at the same step.
      if (root) console.error(`fcn train: ${e.message}`);
      return null;
    }
    if (distributed) throw new Error(`rank ${distributed.rank} of ${distributed.size}: ${(e as Error).message}`, { cause: e });
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(trainSpec, argv);
  applyEngineFlags(trainSpec, v);
  // Under mpirun with more than one rank: MPI started and this rank's context; else null.
  const allreducePrecision = parseChoice('train', v['allreduce-precision'], 'allreduce-precision', ['float32', 'bfloat16'] as const) ?? 'float32';
  const bucketMb = parseNumber('train', v['bucket-mb'], 'bucket-mb', (n) => n > 0, 'a positive number') ?? DEFAULT_BUCKET_MB;
  const distributed = startDistributed({ precision: allreducePrecision, bucketMb, threadsGiven: v.threads !== undefined || Boolean(process.env.FCN_THREADS) });
  const root = !distributed || distributed.isRoot;
  let config: TrainConfig, runDir: string;
  if (v.resume) {
    const others = Object.keys(v).filter((k) => !['resume', 'threads', 'precision', 'allreduce-precision', 'bucket-mb'].includes(k));
    if (others.length) throw new UsageError(`fcn train: --resume continues a run with its own settings; drop --${others[0]}`);
    runDir = v.resume;
    const file = runPaths(runDir).config;
    if (!existsSync(file)) throw new UsageError(`fcn train: ${runDir} is not a run directory (no config.json)`);
    config = asUsageError(() => {
      const recorded = JSON.parse(readFileSync(file, 'utf8')) as TrainConfig;
      validateConfig(recorded, file);
      return recorded;
    }, (m) => `fcn train: ${m}`);
    if (root) prepareOutputDir('train', 'resume', runDir);
    // --precision on a resume changes the run's precision from here on (e.g. on a machine
    // without bf16), and says so; without it the run keeps its own.
    const precision = v.precision === undefined ? config.precision : trainingPrecision(engineConfig().precision);
    if (precision !== config.precision && root) console.error(`fcn train: resuming in ${precision} (the run so far trained in ${config.precision})`);
    config = { ...config, precision };
    asUsageError(() => checkInputDir('train', 'data', config.data.root), (m) => `${m} (the dataset root recorded in ${file})`);
  } else {
    config = resolveConfig(v);
    runDir = v.out ?? path.join('runs', `${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}-${config.stages.at(-1)!.model}`);
    if (root) prepareOutputDir('train', 'out', runDir);
    if (existsSync(runPaths(runDir).config)) throw new UsageError(`fcn train: ${runDir} already holds a run (use --resume ${runDir} to continue it, or another --out)`);
  }
  if (distributed) {
    asUsageError(() => distributed.checkBatch(config.batchSize), (m) => `fcn train: ${m}`);
    // Every rank has checked the folder before rank 0 writes in it.
    distributed.mpi.barrier();
  }
  if (root) console.error(`fcn train: run directory ${runDir}, ${config.precision}${distributed ? ` (${distributed.size} ranks, ${config.batchSize / distributed.size} images each per step)` : ''}`);
  const outcome = await runTraining(config, runDir, Boolean(v.resume), distributed);
  if (!outcome) return 1;
  if (outcome.status === 'completed' && root) {
    const best = outcome.state.best;
    console.log(`done: ${outcome.state.history.length} epochs${best ? `, best validation mean IoU ${best.meanIoU.toFixed(4)} (epoch ${best.epoch})` : ''}`);
    console.log(`weights: ${outcome.paths.best} (best), ${outcome.paths.last} (last)`);
  }
  return 0;
}
