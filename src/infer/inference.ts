// Inference: decoded RGB (or an image file) and a model in; a label map, and when asked the
// logits or class probabilities, out. Every command that segments goes through here: fcn
// predict, fcn segment, fcn eval, the demo and the web server.
//
// Small images run whole, as the model's own forward pass does. A large one would need
// ~1.1 kB of activations per pixel at full width (a 12 MP photo: ~13 GB), so above a memory
// budget the forward pass runs in stages, each within the budget:
//
//  1. the VGG16 body in windows whose stitched maps equal the whole image's (tiling.ts):
//     blocks 1-3 in image tiles on the 8-pixel grid overlapping by block3_pool's receptive
//     field (44 px: margins of 24), keeping block3_pool and score3 (1×1, so per pixel); then
//     blocks 4-5 in windows of the stitched block3_pool, keeping block5_pool and score4. When
//     block3_pool (16 bytes per input pixel at full width) would take more than half the
//     budget (over ~17 MP), all five blocks run in image tiles on the 32-pixel grid instead,
//     overlapping by block5_pool's receptive field (212 px: margins of 128) and keeping
//     ~4 bytes per input pixel — more work, as bounded memory.
//  2. conv6 → conv7 → score7 on the stitched block5_pool (1/32 of the input's pixels, but
//     4096 channels), in windows overlapping by conv6's reach (3 pixels) when over budget;
//  3. the skips' upsampling and sums on the whole 1/16 and 1/8 score maps (21 channels);
//  4. the final upsampling, crop and argmax in output windows, each reading the few 1/8 map
//     pixels its transposed convolution needs.
//
// Every pixel of every stage is computed from exactly the values the whole-image pass uses, so
// the logits equal the whole image's up to float32 rounding (oneDNN may sum in another order
// for another shape) everywhere — no seams — and the labels equal them except where a pixel's
// two best scores are closer than that rounding (test/infer/tiles.test.ts measures both: the
// logits within 1e-4 of their largest magnitude).
// Why not whole-network tiles with an overlap: the network's receptive field through conv6
// and the upsampling reaches ~250 px, and at ~1.1 kB/px a tile within budget is ~700 px wide,
// which would leave ~200 px of each tile for the result (~12× the work).
import { native, type Tensor } from '../engine/binding.js';
import { engineConfig, type InferencePrecision } from '../engine/config.js';
import { dequantized } from '../nn/activation-scales.js';
import { disposeAll } from '../engine/tape.js';
import { VOC_CLASS_NAMES, classSetFromNames, type Rgb } from '../data/classes.js';
import { synthClassSet } from '../data/synth.js';
import { networkInput, type Means } from '../data/transforms.js';
import { readImageRgb, type RgbImage } from '../io/image.js';
import type { FCN, PassHooks } from '../models/fcn.js';
import { scorePool, walkBlocks, walkHead, walkSkips, type NetworkOps, type Skip, type StageMapName } from '../models/network.js';
import { convOutputSize, headSupport, mapRanges, marginFor, planAxis, poolSizes, poolSupports, type AxisPlan, type Support } from './tiling.js';

/** The model's class names: from its weights' metadata, else VOC's for 21 classes. */
export function modelClassNames(model: FCN): readonly string[] {
  if (model.classNames) return model.classNames;
  return model.numClasses === VOC_CLASS_NAMES.length ? VOC_CLASS_NAMES : Array.from({ length: model.numClasses }, (_, i) => `class${i}`);
}

/** The model's class colours: from its weights' metadata, else the synthetic shapes' for their names, else VOC's. */
export function modelClassColors(model: FCN): readonly Rgb[] {
  if (model.classColors) return model.classColors;
  const names = modelClassNames(model), synth = synthClassSet();
  return names.join() === synth.names.join() ? synth.colors : classSetFromNames(names).colors;
}

/**
 * Activation memory one image may use (bytes, excluding the model's weights and the results),
 * 512 MiB by default: a full-width FCN-8s holds ~1.1 GB of weights and their prepared copies,
 * so a 12 MP photo peaks at ~1.8 GB. The whole image runs in one pass while its estimate fits.
 */
export const DEFAULT_MEMORY_BUDGET = 512 * 2 ** 20;

/** How an image ran: whole, or tiled with the number of windows of each stage. */
export interface InferencePlan {
  tiled: boolean;
  /** Image tiles of the VGG16 body (1 when whole) and their side in pixels. */
  tiles: number;
  tileSize: number;
  /** Windows of blocks 4-5 on the stitched block3_pool (0: the tiles ran all five blocks). */
  poolWindows: number;
  /** Windows of conv6–score7 on the 1/32 map, and of the final upsampling. */
  headWindows: number;
  outputWindows: number;
}

export interface Segmentation {
  /** One class index per pixel, row-major height × width. */
  labels: Uint8Array;
  width: number;
  height: number;
  classes: readonly string[];
  /** Raw class scores before softmax, classes × height × width, when asked for. */
  logits?: Float32Array;
  /** Softmax of the logits, classes × height × width, when asked for. */
  probabilities?: Float32Array;
  plan: InferencePlan;
}

export interface InferenceOptions {
  precision?: InferencePrecision;
  /** Preprocessing means (default: the model's, keras or caffe). */
  means?: Means;
  classNames?: readonly string[];
  /** Also return the logits (4 bytes × classes per pixel). */
  logits?: boolean;
  /** Also return the class probabilities (4 bytes × classes per pixel). */
  probabilities?: boolean;
  /** 'auto' (default): whole while the estimate fits `memoryBudget`, else tiled; or force one. */
  tiling?: 'auto' | 'whole' | 'tiled';
  /** Activation bytes an image may use (default DEFAULT_MEMORY_BUDGET); sets the tiles' sizes. */
  memoryBudget?: number;
  /** Side of the input tiles in pixels, a multiple of 32 (default: from the memory budget). */
  tileSize?: number;
  /** Idle engine buffers kept for the next image, at most (default IDLE_BUFFER_LIMIT); more are released. */
  idleBufferLimit?: number;
  /** The image's name in error messages (a path, an id). */
  name?: string;
  /** Receives the score maps inside the network as the pass makes them (see StageMap). */
  onStage?: (map: StageMap) => void;
}

/**
 * A class score map inside the network (models/network.ts), [1, classes, h, w], at `stride`
 * input pixels per map pixel; the same whole or tiled. In the keras style map pixel (i, j)
 * covers input pixels [s·i, s·(i+1)) × [s·j, s·(j+1)) of the input padded to 32.
 */
export type StageMap = { name: StageMapName; stride: number; dims: number[]; data: Float32Array };

export interface SegmentOptions extends InferenceOptions {
  /** For a path: refuse images with more decoded pixels (see io/image.ts). */
  maxPixels?: number;
}

// Engine memory per input pixel, float32, scaled by the first block's channels (which
// dominate). Measured at full width (VmHWM less the weights): the whole forward pass
// 1.07-1.14 kB/px at 512² and 1024² (block1's two activations, the upsampled scores and their
// crop; the pool keeps each freed size), estimated 1.16 kB; one body tile with the idle
// buffers released after each block 0.56 kB/px at 896², estimated 0.65 kB.
const conv1Channels = (model: FCN) => model.network.blocks[0]!.convs[0]!.outChannels;
const wholeBytesPerPixel = (model: FCN) => 4 * (3 + 3.5 * conv1Channels(model)) + 12 * model.numClasses;
const bodyBytesPerPixel = (model: FCN) => 4 * (3 + 2.5 * conv1Channels(model));
/** Per block5_pool pixel: its copy, conv6's and conv7's outputs and their reorders (measured ~68 kB at full width). */
const headBytesPerCell = (model: FCN) => 4 * (2 * model.network.head[0]!.inChannels + 4 * model.network.head[0]!.outChannels + model.numClasses);
/** Per output pixel: the upsampled window, its crop, the logits and probabilities read out. */
const outputBytesPerPixel = (model: FCN) => 4 * 4 * model.numClasses;

/** Extra rows and columns the caffe style's conv1 padding of 100 adds to every map of the body. */
const conv1Growth = (model: FCN) => 2 * (model.network.blocks[0]!.convs[0]!.padding - 1);

/** The estimated activation bytes of running `height × width` whole. */
export function wholeImageBytes(model: FCN, height: number, width: number): number {
  const g = conv1Growth(model);
  return wholeBytesPerPixel(model) * (height + g) * (width + g);
}

/** A tensor's values as float32 (bfloat16 widened: exact; int8 activations dequantized). */
function toFloat32(t: Tensor): Float32Array {
  if (t.dtype === 'uint8') return then(dequantized(t), (f) => f.toArray() as Float32Array);
  const raw = t.toArray();
  if (raw instanceof Float32Array) return raw;
  if (raw instanceof Uint16Array) return new Float32Array(Uint32Array.from(raw, (b) => b << 16).buffer);
  throw new Error(`expected a float tensor, got ${t.dtype}`);
}

/** Runs `f` on `x` and frees `x` (the caller's tensor is consumed). */
function then<R>(x: Tensor, f: (x: Tensor) => R): R {
  try {
    return f(x);
  } finally {
    x.dispose();
  }
}

/**
 * Idle engine buffers above this are released after each image and between stages. The pool
 * keeps freed buffers by exact size for reuse; images of many sizes would otherwise fill it
 * with buffers no later image fits (up to the engine's own bound).
 */
export const IDLE_BUFFER_LIMIT = 256 * 2 ** 20;

/** The network and image size of the last image segmented (this thread's engine has its own pool). */
let lastShape = '';

/** Releases the engine's idle buffers when they exceed `limit` bytes. */
export function releaseIdleBuffers(limit = IDLE_BUFFER_LIMIT): void {
  if (native.poolStats().pooledBytes > limit) native.poolTrim();
}

/** The error for logits holding NaN or infinities: a broken model must not yield a label map. */
function checkFinite(name: string, logits: Tensor, where: string): void {
  if (Number.isFinite(native.sumSquares(logits))) return;
  const data = logits.toArray() as Float32Array;
  let nan = 0, inf = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (Number.isNaN(v)) nan++;
    else if (!Number.isFinite(v)) inf++;
  }
  // A sum of squares beyond float64's range from finite float32 values is impossible, so at
  // least one of the two counts is positive.
  throw new Error(`${name}: the model produced non-finite scores (${nan} NaN and ${inf} infinite of ${data.length} values${where}): check the weights for NaN or infinite values`);
}

/** Softmax over the classes of logits classes × plane, in place into `out` at `offset` per class. */
function softmaxInto(logits: Float32Array, classes: number, plane: number, out: Float32Array, outPlane: number, place: (p: number) => number): void {
  for (let p = 0; p < plane; p++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[c * plane + p]!);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[c * plane + p]! - max);
    const q = place(p);
    for (let c = 0; c < classes; c++) out[c * outPlane + q] = Math.exp(logits[c * plane + p]! - max) / sum;
  }
}

type Outputs = Pick<Segmentation, 'labels' | 'logits' | 'probabilities'>;

/**
 * Reads a window of logits (1 × classes × h × w) into the image's outputs at (top, left):
 * checked for non-finite values, argmax into the labels, logits and probabilities if asked.
 */
function readOut(name: string, logits: Tensor, out: Outputs, imageWidth: number, imageHeight: number, top: number, left: number, where: string): void {
  checkFinite(name, logits, where);
  const [, classes, h, w] = logits.dims as [number, number, number, number];
  then(native.argmax(logits), (pred) => {
    const labels = pred.toArray() as Uint8Array;
    for (let y = 0; y < h; y++) out.labels.set(labels.subarray(y * w, (y + 1) * w), (top + y) * imageWidth + left);
  });
  if (!out.logits && !out.probabilities) return;
  const data = logits.toArray() as Float32Array;
  const plane = imageWidth * imageHeight, at = (p: number) => (top + Math.floor(p / w)) * imageWidth + left + (p % w);
  if (out.logits) {
    for (let c = 0; c < classes; c++) for (let y = 0; y < h; y++) out.logits.set(data.subarray((c * h + y) * w, (c * h + y + 1) * w), c * plane + (top + y) * imageWidth + left);
  }
  if (out.probabilities) softmaxInto(data, classes, h * w, out.probabilities, plane, at);
}

/**
 * A map of the whole image assembled from tiles: float32, channels × height × width, held by
 * the engine so that dispose() frees it at once (a block3_pool of a 12 MP photo is 190 MB).
 */
class StitchedMap {
  private readonly t: Tensor;
  constructor(readonly channels: number, readonly height: number, readonly width: number) {
    this.t = native.zeros([1, channels, height, width]);
  }

  /**
   * Copies rows × cols (whole-map indices) from a tile's map (1 × channels × th × tw) whose
   * pixel (0, 0) is whole-map pixel (rowOffset, colOffset).
   */
  paste(tile: Tensor, rows: { from: number; to: number }, cols: { from: number; to: number }, rowOffset: number, colOffset: number): void {
    if (rows.to <= rows.from || cols.to <= cols.from) return;
    const [, c, th, tw] = tile.dims as [number, number, number, number];
    if (c !== this.channels || rows.from - rowOffset < 0 || rows.to - rowOffset > th || cols.from - colOffset < 0 || cols.to - colOffset > tw) {
      throw new Error(`tile plan: a ${c}×${th}×${tw} tile at (${rowOffset}, ${colOffset}) does not hold rows ${rows.from}…${rows.to - 1}, columns ${cols.from}…${cols.to - 1} of a ${this.channels}×${this.height}×${this.width} map`);
    }
    const src = toFloat32(tile);
    const n = cols.to - cols.from;
    for (let ch = 0; ch < c; ch++) {
      for (let y = rows.from; y < rows.to; y++) {
        const s = (ch * th + y - rowOffset) * tw + cols.from - colOffset;
        native.writeArray(this.t, src.subarray(s, s + n), (ch * this.height + y) * this.width + cols.from);
      }
    }
  }

  /** The window [top, top+h) × [left, left+w), a tensor of its own. */
  window(top: number, left: number, h: number, w: number): Tensor {
    return native.cropPad(this.t, { top, left, height: h, width: w });
  }

  tensor(): Tensor {
    return this.window(0, 0, this.height, this.width);
  }

  dispose(): void {
    disposeAll(this.t);
  }
}

/** Calls `f` for every window of a two-axis plan, row by row. */
function eachWindow(rows: AxisPlan, cols: AxisPlan, f: (ky: number, kx: number) => void): void {
  for (let ky = 0; ky < rows.windows.length; ky++) for (let kx = 0; kx < cols.windows.length; kx++) f(ky, kx);
}

const side = (bytes: number, perPixel: number) => Math.floor(Math.sqrt(bytes / perPixel));

type TiledOptions = Required<Pick<InferenceOptions, 'precision' | 'means' | 'memoryBudget' | 'name'>> & InferenceOptions;

/**
 * The staged forward pass for a large image (see the top of this file): the walk over the
 * network's description (models/network.ts) that the whole pass takes, in stages of windows.
 */
function tiledForward(model: FCN, rgb: RgbImage, o: TiledOptions, hooks: PassHooks): { outputs: Outputs; plan: InferencePlan } {
  const net = model.network;
  // Each block's buffers go back to the system (see body stages).
  const ops: NetworkOps<Tensor> = { ...model.inferenceOps(o.precision), endBlock: () => releaseIdleBuffers(0) };
  // The stitched maps alive: each freed as soon as no later stage reads it, and all on an error.
  const held = new Set<StitchedMap>();
  const release = (...maps: StitchedMap[]) => maps.forEach((m) => (m.dispose(), held.delete(m)));
  let fused: Tensor | null = null;
  try {
    const body = tiledBody(model, rgb, o, ops, held);
    const head = tiledHead(model, body.pool5, o, ops, body.tileSize);
    held.add(head.score7);
    release(body.pool5);
    releaseIdleBuffers(0);
    // 3. The skips on the whole (small) score maps, as the whole pass walks them.
    const coarse = head.score7.tensor();
    release(head.score7);
    hooks.stage?.(net.headStage, coarse);
    fused = walkSkips(net, coarse, new Map([...body.scores].map(([s, m]) => [s, m.tensor()])), model.inferenceOps(o.precision, hooks), true);
    release(...held);
    const out = tiledOutput(model, fused, rgb, o, ops);
    return { outputs: out.outputs, plan: { tiled: true, tiles: body.tiles, tileSize: body.tileSize, poolWindows: body.poolWindows, headWindows: head.windows, outputWindows: out.windows } };
  } finally {
    disposeAll(fused);
    release(...held);
  }
}

/**
 * 1. The body: blocks 1-3 in image tiles and blocks 4-5 in windows of the stitched
 * block3_pool when that map fits half the budget (~17 MP at full width), else all five
 * blocks in image tiles. The first needs far less overlap: block3_pool sees 44 px, where
 * block5_pool sees 212 (12 MP: ~1.1× the whole image's work instead of ~1.6×).
 */
function tiledBody(model: FCN, rgb: RgbImage, o: TiledOptions, ops: NetworkOps<Tensor>, held: Set<StitchedMap>) {
  const net = model.network, budget = o.memoryBudget;
  // The keras network runs on the image padded to a multiple of 32 with the mean colour:
  // tiles are cut from that padded image (networkInput fills beyond the image with 0).
  const Hp = Math.ceil(rgb.height / net.padTo) * net.padTo, Wp = Math.ceil(rgb.width / net.padTo) * net.padTo;
  const c3 = net.blocks[2]!.convs.at(-1)!.outChannels, c4 = net.blocks[3]!.convs.at(-1)!.outChannels;
  const pool3Bytes = 4 * c3 * poolSizes(model, Hp, 0, 3)[2]! * poolSizes(model, Wp, 0, 3)[2]!;
  const split = pool3Bytes <= budget / 2;
  const available = split ? budget - pool3Bytes : budget;
  const imageInput = (top: number, left: number, h: number, w: number) => native.fromArray([1, 3, h, w], networkInput(rgb, o.means, top, left, h, w));
  const imageTile = (align: number, minTile: number) => {
    if (o.tileSize === undefined) return Math.max(minTile, Math.floor((side(available, bodyBytesPerPixel(model)) - conv1Growth(model)) / align) * align);
    if (!(Number.isInteger(o.tileSize) && o.tileSize % 32 === 0 && o.tileSize >= minTile)) throw new Error(`tileSize must be a multiple of 32 of at least ${minTile} for this model, got ${o.tileSize}`);
    return o.tileSize;
  };
  const hold = (r: StageResult) => ([r.pool, ...r.scores.values()].forEach((m) => held.add(m)), r);
  const first = hold(bodyStage(model, ops, { from: 0, to: split ? 3 : 5, height: Hp, width: Wp, tile: imageTile, input: imageInput }));
  if (!split) return { pool5: first.pool, scores: first.scores, tiles: first.windows, tileSize: first.tile, poolWindows: 0 };
  const pool3 = first.pool;
  const cellTile = (align: number, minTile: number) =>
    Math.max(minTile, Math.floor((o.tileSize !== undefined ? o.tileSize / 8 : side(available, 4 * (c3 + 2.5 * c4))) / align) * align);
  const second = hold(bodyStage(model, ops, { from: 3, to: 5, height: pool3.height, width: pool3.width, tile: cellTile, input: (top, left, h, w) => pool3.window(top, left, h, w) }));
  pool3.dispose();
  held.delete(pool3);
  return { pool5: second.pool, scores: new Map([...first.scores, ...second.scores]), tiles: first.windows, tileSize: first.tile, poolWindows: second.windows };
}

/** 2. conv6 → conv7 → score7 on block5_pool, in windows overlapping by conv6's reach when over budget. */
function tiledHead(model: FCN, pool5: StitchedMap, o: TiledOptions, ops: NetworkOps<Tensor>, bodyTile: number): { score7: StitchedMap; windows: number } {
  const net = model.network;
  const hs = headSupport(model);
  const margin = marginFor(hs);
  const tile = Math.max(2 * margin + 1, o.tileSize !== undefined ? Math.floor(bodyTile / net.headStride) : side(o.memoryBudget, headBytesPerCell(model)));
  const rows = planAxis(pool5.height, tile, margin, 1), cols = planAxis(pool5.width, tile, margin, 1);
  const size = (n: number) => net.head.reduce((m, l) => convOutputSize(m, l.kernel, l.stride, l.padding), n);
  const score7 = new StitchedMap(model.numClasses, size(pool5.height), size(pool5.width));
  try {
    const keptRows = mapRanges(rows, hs, score7.height), keptCols = mapRanges(cols, hs, score7.width);
    eachWindow(rows, cols, (ky, kx) => {
      const wy = rows.windows[ky]!, wx = cols.windows[kx]!;
      const t = walkHead(net, pool5.window(wy.start, wx.start, wy.end - wy.start, wx.end - wx.start), ops);
      then(t, (x) => score7.paste(x, keptRows[ky]!, keptCols[kx]!, wy.start, wx.start));
      releaseIdleBuffers(0);
    });
  } catch (e) {
    score7.dispose();
    throw e;
  }
  return { score7, windows: rows.windows.length * cols.windows.length };
}

/**
 * 4. The final upsampling, crop and read-out in output windows: output pixel y (upsampled
 * pixel y + crop offset) reads the fused pixels i with stride·i − padding + k = y + offset,
 * k < kernel.
 */
function tiledOutput(model: FCN, fused: Tensor, rgb: RgbImage, o: TiledOptions, ops: NetworkOps<Tensor>): { outputs: Outputs; windows: number } {
  const { width: W, height: H } = rgb;
  const outputs = emptyOutputs(model, W, H, o);
  const { upsample: up, crop: off } = model.network.output;
  const s = up.stride, k = up.kernel, p = up.padding;
  // Half the budget: this stage runs with every layer's prepared weights in memory.
  const tile = Math.max(s, Math.floor((o.tileSize ?? side(o.memoryBudget / 2, outputBytesPerPixel(model))) / s) * s);
  const rows = planAxis(H, tile, 0, s), cols = planAxis(W, tile, 0, s);
  const [, , fh, fw] = fused.dims as [number, number, number, number];
  const band = (from: number, to: number, n: number) => ({ i0: Math.max(0, Math.floor((from + off + p - k + 1) / s)), i1: Math.min(n, Math.floor((to - 1 + off + p) / s) + 1) });
  eachWindow(rows, cols, (ky, kx) => {
    const wy = rows.windows[ky]!, wx = cols.windows[kx]!;
    const by = band(wy.start, wy.end, fh), bx = band(wx.start, wx.end, fw);
    const u = then(native.cropPad(fused, { top: by.i0, left: bx.i0, height: by.i1 - by.i0, width: bx.i1 - bx.i0 }), (x) => ops.conv(up, x));
    const top = wy.start + off - s * by.i0, left = wx.start + off - s * bx.i0;
    const h = wy.end - wy.start, w = wx.end - wx.start;
    if (top + h > u.dims[2]! || left + w > u.dims[3]!) {
      u.dispose();
      throw new Error(`tile plan: the upsampled window ${u.dims[3]}×${u.dims[2]} does not hold ${w}×${h} at (${left}, ${top})`);
    }
    const logits = then(u, (x) => native.cropPad(x, { top, left, height: h, width: w }));
    then(logits, (x) => readOut(o.name, x, outputs, W, H, wy.start, wx.start, ` in the window at (${wx.start}, ${wy.start}), ${w}×${h}`));
    // Windows at the image's edges have other sizes than the inner ones.
    releaseIdleBuffers(0);
  });
  return { outputs, windows: rows.windows.length * cols.windows.length };
}

interface StageResult {
  /** The last block's pool and the skips' scores of the blocks in the stage, stitched. */
  pool: StitchedMap;
  scores: Map<Skip, StitchedMap>;
  windows: number;
  tile: number;
}

/**
 * Blocks [from, to) of the body in windows over their input (height × width: the padded
 * image, or block3_pool), stitched. Windows start on the grid of the stage's pools and
 * overlap by the receptive field of the maps kept (see tiling.ts). `tile` gives the window
 * side for the alignment and the smallest side the margins allow; `input` makes a window's
 * input tensor.
 */
function bodyStage(model: FCN, ops: NetworkOps<Tensor>, stage: { from: number; to: number; height: number; width: number; tile: (align: number, minTile: number) => number; input: (top: number, left: number, h: number, w: number) => Tensor }): StageResult {
  const { from, to } = stage;
  const net = model.network;
  const supports = poolSupports(model, from, to);
  const last = supports.at(-1)!;
  const align = last.stride;
  const skips = net.skips.filter((s) => s.block >= from && s.block < to).map((skip) => ({ skip, s: supports[skip.block - from]! }));
  const margin = marginFor(last, ...skips.map((m) => m.s));
  const tile = stage.tile(align, 2 * Math.ceil(margin / align) * align + 2 * align);
  const rows = planAxis(stage.height, tile, margin, align), cols = planAxis(stage.width, tile, margin, align);
  const sizesY = poolSizes(model, stage.height, from, to), sizesX = poolSizes(model, stage.width, from, to);
  const stitched = (s: Support, channels: number, k: number) =>
    ({ s, map: new StitchedMap(channels, sizesY[k]!, sizesX[k]!), rows: mapRanges(rows, s, sizesY[k]!), cols: mapRanges(cols, s, sizesX[k]!) });
  const pool = stitched(last, net.blocks[to - 1]!.convs.at(-1)!.outChannels, to - 1 - from);
  const scoreMaps = skips.map(({ skip, s }) => ({ skip, ...stitched(s, model.numClasses, skip.block - from) }));
  const maps = [pool, ...scoreMaps];
  try {
    eachWindow(rows, cols, (ky, kx) => {
      const wy = rows.windows[ky]!, wx = cols.windows[kx]!;
      // The engine pools freed buffers by exact size and no later block has this block's
      // sizes: released after each block (ops.endBlock), a tile needs its largest block's
      // memory, not the sum of all blocks' (~600 instead of ~1000 bytes per pixel at full width).
      const out = walkBlocks(net, stage.input(wy.start, wx.start, wy.end - wy.start, wx.end - wx.start), ops, from, to);
      const scores = new Map<Skip, Tensor>();
      try {
        for (const [skip, p] of out.skips) scores.set(skip, scorePool(skip, p, ops));
        for (const [m, t] of [[pool, out.pool], ...scoreMaps.map((m) => [m, scores.get(m.skip)!] as const)] as const) {
          m.map.paste(t, m.rows[ky]!, m.cols[kx]!, wy.start / m.s.stride, wx.start / m.s.stride);
        }
      } finally {
        disposeAll(out.pool, ...out.skips.values(), ...scores.values());
      }
      // Each window's buffers go back to the system: edge windows have other sizes than inner
      // ones, and a pool holding one window's buffers while the next allocates its own would
      // double the peak. Fresh pages cost ~0.1 s a tile; the tile's work takes seconds.
      releaseIdleBuffers(0);
    });
  } catch (e) {
    for (const m of maps) m.map.dispose();
    throw e;
  }
  return { pool: pool.map, scores: new Map(scoreMaps.map((m) => [m.skip, m.map])), windows: rows.windows.length * cols.windows.length, tile };
}

/**
 * Segments decoded RGB with `model`: the label map, and the logits or probabilities when
 * asked. Whole when the estimated activations fit the memory budget, else in stages of tiles
 * that give the same scores (see the top of this file). Synchronous: it keeps the engine busy
 * until done (a server runs it in a worker).
 */
export function segmentImage(model: FCN, rgb: RgbImage, options: InferenceOptions = {}): Segmentation {
  const { width, height } = rgb;
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0) || rgb.data.length !== width * height * 3) {
    throw new Error(`${options.name ?? 'image'}: expected ${width}×${height}×3 RGB bytes, got ${rgb.data.length}`);
  }
  const o = {
    ...options,
    precision: options.precision ?? engineConfig().precision,
    means: options.means ?? model.means,
    memoryBudget: options.memoryBudget ?? DEFAULT_MEMORY_BUDGET,
    name: options.name ?? 'image',
  };
  if (!(o.memoryBudget > 0)) throw new Error(`memoryBudget must be a positive number of bytes, got ${o.memoryBudget}`);
  const tiling = o.tiling ?? 'auto';
  const classes = o.classNames ?? modelClassNames(model);
  const tiled = tiling === 'tiled' || (tiling === 'auto' && wholeImageBytes(model, height, width) > o.memoryBudget);
  // The idle buffers the last image left fit only an image of its size and network: before
  // any other, they are released, so the peak is one image's working set, not two.
  const shape = `${model.style}/${model.width}/${model.numClasses}/${width}×${height}/${tiled}`;
  if (shape !== lastShape) native.poolTrim();
  lastShape = shape;
  const hooks = stageHooks(model, o.onStage);
  try {
    if (tiled) {
      const { outputs, plan } = tiledForward(model, rgb, o, hooks);
      return { ...outputs, width, height, classes, plan };
    }
    const outputs = emptyOutputs(model, width, height, o);
    const logits = then(native.fromArray([1, 3, height, width], networkInput(rgb, o.means)), (x) => model.predictLogits(x, o.precision, hooks));
    then(logits, (x) => readOut(o.name, x, outputs, width, height, 0, 0, ''));
    return { ...outputs, width, height, classes, plan: { tiled: false, tiles: 1, tileSize: Math.max(width, height), poolWindows: 0, headWindows: 1, outputWindows: 1 } };
  } finally {
    releaseIdleBuffers(o.idleBufferLimit ?? IDLE_BUFFER_LIMIT);
  }
}

/** The label map, and the logits and probabilities when asked, to be filled. */
function emptyOutputs(model: FCN, width: number, height: number, o: InferenceOptions): Outputs {
  const planes = () => new Float32Array(model.numClasses * width * height);
  return { labels: new Uint8Array(width * height), ...(o.logits ? { logits: planes() } : {}), ...(o.probabilities ? { probabilities: planes() } : {}) };
}

/** The pass's stage tap: each stage map copied out as float32 for `onStage`. */
function stageHooks(model: FCN, onStage: InferenceOptions['onStage']): PassHooks {
  if (!onStage) return {};
  const net = model.network;
  const strides = new Map([[net.headStage, net.headStride], ...net.skips.flatMap((s) => s.stages.map((n) => [n, s.stride] as const))]);
  return { stage: (name, t) => onStage({ name, stride: strides.get(name)!, dims: [...t.dims], data: toFloat32(t) }) };
}

/** Segments one image (a path, decoded with the pixel limit, or decoded RGB) with `model`. */
export async function segment(model: FCN, image: string | RgbImage, options: SegmentOptions = {}): Promise<Segmentation> {
  const rgb = typeof image === 'string' ? await readImageRgb(image, options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {}) : image;
  return segmentImage(model, rgb, { ...options, ...(typeof image === 'string' && options.name === undefined ? { name: image } : {}) });
}
