// FCN-32s, FCN-16s and FCN-8s on one shared VGG16 body, with the seed's layer names.
// Shape letters: N batch, C channels, H×W the input's size, Hp×Wp padded to a multiple of 32.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { Tape, disposeAll } from '../engine/tensor.js';
import { dequantized } from '../nn/activation-scales.js';
import { Conv2d, Dropout, MaxPool2d, type ForwardContext } from '../nn/layers.js';
import { Param } from '../nn/param.js';
import { bilinearInit, glorotUniform, heUniform, zeroInit } from '../nn/init.js';
import { Rng } from '../data/prng.js';
import { assertPrecisionSupported, type InferencePrecision } from '../engine/config.js';

export type FcnKind = 'fcn32' | 'fcn16' | 'fcn8';
export const FCN_KINDS: readonly FcnKind[] = ['fcn32', 'fcn16', 'fcn8'];
/**
 * 'keras': the seed's network — 'same' convolutions, floor pooling, the input padded to a
 * multiple of 32. 'caffe': the paper's — block1_conv1 padding 100, pooling that rounds up,
 * conv6 without padding, unpadded upsampling and crops that realign each map with the input.
 */
export type FcnStyle = 'keras' | 'caffe';
export const FCN_STYLES: readonly FcnStyle[] = ['keras', 'caffe'];
export const NUM_CLASSES = 21;
/** The body's total stride: inputs are padded to a multiple of it (keras style). */
export const OUTPUT_STRIDE = 32;
/** The scaling of the pool4/pool3 features in the paper's FCN-8s trained "at once". */
export const AT_ONCE_SKIP_SCALES: readonly [number, number] = [0.01, 0.0001];

export interface FcnOptions {
  kind: FcnKind;
  /** Channel multiplier of VGG16 (1 = full width; 0.125 for small test models). */
  width?: number;
  numClasses?: number;
  /** Dropout rate of drop6 and drop7 (the seed used 0.2). */
  dropout?: number;
  style?: FcnStyle;
  /** Factors applied to block4_pool and block3_pool before score4/score3 (caffe at-once). */
  skipScales?: readonly [number, number] | null;
  /** Class names, when known (they travel in the weights' metadata). */
  classNames?: readonly string[];
  /** Leave the parameters unfilled, for a model built only to be loaded (see loadModel). */
  uninitialized?: boolean;
}

/** Channels of a full-width layer scaled by the width multiplier. */
export function scaledChannels(channels: number, width: number): number {
  return Math.max(1, Math.round(channels * width));
}

// VGG16: [block, convs, channels].
const VGG_BLOCKS: [number, number, number][] = [
  [1, 2, 64],
  [2, 2, 128],
  [3, 3, 256],
  [4, 3, 512],
  [5, 3, 512],
];

interface Block {
  convs: Conv2d[];
  pool: MaxPool2d;
}

export interface TrainOutput {
  logits: Tensor;
  tape: Tape;
}

/** The class score maps inside the forward pass that predictStages copies out. */
export type StageMapName = 'score7' | 'score4' | 'fuse4' | 'score3' | 'fuse3';

export interface StageMap {
  name: StageMapName;
  /** Input pixels per map pixel: 32, 16 or 8. */
  stride: number;
  /** [1, classes, h, w]. */
  dims: number[];
  data: Float32Array;
}

const STAGE_STRIDES: Record<StageMapName, number> = { score7: 32, score4: 16, fuse4: 16, score3: 8, fuse3: 8 };

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
function throughLayer(m: CoordMap, k: number, s: number, p: number, transposed: boolean): CoordMap {
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

/** A value of the recorded forward pass: a tensor and whether a gradient must reach it. */
interface Value {
  t: Tensor;
  id: number;
  needsGrad: boolean;
}

/** One step of the recorded forward pass: its backward maps dL/doutput to dL/dinputs. */
interface Node {
  inputs: Value[];
  output: Value;
  /** Gradients for the inputs whose `needsGrad` is set (null elsewhere). Disposes nothing. */
  backward: (dy: Tensor) => (Tensor | null)[];
  /** The parameters whose gradients this step's backward sets (a layer runs once per pass). */
  params?: Param[];
}

export class FCN {
  readonly kind: FcnKind;
  readonly style: FcnStyle;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[] | null;
  readonly skipScales: readonly [number, number] | null;
  readonly blocks: Block[] = [];
  readonly conv6: Conv2d;
  readonly drop6: Dropout;
  readonly conv7: Conv2d;
  readonly drop7: Dropout;
  readonly score7: Conv2d;
  // FCN-16s and FCN-8s skips.
  readonly score7Upsample: Conv2d | null = null;
  readonly score4: Conv2d | null = null;
  readonly skip4Upsample: Conv2d | null = null;
  readonly score3: Conv2d | null = null;
  /** The final upsampling to full resolution: fcn32 (×32), fcn16 (×16) or fcn8 (×8). */
  readonly upsample: Conv2d;
  /** The last training forward pass, walked backwards by backward(). */
  private recorded: Node[] = [];
  /** Set by predictStages only: receives the score maps as the forward pass makes them. */
  private tap: ((name: StageMapName, t: Tensor) => void) | null = null;
  /** Sees every convolution's output in inference (calibration of the int8 scales). */
  observer: ((layer: Conv2d, y: Tensor) => void) | null = null;

  constructor(options: FcnOptions) {
    const { kind } = options;
    if (!FCN_KINDS.includes(kind)) throw new Error(`unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
    const style = options.style ?? 'keras';
    if (!FCN_STYLES.includes(style)) throw new Error(`unknown network style '${style}' (expected ${FCN_STYLES.join(', ')})`);
    const width = options.width ?? 1;
    if (!(width > 0 && width <= 1)) throw new Error(`width must be in (0, 1], got ${width}`);
    const skipScales = options.skipScales ?? null;
    if (skipScales && (kind !== 'fcn8' || skipScales.length !== 2 || !skipScales.every((v) => Number.isFinite(v) && v > 0)))
      throw new Error(`skip scales apply to fcn8 and are two positive numbers, got ${kind} with ${JSON.stringify(skipScales)}`);
    this.kind = kind;
    this.style = style;
    this.width = width;
    this.skipScales = skipScales;
    const classes = (this.numClasses = options.numClasses ?? NUM_CLASSES);
    if (options.classNames && options.classNames.length !== classes) throw new Error(`${options.classNames.length} class names given for ${classes} classes`);
    this.classNames = options.classNames ? [...options.classNames] : null;
    const rate = options.dropout ?? 0.2;
    const caffe = style === 'caffe';
    const unfilled = { uninitialized: options.uninitialized ?? false };

    let inC = 3;
    for (const [b, n, c] of VGG_BLOCKS) {
      const out = scaledChannels(c, width);
      const convs: Conv2d[] = [];
      for (let i = 1; i <= n; i++) {
        // Caffe pads the first convolution by 100 so that any input survives the 7×7 conv6
        // without padding; the crops at the end take the margin off again.
        const padding = caffe && b === 1 && i === 1 ? 100 : 1;
        convs.push(new Conv2d(`block${b}_conv${i}`, { inChannels: inC, outChannels: out, kernel: 3, padding, relu: true, ...unfilled }));
        inC = out;
      }
      this.blocks.push({ convs, pool: new MaxPool2d(`block${b}_pool`, 2, caffe) });
    }
    const fc = scaledChannels(4096, width);
    const c3 = scaledChannels(256, width), c4 = scaledChannels(512, width);
    this.conv6 = new Conv2d('conv6', { inChannels: inC, outChannels: fc, kernel: 7, padding: caffe ? 0 : 3, relu: true, ...unfilled });
    this.drop6 = new Dropout('drop6', rate, 6);
    this.conv7 = new Conv2d('conv7', { inChannels: fc, outChannels: fc, kernel: 1, relu: true, ...unfilled });
    this.drop7 = new Dropout('drop7', rate, 7);
    this.score7 = new Conv2d('score7', { inChannels: fc, outChannels: classes, kernel: 1, ...unfilled });
    const up = (name: string, k: number, s: number) =>
      new Conv2d(name, { inChannels: classes, outChannels: classes, kernel: k, stride: s, transposed: true, ...(caffe ? { padding: 0 } : {}), ...unfilled });
    if (kind === 'fcn32') {
      this.upsample = up('fcn32', 64, 32);
    } else {
      this.score7Upsample = up('score7_upsample', 4, 2);
      this.score4 = new Conv2d('score4', { inChannels: c4, outChannels: classes, kernel: 1, ...unfilled });
      if (kind === 'fcn16') {
        this.upsample = up('fcn16', 32, 16);
      } else {
        this.skip4Upsample = up('skip4_upsample', 4, 2);
        this.score3 = new Conv2d('score3', { inChannels: c3, outChannels: classes, kernel: 1, ...unfilled });
        this.upsample = up('fcn8', 16, 8);
      }
    }
    // The seed freezes its bilinear upsampling layers (so does the paper).
    for (const l of this.upsamplers()) l.trainable = false;
  }

  /** The BGR means preprocessing subtracts: the seed's Keras ones or Caffe's. */
  get means(): 'keras' | 'caffe' {
    return this.style;
  }

  /** Every layer with parameters, input to output. */
  layers(): Conv2d[] {
    const heads = [this.score7Upsample, this.score4, this.skip4Upsample, this.score3].filter((l): l is Conv2d => l !== null);
    return [...this.blocks.flatMap((b) => b.convs), this.conv6, this.conv7, this.score7, ...heads, this.upsample];
  }

  /** Whether the model carries int8 weights and scales (made by `fcn quantize`). */
  get quantized(): boolean {
    return this.layers().some((l) => l.quant !== null);
  }

  upsamplers(): Conv2d[] {
    return this.layers().filter((l) => l.transposed);
  }

  params(): Param[] {
    return this.layers().flatMap((l) => l.params());
  }

  layer(name: string): Conv2d {
    const l = this.layers().find((x) => x.name === name);
    if (!l) throw new Error(`${this.kind} has no layer '${name}' (layers: ${this.layers().map((x) => x.name).join(', ')})`);
    return l;
  }

  /**
   * Random initialisation: He-uniform kernels under a ReLU (glorot-uniform, Keras's default,
   * for the score layers), zero biases, zero skip scores as the seed, bilinear upsampling.
   */
  initialize(seed = 0): void {
    const rng = new Rng(seed);
    for (const l of this.layers()) {
      if (l.transposed) bilinearInit(l.kernel);
      else if (l === this.score4 || l === this.score3) zeroInit(l.kernel);
      else if (l.relu) heUniform(l.kernel, rng);
      else glorotUniform(l.kernel, rng);
      if (l.bias) zeroInit(l.bias);
    }
  }

  /**
   * The offsets of the crops that realign maps with each other and with the input: score4
   * (block4_pool's scores cropped to the upsampled score7), score3 (block3_pool's scores
   * cropped to the upsampled skip4) and the final crop of the upsampled scores to the input.
   * Computed from every layer's kernel, stride and padding: all 0 in the keras style, and
   * Caffe's 5, 9 and 19/27/31 in the caffe style.
   */
  cropOffsets(): { score4?: number; score3?: number; final: number } {
    const data: CoordMap = { scale: 1, shift: 0 };
    const through = (m: CoordMap, l: Conv2d) => throughLayer(m, l.spec.kernel, l.stride, l.padding, l.transposed);
    const pooled: CoordMap[] = [];
    let m = data;
    for (const block of this.blocks) {
      for (const conv of block.convs) m = through(m, conv);
      m = throughLayer(m, block.pool.kernel, block.pool.kernel, 0, false);
      pooled.push(m);
    }
    for (const l of [this.conv6, this.conv7, this.score7]) m = through(m, l);
    const out: { score4?: number; score3?: number; final: number } = { final: 0 };
    if (this.score7Upsample && this.score4) {
      m = through(m, this.score7Upsample);
      out.score4 = alignOffset(through(pooled[3], this.score4), m);
      if (this.skip4Upsample && this.score3) {
        m = through(m, this.skip4Upsample);
        out.score3 = alignOffset(through(pooled[2], this.score3), m);
      }
    }
    out.final = alignOffset(through(m, this.upsample), data);
    return out;
  }

  /**
   * Logits N×classes×H×W (plain float32) for a preprocessed batch N×3×H×W, at any H×W.
   */
  predictLogits(x: Tensor, precision: InferencePrecision = 'float32'): Tensor {
    const ctx: ForwardContext = { training: false, precision, tape: null, seed: 0 };
    return this.run(x, ctx);
  }

  /**
   * As predictLogits, also copying out the score maps each stage adds, for showing how the
   * skips refine the coarse map: score7 (1/32); for FCN-16s/8s the block4_pool skip scores
   * and their sum with the upsampled score7 (score4, fuse4 at 1/16); for FCN-8s the
   * block3_pool ones (score3, fuse3 at 1/8). Batch 1. In the keras style, map pixel (i, j)
   * covers input pixels [s·i, s·(i+1)) × [s·j, s·(j+1)) of the input padded to 32.
   */
  predictStages(x: Tensor, precision: InferencePrecision = 'float32'): { logits: Tensor; maps: StageMap[] } {
    const maps: StageMap[] = [];
    this.tap = (name, t) => {
      const f = dequantized(t);
      const raw = f.toArray();
      if (f !== t) f.dispose();
      // bfloat16 activations come out as their raw upper 16 bits.
      const data = raw instanceof Uint16Array ? new Float32Array(Uint32Array.from(raw, (b) => b << 16).buffer) : Float32Array.from(raw);
      maps.push({ name, stride: STAGE_STRIDES[name], dims: [...t.dims], data });
    };
    try {
      return { logits: this.predictLogits(x, precision), maps };
    } finally {
      this.tap = null;
    }
  }

  /** A training forward pass: the tape owns every activation until disposed after backward. */
  forwardTrain(x: Tensor, precision: Precision, seed: number): TrainOutput {
    const tape = new Tape();
    try {
      const logits = this.run(x, { training: true, precision, tape, seed });
      return { logits, tape };
    } catch (e) {
      tape.dispose();
      throw e;
    }
  }

  /**
   * The forward pass. In the keras style the input is padded at the bottom/right with zeros
   * (the mean colour after preprocessing) to a multiple of 32; in the caffe style conv1's
   * margin does that job. Either way the crops bring the logits back to the input's size.
   * In training every step is recorded (with the tape owning its tensors) for backward();
   * in inference each tensor is freed as soon as nothing further reads it.
   */
  private run(x: Tensor, ctx: ForwardContext): Tensor {
    assertPrecisionSupported(ctx.precision);
    if (ctx.precision === 'int8' && !this.quantized)
      throw new Error(`this ${this.kind} model has no int8 weights: make an int8 model with \`fcn quantize --weights W --calib DIR --out Q\`, or use float32`);
    const [, , h, w] = x.dims;
    const training = ctx.tape !== null;
    const nodes: Node[] = [];
    this.recorded = [];
    let nextId = 0;
    const input: Value = { t: x, id: nextId++, needsGrad: false };
    // Inference frees each tensor once read, except the input (the caller's) and the pools
    // the skips read later (freed by the skips).
    const retained = new Set<Value>([input]);
    /** Runs one step; records it in training (the tape owns its output unless `owned`). */
    const apply = (inputs: Value[], forward: () => Tensor, backward: (dy: Tensor) => (Tensor | null)[], opts: { trainable?: boolean; owned?: boolean; params?: Param[] } = {}): Value => {
      const y = forward();
      const out: Value = { t: y, id: nextId++, needsGrad: (opts.trainable ?? false) || inputs.some((v) => v.needsGrad) };
      if (training) {
        if (!opts.owned) ctx.tape!.keep(y);
        nodes.push({ inputs, output: out, backward, ...(opts.params ? { params: opts.params } : {}) });
      } else {
        for (const v of inputs) if (!retained.has(v) && !v.t.disposed) v.t.dispose();
      }
      return out;
    };
    const observe = (l: Conv2d, y: Tensor) => {
      this.observer?.(l, y);
      return y;
    };
    const conv = (l: Conv2d, v: Value, inputFactor = 1) =>
      apply([v], () => observe(l, l.forward(v.t, ctx, inputFactor)), (dy) => [l.backward(dy, v.needsGrad)], { trainable: l.trainable, params: l.params() });
    const crop = (v: Value, top: number, height: number, width: number): Value => {
      const [, , ih, iw] = v.t.dims;
      if (top === 0 && ih === height && iw === width) return v;
      return apply(
        [v],
        () => native.cropPad(v.t, { top, left: top, height, width }),
        // A crop's backward pads the gradient back with zeros: the crop with offsets negated.
        (dy) => [v.needsGrad ? native.cropPad(dy, { top: -top, left: -top, height: ih, width: iw }) : null],
      );
    };
    const add = (a: Value, b: Value): Value =>
      apply([a, b], () => native.add(a.t, b.t), (dy) => [a.needsGrad ? native.reorder(dy) : null, b.needsGrad ? native.reorder(dy) : null]);
    const scale = (v: Value, factor: number): Value => apply([v], () => native.scale(v.t, factor), (dy) => [v.needsGrad ? native.scale(dy, factor) : null]);

    const offsets = this.cropOffsets();
    try {
      let t = input;
      if (this.style === 'keras') {
        const hp = Math.ceil(h / OUTPUT_STRIDE) * OUTPUT_STRIDE, wp = Math.ceil(w / OUTPUT_STRIDE) * OUTPUT_STRIDE;
        if (hp !== h || wp !== w) t = apply([t], () => native.cropPad(x, { height: hp, width: wp }), () => [null]);
      }
      let pool3: Value | null = null, pool4: Value | null = null;
      for (const [i, block] of this.blocks.entries()) {
        for (const c of block.convs) t = conv(c, t);
        const v = t;
        t = apply([v], () => block.pool.forward(v.t, ctx), (dy) => [v.needsGrad ? block.pool.backward(dy) : null]); // 1/2, 1/4, 1/8, 1/16, 1/32
        if (i === 2 && this.score3) retained.add((pool3 = t)); // 1/8
        if (i === 3 && this.score4) retained.add((pool4 = t)); // 1/16
      }
      t = conv(this.conv6, t);
      for (const [drop, next] of [[this.drop6, this.conv7], [this.drop7, this.score7]] as const) {
        const v = t;
        const dropped = drop.forward(v.t, ctx); // null: identity (inference, or rate 0)
        if (dropped) t = apply([v], () => dropped, (dy) => [drop.backward(dy)]);
        t = conv(next, t);
      }
      this.tap?.('score7', t.t);
      // A skip: the pool's scores (scaled first in the at-once model), cropped to the map
      // they join.
      const skip = (pool: Value, score: Conv2d, factor: number | undefined, offset: number, like: Value): Value => {
        // Training records the scaling as a step (it has a backward); inference folds it into
        // the convolution (into the output scales, in int8).
        const s = factor === undefined ? conv(score, pool) : training ? conv(score, scale(pool, factor)) : conv(score, pool, factor);
        retained.delete(pool);
        if (!training) pool.t.dispose();
        return crop(s, offset, like.t.dims[2], like.t.dims[3]);
      };
      if (this.score7Upsample && this.score4 && pool4) {
        t = conv(this.score7Upsample, t); // 1/16
        const s4 = skip(pool4, this.score4, this.skipScales?.[0], offsets.score4!, t);
        this.tap?.('score4', s4.t);
        t = add(t, s4); // skip4
        this.tap?.('fuse4', t.t);
        if (this.skip4Upsample && this.score3 && pool3) {
          t = conv(this.skip4Upsample, t); // 1/8
          const s3 = skip(pool3, this.score3, this.skipScales?.[1], offsets.score3!, t);
          this.tap?.('score3', s3.t);
          t = add(t, s3); // skip3
          this.tap?.('fuse3', t.t);
        }
      }
      t = conv(this.upsample, t); // 1/1
      // The edge: plain float32 logits at the input's own size, owned by the caller.
      const full = t;
      const [, , uh, uw] = full.t.dims;
      const o = offsets.final;
      const logits = apply(
        [full],
        () => native.cropPad(full.t, { top: o, left: o, height: h, width: w }),
        (dy) => [native.cropPad(dy, { top: -o, left: -o, height: uh, width: uw })],
        { owned: true },
      );
      if (training) {
        this.recorded = nodes;
        this.logits = logits;
      }
      return logits.t;
    } catch (e) {
      this.recorded = [];
      throw e;
    }
  }

  private logits: Value | null = null;

  /**
   * Backpropagates dL/dlogits (N×classes×H×W) through the last training forward pass,
   * setting the gradients of every trainable parameter. Only the steps a gradient must pass
   * through run. Disposes nothing it was given. `onGradReady` is called for each trainable
   * parameter as soon as its gradient is final (output layers first), while the pass goes on:
   * data-parallel training starts sending gradients from there.
   */
  backward(dlogits: Tensor, onGradReady?: (p: Param) => void): void {
    const nodes = this.recorded, logits = this.logits;
    this.recorded = [];
    this.logits = null;
    if (!logits || nodes.length === 0) throw new Error(`${this.kind}: backward without a training forward pass`);
    if (!logits.needsGrad) return;
    // The previous step's gradients go back to the buffer pool before the new ones are
    // made (same sizes): peak memory holds one set of gradients, not two.
    for (const p of this.params()) if (p.trainable) p.setGrad(null);
    const grads = new Map<number, Tensor>();
    const accumulate = (v: Value, g: Tensor | null) => {
      if (!g) return;
      const prev = grads.get(v.id);
      if (!prev) return void grads.set(v.id, g);
      // Two paths meet where a skip reads a pool: their gradients add.
      grads.set(v.id, native.add(prev, g));
      disposeAll(prev, g);
    };
    try {
      for (let i = nodes.length - 1; i >= 0; i--) {
        const node = nodes[i];
        const dy = node.output === logits ? dlogits : grads.get(node.output.id);
        if (!dy) continue;
        grads.delete(node.output.id);
        try {
          const dx = node.backward(dy);
          node.inputs.forEach((v, k) => (v.needsGrad ? accumulate(v, dx[k]) : disposeAll(dx[k])));
          if (onGradReady) for (const p of node.params ?? []) if (p.trainable && p.grad) onGradReady(p);
        } finally {
          if (dy !== dlogits) dy.dispose();
        }
      }
    } finally {
      for (const g of grads.values()) disposeAll(g);
    }
  }

  /** Frees every parameter and prepared weight copy. */
  dispose(): void {
    this.recorded = [];
    this.logits = null;
    for (const l of this.layers()) {
      l.setQuant(null);
      l.clearCaches();
      for (const p of l.params()) p.dispose();
    }
  }
}
