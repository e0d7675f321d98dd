// The FCN as data: one ordered description of the network, and the walk every pass takes
// over it — training with its tape and whole-image inference (fcn.ts), tiled inference and
// its receptive fields (infer/), the stage maps, calibration (quant/), the ONNX graph
// (export/). Each pass supplies the operations (NetworkOps); the order is written once here.
// The layers' names in both styles, kernels and channels are the weight files' table
// (io/weight-layers.ts), which the readers share.
//
// As the paper's FCN (Long, Shelhamer & Darrell; pytorch-fcn's fcn8s.py):
//   VGG16's five blocks of 3×3 convolutions, each ending in 2×2 max pooling (1/2 … 1/32);
//   conv6 (fc6 as a 7×7 convolution) and conv7 (fc7, 1×1), each followed by dropout, and
//   score7 (score_fr, 1×1): class scores at 1/32;
//   each skip (FCN-16s: one, FCN-8s: two) doubles the coarser scores with a transposed
//   convolution, scores a finer pool (block4_pool, then block3_pool; scaled first in the
//   at-once FCN-8s), crops those scores onto the doubled map and adds them;
//   a last transposed convolution upsamples to the input's resolution, cropped to the input.
// 'keras' (Keras-FCN's) pads the input to a multiple of 32 so every map aligns ('same'
// convolutions, floor pooling); 'caffe' (the paper's) pads conv1_1 by 100 so any input
// survives the unpadded conv6, pools rounding up, and crops at offsets computed here.
import { FCN_OUTPUTS, SCORE_LAYER, SKIP_LAYERS, VGG16_BLOCKS, VGG16_CLASSIFIER, WEIGHT_LAYERS, scaledChannels, type WeightLayer } from '../io/weight-layers.js';

export type FcnKind = keyof typeof FCN_OUTPUTS;
export const FCN_KINDS: readonly FcnKind[] = ['fcn32', 'fcn16', 'fcn8'];
export type FcnStyle = 'keras' | 'caffe';
export const FCN_STYLES: readonly FcnStyle[] = ['keras', 'caffe'];
/** The class score maps inside the network that the "How it works" views show. */
export type StageMapName = 'score7' | 'score4' | 'fuse4' | 'score3' | 'fuse3';
const SKIP_STAGES: [StageMapName, StageMapName][] = [['score4', 'fuse4'], ['score3', 'fuse3']];

/** A convolution of the network with its geometry at the model's width. */
export interface Layer extends WeightLayer {
  padding: number;
  inChannels: number;
  outChannels: number;
  relu: boolean;
  /** The dropout that follows it in training (drop6, drop7). */
  dropout?: string;
}

/** Max pooling, kernel × kernel with stride kernel; Caffe rounds the output size up, Keras down. */
export type Pool = { name: string; kernel: number; ceil: boolean };
export type Block = { convs: Layer[]; pool: Pool };

export interface Skip {
  /** Doubles the coarser scores. */
  upsample: Layer;
  /** The block whose pool it scores: 3 (block4_pool) or 2 (block3_pool). */
  block: number;
  score: Layer;
  /** The factor on the pool before scoring (Caffe's FCN-8s trained at once); undefined: none. */
  scale: number | undefined;
  /** Offset of the crop of the scores onto the doubled map; null: the same size already (keras). */
  crop: number | null;
  /** Its stage maps, at `stride` input pixels per map pixel: the cropped scores and the sum. */
  stages: [StageMapName, StageMapName];
  stride: number;
}

export interface Network {
  /** The keras style pads the input to a multiple of this (the body's stride); 1: not padded. */
  padTo: number;
  blocks: Block[];
  /** conv6, conv7 and score7: the class scores, the stage map `headStage` at `headStride`. */
  head: Layer[];
  headStage: StageMapName;
  headStride: number;
  skips: Skip[];
  /** The upsampling to the input's resolution, and the crop that realigns it with the input. */
  output: { upsample: Layer; crop: number };
}

/** The network of a kind and style at a width, for a number of classes (with the at-once skip scales, if any). */
export function describeNetwork(o: { kind: FcnKind; style: FcnStyle; width: number; numClasses: number; skipScales: readonly [number, number] | null }): Network {
  const caffe = o.style === 'caffe';
  const channels = (l: WeightLayer) => (l.outputs === 'classes' ? o.numClasses : scaledChannels(l.outputs, o.width));
  const inputsOf = (l: WeightLayer) => (l.reads === null ? 3 : l.reads === 'classes' ? o.numClasses : channels(WEIGHT_LAYERS.get(l.reads)!));
  // Keras pads 'same' throughout; Caffe pads its 3×3 convolutions by 1 (conv1_1 by 100, so
  // that any input survives the unpadded conv6) and nothing else. A ReLU follows every
  // convolution but the scorers and the upsamplings.
  const layer = (l: WeightLayer, caffePadding = 0, dropout?: string): Layer => ({
    ...l, padding: caffe ? caffePadding : (l.kernel - l.stride) / 2, inChannels: inputsOf(l), outChannels: channels(l), relu: l.outputs !== 'classes', ...(dropout ? { dropout } : {}),
  });
  const blocks = VGG16_BLOCKS.map((convs, b) => ({
    convs: convs.map((l) => layer(l, l.caffe === 'conv1_1' ? 100 : 1)),
    pool: { name: `block${b + 1}_pool`, kernel: 2, ceil: caffe },
  }));
  const [fc6, fc7] = VGG16_CLASSIFIER as [WeightLayer, WeightLayer];
  const head = [layer(fc6, 0, 'drop6'), layer(fc7, 0, 'drop7'), layer(SCORE_LAYER)];
  const headStride = blocks.reduce((s, b) => s * b.pool.kernel, 1);
  // Each skip's maps are finer than the last by its upsampling's stride.
  let stride = headStride;
  const skips = SKIP_LAYERS.slice(0, FCN_OUTPUTS[o.kind].skips).map((s, k): Skip => ({
    upsample: layer(s.upsample),
    block: blocks.findIndex((b) => b.convs.some((c) => c.name === s.score.reads)),
    score: layer(s.score),
    scale: o.skipScales?.[k],
    crop: null,
    stages: SKIP_STAGES[k]!,
    stride: (stride = stride / s.upsample.stride),
  }));
  const net: Network = { padTo: caffe ? 1 : headStride, blocks, head, headStage: 'score7', headStride, skips, output: { upsample: layer(FCN_OUTPUTS[o.kind].upsample), crop: 0 } };
  alignCrops(net, caffe);
  return net;
}

/**
 * Where a map's pixels sit in the input: input coordinate = scale · index + shift, for the
 * centre of each pixel's window. Composed layer by layer, it gives the crop that realigns
 * two maps (Caffe's crop offsets are computed this way, not pasted).
 */
interface CoordMap {
  scale: number;
  shift: number;
}

/** The map of a layer's output through a layer with kernel k, stride s, padding p. */
function through(m: CoordMap, { kernel: k, stride: s, padding: p, transposed }: { kernel: number; stride: number; padding: number; transposed: boolean }): CoordMap {
  // Output pixel i of a convolution/pooling is centred on input s·i − p + (k−1)/2; a
  // transposed convolution inverts that relation.
  const [a, b] = transposed ? [1 / s, (p - (k - 1) / 2) / s] : [s, (k - 1) / 2 - p];
  return { scale: m.scale * a, shift: m.scale * b + m.shift };
}

/** The crop offset that aligns map `t` with map `ref` (both at the same scale). */
function alignOffset(t: CoordMap, ref: CoordMap): number {
  if (Math.abs(t.scale - ref.scale) > 1e-9) throw new Error(`cannot align maps at scales ${t.scale} and ${ref.scale}`);
  const o = (ref.shift - t.shift) / t.scale;
  if (!Number.isInteger(Math.round(o * 1e6) / 1e6) || o < 0) throw new Error(`maps do not align on whole pixels (offset ${o})`);
  return Math.round(o);
}

/**
 * Sets the crops from every layer's kernel, stride and padding: the skips' scores onto the
 * doubled maps (Caffe's 5 and 9; none in the keras style, where the maps match) and the
 * output onto the input (0 in the keras style; Caffe's 32, 16 or 8 network's 19, 27, 31).
 */
function alignCrops(net: Network, caffe: boolean): void {
  const input: CoordMap = { scale: 1, shift: 0 };
  const pooled: CoordMap[] = [];
  let m = input;
  for (const block of net.blocks) {
    for (const conv of block.convs) m = through(m, conv);
    pooled.push((m = through(m, { kernel: block.pool.kernel, stride: block.pool.kernel, padding: 0, transposed: false })));
  }
  for (const l of net.head) m = through(m, l);
  for (const skip of net.skips) {
    m = through(m, skip.upsample);
    const offset = alignOffset(through(pooled[skip.block]!, skip.score), m);
    skip.crop = caffe ? offset : null;
  }
  net.output.crop = alignOffset(through(m, net.output.upsample), input);
}

/** Every convolution, input to output: the order of the weights' tensors. */
export function networkLayers(net: Network): Layer[] {
  return [...net.blocks.flatMap((b) => b.convs), ...net.head, ...net.skips.flatMap((s) => [s.upsample, s.score]), net.output.upsample];
}

/**
 * What a pass does at each step of the walk, on values of its own: tensors (inference),
 * recorded steps (training), value names (the ONNX graph).
 */
export interface NetworkOps<V> {
  /** Zeros at the bottom and right up to a multiple of `multiple` (may return x when there). */
  pad(x: V, multiple: number): V;
  /** A convolution, its input multiplied by `factor` first when one is given. */
  conv(layer: Layer, x: V, factor?: number): V;
  pool(pool: Pool, x: V): V;
  /** The identity except in training. */
  dropout(name: string, x: V): V;
  /** x from (offset, offset) on, to the size of `like`; null: x as it is. */
  crop(x: V, offset: number | null, like: V, name: string): V;
  add(a: V, b: V, name: string): V;
  /** The walk reads x no more. */
  free(x: V): void;
  /** A stage map, as the walk makes it. */
  stage?(name: StageMapName, x: V): void;
  /** After each block of the body. */
  endBlock?(): void;
}

/** f(x), freeing x when f made a new value (unless x is `kept`). */
function then<V>(ops: NetworkOps<V>, x: V, f: (x: V) => V, kept?: Map<Skip, V>): V {
  const y = f(x);
  if (y !== x && !(kept && [...kept.values()].includes(x))) ops.free(x);
  return y;
}

/** Frees `held` when f fails, and rethrows. */
function freeingOnError<V, R>(ops: NetworkOps<V>, held: () => Iterable<V>, f: () => R): R {
  try {
    return f();
  } catch (e) {
    for (const v of held()) ops.free(v);
    throw e;
  }
}

/**
 * Blocks [from, to) of the body on x: the last block's pool, and the pools of the range that
 * the skips read, kept for them.
 */
export function walkBlocks<V>(net: Network, x: V, ops: NetworkOps<V>, from = 0, to = net.blocks.length): { pool: V; skips: Map<Skip, V> } {
  let t = x;
  const skips = new Map<Skip, V>();
  return freeingOnError(ops, () => new Set([t, ...skips.values()]), () => {
    for (let i = from; i < to; i++) {
      const block = net.blocks[i]!;
      for (const l of block.convs) t = then(ops, t, (v) => ops.conv(l, v), skips);
      t = then(ops, t, (v) => ops.pool(block.pool, v));
      ops.endBlock?.();
      for (const s of net.skips) if (s.block === i) skips.set(s, t);
    }
    return { pool: t, skips };
  });
}

/** conv6 → conv7 → score7 on block5_pool: the class scores at 1/32. */
export function walkHead<V>(net: Network, x: V, ops: NetworkOps<V>): V {
  let t = x;
  return freeingOnError(ops, () => [t], () => {
    for (const l of net.head) {
      t = then(ops, t, (v) => ops.conv(l, v));
      if (l.dropout) t = then(ops, t, (v) => ops.dropout(l.dropout!, v));
    }
    ops.stage?.(net.headStage, t);
    return t;
  });
}

/** A skip's class scores of its pool (scaled first in the at-once model): a 1×1 convolution, pixel by pixel. */
export function scorePool<V>(skip: Skip, pool: V, ops: NetworkOps<V>): V {
  return ops.conv(skip.score, pool, skip.scale);
}

/**
 * The skips on the coarse scores: each doubles them, scores its pool and adds the scores,
 * cropped. `skips` holds each skip's pool, or with `scored` its scores already (tiled
 * inference scores the pools tile by tile); all are freed.
 */
export function walkSkips<V>(net: Network, coarse: V, skips: Map<Skip, V>, ops: NetworkOps<V>, scored = false): V {
  let t = coarse;
  return freeingOnError(ops, () => [t, ...skips.values()], () => {
    for (const skip of net.skips) {
      const up = (t = then(ops, t, (v) => ops.conv(skip.upsample, v)));
      if (!scored) skips.set(skip, then(ops, skips.get(skip)!, (v) => scorePool(skip, v, ops)));
      const s = then(ops, skips.get(skip)!, (v) => ops.crop(v, skip.crop, up, `${skip.score.name}_cropped`));
      skips.set(skip, s);
      ops.stage?.(skip.stages[0], s);
      t = ops.add(up, s, skip.stages[1]);
      skips.delete(skip);
      ops.free(up);
      ops.free(s);
      ops.stage?.(skip.stages[1], t);
    }
    return t;
  });
}

/** The whole network on x: the logits at x's size. */
export function walkNetwork<V>(net: Network, x: V, ops: NetworkOps<V>): V {
  const body = walkBlocks(net, net.padTo > 1 ? ops.pad(x, net.padTo) : x, ops);
  const coarse = freeingOnError(ops, () => body.skips.values(), () => walkHead(net, body.pool, ops));
  let t = walkSkips(net, coarse, body.skips, ops);
  return freeingOnError(ops, () => [t], () => {
    t = then(ops, t, (v) => ops.conv(net.output.upsample, v));
    return then(ops, t, (v) => ops.crop(v, net.output.crop, x, 'logits'));
  });
}
