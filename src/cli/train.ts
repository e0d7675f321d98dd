// `fcn train`: one model or a whole staged recipe, with checkpoints, resume and Ctrl-C.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { engineConfig } from '../engine/config.js';
import { FCN_KINDS, type FcnKind } from '../models/fcn.js';
import { applySchedule, defaultConfig, mergeConfig, validateConfig, type Schedule, type TrainConfig } from '../train/config.js';
import { NonFiniteLossError, runPaths, train, type TrainOutcome } from '../train/trainer.js';
import { UsageError, parse, parseNumber } from './args.js';
import { applyEngineFlags, engineFlags, requireDir, requireFile, writableDir } from './engine-flags.js';

const options = {
  ...engineFlags,
  data: { type: 'string' },
  schedule: { type: 'string' },
  model: { type: 'string' },
  init: { type: 'string' },
  epochs: { type: 'string' },
  'final-epochs': { type: 'string' },
  config: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'string' },
  width: { type: 'string' },
  batch: { type: 'string' },
  lr: { type: 'string' },
  l2: { type: 'string' },
  optimizer: { type: 'string' },
  momentum: { type: 'string' },
  'weight-decay': { type: 'string' },
  reduction: { type: 'string' },
  size: { type: 'string' },
  scale: { type: 'string' },
  flip: { type: 'boolean' },
  dropout: { type: 'string' },
  seed: { type: 'string' },
  workers: { type: 'string' },
  'train-split': { type: 'string' },
  'val-split': { type: 'string' },
  'limit-train': { type: 'string' },
  'limit-val': { type: 'string' },
} as const;

type Values = ReturnType<typeof parse<typeof options>>['values'];

/** Defaults, then the schedule, then a JSON config file, then flags: the last one wins. */
export function resolveConfig(v: Values): TrainConfig {
  const cmd = 'train';
  if (!v.data) throw new UsageError('fcn train: --data is required (a dataset root: see fcn data)');
  requireDir(cmd, v.data, 'dataset root');
  if (v.schedule && v.model) throw new UsageError('fcn train: give --schedule or --model, not both');
  const schedule = (v.schedule ?? (v.model ? undefined : 'seed')) as Schedule | undefined;
  if (schedule && !['seed', 'paper'].includes(schedule)) throw new UsageError(`fcn train: unknown schedule '${schedule}' (expected seed or paper)`);
  if (v.model && !FCN_KINDS.includes(v.model as FcnKind)) throw new UsageError(`fcn train: unknown model '${v.model}' (expected ${FCN_KINDS.join(', ')})`);
  const int = (flag: string, value: string | undefined, min = 0) => parseNumber(cmd, value, flag, (n) => Number.isInteger(n) && n >= min, min > 0 ? 'a positive integer' : 'a non-negative integer');
  const pos = (flag: string, value: string | undefined) => parseNumber(cmd, value, flag, (n) => n > 0, 'a positive number');
  const nonneg = (flag: string, value: string | undefined) => parseNumber(cmd, value, flag, (n) => n >= 0, 'a non-negative number');
  const epochs = int('epochs', v.epochs);
  const finalEpochs = int('final-epochs', v['final-epochs']);
  let c = defaultConfig(v.data);
  if (v.init) {
    requireFile(cmd, v.init, 'initial weights');
    c.model.init = v.init;
  }
  if (schedule) c = applySchedule(c, schedule, epochs, finalEpochs);
  else c.stages = [{ model: v.model as FcnKind, epochs: epochs ?? 10, trainable: 'all' }];
  if (v.config) {
    requireFile(cmd, v.config, 'config file');
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(v.config, 'utf8'));
    } catch (e) {
      throw new UsageError(`fcn train: ${v.config}: not valid JSON (${(e as Error).message})`);
    }
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
  set(v.optimizer, (x) => {
    if (x !== 'adam' && x !== 'sgd') throw new UsageError(`fcn train: --optimizer must be adam or sgd, got '${x}'`);
    c.optimizer.kind = x;
  });
  set(nonneg('momentum', v.momentum), (x) => (c.optimizer.momentum = x));
  set(nonneg('weight-decay', v['weight-decay']), (x) => (c.optimizer.weightDecay = x));
  set(v.reduction, (x) => {
    if (x !== 'mean' && x !== 'sum') throw new UsageError(`fcn train: --reduction must be mean or sum, got '${x}'`);
    c.loss.reduction = x;
  });
  set(int('size', v.size), (x) => (c.data.size = x));
  set(v.scale, (x) => {
    const parts = x.split(',').map(Number);
    if (parts.length !== 2 || parts.some((p) => !(p > 0))) throw new UsageError(`fcn train: --scale must be MIN,MAX (e.g. 0.5,2), got '${x}'`);
    c.data.scale = [parts[0], parts[1]];
  });
  set(v.flip, (x) => (c.data.flip = x));
  set(parseNumber(cmd, v.dropout, 'dropout', (n) => n >= 0 && n < 1, 'in [0, 1)'), (x) => (c.model.dropout = x));
  set(int('seed', v.seed), (x) => (c.seed = x));
  set(int('workers', v.workers), (x) => (c.data.workers = x));
  set(v['train-split'], (x) => (c.data.trainSplit = x));
  set(v['val-split'], (x) => (c.data.valSplit = x));
  set(int('limit-train', v['limit-train']), (x) => (c.data.limitTrain = x));
  set(int('limit-val', v['limit-val']), (x) => (c.data.limitVal = x));
  c.precision = engineConfig().precision;
  try {
    validateConfig(c, 'fcn train');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return c;
}

/** Runs training with Ctrl-C wired to a clean stop; prints how it ended. */
export async function runTraining(config: TrainConfig, runDir: string, resume: boolean): Promise<TrainOutcome | null> {
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) {
      console.error('\nfcn train: second Ctrl-C, exiting without saving');
      process.exit(130);
    }
    console.error('\nfcn train: Ctrl-C: finishing the step and saving a checkpoint (Ctrl-C again to quit at once)');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const outcome = await train(config, runDir, { resume, signal: abort.signal });
    if (outcome.status === 'interrupted') {
      console.error(`fcn train: stopped at stage ${outcome.state.stage + 1}, epoch ${outcome.state.epoch + 1}, batch ${outcome.state.batch}; saved ${outcome.paths.last}`);
      console.error(`fcn train: continue with: fcn train --resume ${runDir}`);
    }
    return outcome;
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      console.error(`fcn train: ${e.message}`);
      return null;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { values: v } = parse('train', argv, options);
  applyEngineFlags('train', v);
  let config: TrainConfig, runDir: string;
  if (v.resume) {
    const others = Object.keys(v).filter((k) => !['resume', 'threads', 'precision'].includes(k));
    if (others.length) throw new UsageError(`fcn train: --resume continues a run with its own settings; drop --${others[0]}`);
    runDir = v.resume;
    const file = runPaths(runDir).config;
    if (!existsSync(file)) throw new UsageError(`fcn train: ${runDir} is not a run directory (no config.json)`);
    try {
      config = JSON.parse(readFileSync(file, 'utf8')) as TrainConfig;
      validateConfig(config, file);
    } catch (e) {
      throw new UsageError(`fcn train: ${(e as Error).message}`);
    }
  } else {
    config = resolveConfig(v);
    runDir = v.out ?? path.join('runs', `${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}-${config.stages.at(-1)!.model}`);
    writableDir('train', runDir, 'out');
    if (existsSync(runPaths(runDir).config)) throw new UsageError(`fcn train: ${runDir} already holds a run (use --resume ${runDir} to continue it, or another --out)`);
  }
  console.error(`fcn train: run directory ${runDir}`);
  const outcome = await runTraining(config, runDir, Boolean(v.resume));
  if (!outcome) return 1;
  if (outcome.status === 'completed') {
    const best = outcome.state.best;
    console.log(`done: ${outcome.state.history.length} epochs${best ? `, best validation mean IoU ${best.meanIoU.toFixed(4)} (epoch ${best.epoch})` : ''}`);
    console.log(`weights: ${outcome.paths.best} (best), ${outcome.paths.last} (last)`);
  }
  return 0;
}
