// Training configuration: defaults, Keras-FCN's and the paper's recipes, and validation.
// A run directory records the fully resolved configuration, so a run can be repeated or
// resumed from it alone.
import { FCN_KINDS, FCN_STYLES, type FcnKind, type FcnStyle } from '../models/fcn.js';

/** Which layers a stage trains. */
export type Trainable =
  | 'all' // every convolution (the bilinear upsampling layers stay frozen)
  | 'new' // only the layers this stage adds (not taken from the previous stage)
  | 'head' // everything but the VGG16 blocks
  | string[]; // these layers by name

export interface StageConfig {
  model: FcnKind;
  epochs: number;
  trainable: Trainable;
  /** Learning rate of this stage (defaults to the optimiser's). */
  lr?: number;
}

export interface TrainConfig {
  /** A name for the run (the run directory's name by default). */
  name?: string;
  data: {
    /** A VOC-layout root (VOC, SBD or custom: see `fcn data`). */
    root: string;
    trainSplit: string;
    valSplit: string;
    /** Images are resized with padding to size×size (the seed: 512); 0 keeps their size. */
    size: number;
    /** Random scale range and horizontal flip for training (scale [1, 1] turns it off). */
    scale: [number, number];
    flip: boolean;
    means: 'keras' | 'caffe';
    /** Decode/augment worker threads. */
    workers: number;
    /** Use at most this many training / validation images (0: all). */
    limitTrain: number;
    limitVal: number;
  };
  model: {
    width: number;
    dropout: number;
    /** Keras-FCN's network ('keras') or the paper's Caffe network ('caffe'). */
    style: FcnStyle;
    /**
     * Weights to start the first stage from: any weights file the project reads (safetensors,
     * Keras .h5, Caffe .caffemodel — a VGG16 backbone or an FCN) or a known name (`vgg16`).
     */
    init?: string;
  };
  optimizer: {
    kind: 'adam' | 'sgd';
    lr: number;
    /** Adam: Keras L2 on conv kernels (loss += λ·Σw²). */
    l2: number;
    /** SGD: momentum and weight decay. */
    momentum: number;
    weightDecay: number;
  };
  loss: { reduction: 'mean' | 'sum' };
  batchSize: number;
  seed: number;
  precision: 'float32' | 'bfloat16';
  stages: StageConfig[];
  /** Validation images shown in the per-epoch sample grid. */
  samples: number;
  /** A step record in the log every this many steps. */
  logEvery: number;
}

export type Schedule = 'keras' | 'paper';

/** Keras-FCN's recipe: Adam, lr 1e-4, L2 1e-5, dropout 0.2, E epochs per stage, then F with everything unfrozen. */
export function kerasStages(epochs = 10, finalEpochs = epochs, backbonePretrained = false): StageConfig[] {
  return [
    // With an ImageNet backbone the first stage trains only what sits on top of it.
    { model: 'fcn32', epochs, trainable: backbonePretrained ? 'head' : 'all' },
    { model: 'fcn16', epochs, trainable: 'new' },
    { model: 'fcn8', epochs, trainable: 'new' },
    { model: 'fcn8', epochs: finalEpochs, trainable: 'all' },
  ];
}

export function defaultConfig(root: string): TrainConfig {
  return {
    data: { root, trainSplit: 'train', valSplit: 'val', size: 512, scale: [1, 1], flip: false, means: 'keras', workers: 1, limitTrain: 0, limitVal: 0 },
    model: { width: 1, dropout: 0.2, style: 'keras' },
    optimizer: { kind: 'adam', lr: 1e-4, l2: 1e-5, momentum: 0.99, weightDecay: 5e-4 },
    loss: { reduction: 'mean' },
    batchSize: 16,
    seed: 0,
    precision: 'float32',
    stages: kerasStages(),
    samples: 4,
    logEvery: 10,
  };
}

/** Applies a schedule's settings (Keras-FCN's are the defaults). */
export function applySchedule(config: TrainConfig, schedule: Schedule, epochs?: number, finalEpochs?: number): TrainConfig {
  if (schedule === 'keras') return { ...config, stages: kerasStages(epochs ?? 10, finalEpochs ?? epochs ?? 10, config.model.init !== undefined) };
  return {
    ...config,
    optimizer: { ...config.optimizer, kind: 'sgd', momentum: 0.99, weightDecay: 5e-4, lr: 1e-10 },
    loss: { reduction: 'sum' },
    batchSize: 1,
    // The paper's network, with Caffe's means.
    model: { ...config.model, dropout: 0.5, style: 'caffe' },
    data: { ...config.data, means: 'caffe' },
    // The paper's stages: all layers, lr 1e-10 / 1e-12 / 1e-14.
    stages: [
      { model: 'fcn32', epochs: epochs ?? 10, trainable: 'all', lr: 1e-10 },
      { model: 'fcn16', epochs: epochs ?? 10, trainable: 'all', lr: 1e-12 },
      { model: 'fcn8', epochs: epochs ?? 10, trainable: 'all', lr: 1e-14 },
    ],
  };
}

/** Deep-merges a partial configuration (from a JSON file) into a full one. */
export function mergeConfig(base: TrainConfig, patch: unknown, source: string): TrainConfig {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new Error(`${source}: the configuration must be a JSON object`);
  const merge = (a: Record<string, unknown>, b: Record<string, unknown>, where: string): Record<string, unknown> => {
    const out = { ...a };
    for (const [k, v] of Object.entries(b)) {
      if (!(k in a) && !['name', 'init'].includes(k)) throw new Error(`${source}: unknown setting '${where}${k}'`);
      const cur = a[k];
      out[k] = cur && typeof cur === 'object' && !Array.isArray(cur) && v && typeof v === 'object' && !Array.isArray(v) ? merge(cur as Record<string, unknown>, v as Record<string, unknown>, `${where}${k}.`) : v;
    }
    return out;
  };
  return merge(base as unknown as Record<string, unknown>, patch as Record<string, unknown>, '') as unknown as TrainConfig;
}

/** Checks every setting; the message names the setting and the bad value. */
export function validateConfig(c: TrainConfig, source = 'config'): void {
  const fail = (what: string, value: unknown, want: string) => {
    throw new Error(`${source}: ${what} must be ${want}, got ${JSON.stringify(value)}`);
  };
  const posInt = (what: string, v: unknown) => (Number.isInteger(v) && (v as number) > 0) || fail(what, v, 'a positive integer');
  const nonNegInt = (what: string, v: unknown) => (Number.isInteger(v) && (v as number) >= 0) || fail(what, v, 'a non-negative integer');
  const nonNeg = (what: string, v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0) || fail(what, v, 'a non-negative number');
  if (typeof c.data.root !== 'string' || !c.data.root) fail('data.root', c.data.root, 'a dataset folder');
  nonNegInt('data.size', c.data.size);
  if (c.data.size % 32 !== 0 && c.data.size !== 0) fail('data.size', c.data.size, 'a multiple of 32 (or 0)');
  if (!Array.isArray(c.data.scale) || c.data.scale.length !== 2 || !(c.data.scale[0] > 0 && c.data.scale[1] >= c.data.scale[0])) fail('data.scale', c.data.scale, '[min, max] with 0 < min ≤ max');
  if (!['keras', 'caffe'].includes(c.data.means)) fail('data.means', c.data.means, "'keras' or 'caffe'");
  nonNegInt('data.workers', c.data.workers);
  nonNegInt('data.limitTrain', c.data.limitTrain);
  nonNegInt('data.limitVal', c.data.limitVal);
  if (!(c.model.width > 0 && c.model.width <= 1)) fail('model.width', c.model.width, 'in (0, 1]');
  if (!(c.model.dropout >= 0 && c.model.dropout < 1)) fail('model.dropout', c.model.dropout, 'in [0, 1)');
  if (!FCN_STYLES.includes(c.model.style)) fail('model.style', c.model.style, FCN_STYLES.map((s) => `'${s}'`).join(' or '));
  if (!['adam', 'sgd'].includes(c.optimizer.kind)) fail('optimizer.kind', c.optimizer.kind, "'adam' or 'sgd'");
  if (!(c.optimizer.lr > 0)) fail('optimizer.lr', c.optimizer.lr, 'positive');
  nonNeg('optimizer.l2', c.optimizer.l2);
  nonNeg('optimizer.momentum', c.optimizer.momentum);
  nonNeg('optimizer.weightDecay', c.optimizer.weightDecay);
  if (!['mean', 'sum'].includes(c.loss.reduction)) fail('loss.reduction', c.loss.reduction, "'mean' or 'sum'");
  posInt('batchSize', c.batchSize);
  nonNegInt('seed', c.seed);
  if (!['float32', 'bfloat16'].includes(c.precision)) fail('precision', c.precision, "'float32' or 'bfloat16'");
  nonNegInt('samples', c.samples);
  posInt('logEvery', c.logEvery);
  if (!Array.isArray(c.stages) || c.stages.length === 0) fail('stages', c.stages, 'a non-empty list');
  c.stages.forEach((s, i) => {
    if (!FCN_KINDS.includes(s.model)) fail(`stages[${i}].model`, s.model, FCN_KINDS.join(', '));
    nonNegInt(`stages[${i}].epochs`, s.epochs);
    if (!(Array.isArray(s.trainable) || ['all', 'new', 'head'].includes(s.trainable))) fail(`stages[${i}].trainable`, s.trainable, "'all', 'new', 'head' or a list of layer names");
    if (s.lr !== undefined && !(s.lr > 0)) fail(`stages[${i}].lr`, s.lr, 'positive');
  });
}
