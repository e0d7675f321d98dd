// FCN-32s, FCN-16s and FCN-8s on one shared VGG16 body, with Keras-FCN's layer names: the
// network's description (network.ts) with its parameters, run in training (recorded for the
// backward pass, recorded-pass.ts) and in inference.
// Shape letters: N batch, C channels, H×W the input's size.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { Tape } from '../engine/tape.js';
import { Conv2d, Dropout, MaxPool2d, type ForwardContext } from '../nn/layers.js';
import { Param } from '../nn/param.js';
import { bilinearInit, glorotUniform, heUniform, zeroInit } from '../nn/init.js';
import { Rng } from '../data/prng.js';
import type { Rgb } from '../data/classes.js';
import { assertPrecisionSupported, type InferencePrecision } from '../engine/config.js';
import { FCN_KINDS, FCN_STYLES, describeNetwork, networkLayers, walkNetwork, type FcnKind, type FcnStyle, type Network, type NetworkOps, type StageMapName } from './network.js';
import { RecordedPass, type Value } from './recorded-pass.js';

export { FCN_KINDS, FCN_STYLES, type FcnKind, type FcnStyle, type StageMapName } from './network.js';
export { scaledChannels } from '../io/weight-layers.js';
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
  /** Dropout rate of drop6 and drop7 (Keras-FCN used 0.2). */
  dropout?: number;
  style?: FcnStyle;
  /** Factors applied to block4_pool and block3_pool before score4/score3 (caffe at-once). */
  skipScales?: readonly [number, number] | null;
  /** Class names, when known (they travel in the weights' metadata). */
  classNames?: readonly string[];
  /** Display colours of the classes, when known (they travel with the names). */
  classColors?: readonly Rgb[];
  /** Leave the parameters unfilled, for a model built only to be loaded (see loadModel). */
  uninitialized?: boolean;
}

/** What an inference pass reports as it goes. */
export interface PassHooks {
  /** Every convolution's output (the calibration of the int8 scales). */
  conv?(layer: Conv2d, y: Tensor): void;
  /** The stage maps (the "How it works" views). */
  stage?(name: StageMapName, map: Tensor): void;
}

export class FCN {
  readonly kind: FcnKind;
  readonly style: FcnStyle;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[] | null;
  readonly classColors: readonly Rgb[] | null;
  readonly skipScales: readonly [number, number] | null;
  /** The network this model computes: its layers, their geometry and order. */
  readonly network: Network;
  readonly blocks: { convs: Conv2d[]; pool: MaxPool2d }[];
  readonly conv6: Conv2d;
  readonly conv7: Conv2d;
  readonly score7: Conv2d;
  /** The skips' scorers (FCN-16s and FCN-8s). */
  readonly score4: Conv2d | null;
  readonly score3: Conv2d | null;
  private readonly convs = new Map<string, Conv2d>();
  private readonly pools = new Map<string, MaxPool2d>();
  private readonly dropouts = new Map<string, Dropout>();
  /** The model's layers that run the description's. */
  private readonly parts = { conv: (l: { name: string }) => this.layer(l.name), pool: (p: { name: string }) => this.pools.get(p.name)!, dropout: (name: string) => this.dropouts.get(name)! };
  /** The last training forward pass, for backward(). */
  private recorded: { pass: RecordedPass; logits: Value } | null = null;

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
    const numClasses = (this.numClasses = options.numClasses ?? NUM_CLASSES);
    if (options.classNames && options.classNames.length !== numClasses) throw new Error(`${options.classNames.length} class names given for ${numClasses} classes`);
    this.classNames = options.classNames ? [...options.classNames] : null;
    if (options.classColors && options.classColors.length !== numClasses) throw new Error(`${options.classColors.length} class colours given for ${numClasses} classes`);
    this.classColors = options.classColors ? [...options.classColors] : null;
    const net = (this.network = describeNetwork({ kind, style, width, numClasses, skipScales }));

    const uninitialized = options.uninitialized ?? false;
    for (const l of networkLayers(net)) {
      this.convs.set(l.name, new Conv2d(l.name, { ...l, uninitialized }));
      // drop6 and drop7 seed their masks by their number.
      if (l.dropout) this.dropouts.set(l.dropout, new Dropout(l.dropout, options.dropout ?? 0.2, Number(/\d+$/.exec(l.dropout)![0])));
    }
    this.blocks = net.blocks.map((b) => ({ convs: b.convs.map((l) => this.layer(l.name)), pool: new MaxPool2d(b.pool.name, b.pool.kernel, b.pool.ceil) }));
    for (const b of this.blocks) this.pools.set(b.pool.name, b.pool);
    [this.conv6, this.conv7, this.score7] = net.head.map((l) => this.layer(l.name)) as [Conv2d, Conv2d, Conv2d];
    [this.score4, this.score3] = [0, 1].map((k) => (net.skips[k] ? this.layer(net.skips[k].score.name) : null)) as [Conv2d | null, Conv2d | null];
    // Keras-FCN freezes its bilinear upsampling layers (so does the paper).
    for (const l of this.layers()) if (l.transposed) l.trainable = false;
  }

  /** The BGR means preprocessing subtracts: Keras-FCN's (Keras VGG16's) or Caffe's. */
  get means(): 'keras' | 'caffe' {
    return this.style;
  }

  /** Every layer with parameters, input to output. */
  layers(): Conv2d[] {
    return [...this.convs.values()];
  }

  /** Whether the model carries int8 weights and scales (made by `fcn quantize`). */
  get quantized(): boolean {
    return this.layers().some((l) => l.quant !== null);
  }

  params(): Param[] {
    return this.layers().flatMap((l) => l.params());
  }

  layer(name: string): Conv2d {
    const l = this.convs.get(name);
    if (!l) throw new Error(`${this.kind} has no layer '${name}' (layers: ${[...this.convs.keys()].join(', ')})`);
    return l;
  }

  /**
   * Random initialisation: He-uniform kernels under a ReLU (glorot-uniform, Keras's default,
   * for the score layers), zero biases, zero skip scores as Keras-FCN's, bilinear upsampling.
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

  private checkPrecision(precision: Precision | InferencePrecision): void {
    assertPrecisionSupported(precision);
    if (precision === 'int8' && !this.quantized)
      throw new Error(`this ${this.kind} model has no int8 weights: make an int8 model with \`fcn quantize --weights W --calib DIR --out Q\`, or use float32`);
  }

  /**
   * The network's steps in inference, for a walk over its description (network.ts): each
   * value is freed as soon as the walk is done with it, except `input` (the caller's).
   */
  inferenceOps(precision: InferencePrecision, hooks: PassHooks = {}, input: Tensor | null = null): NetworkOps<Tensor> {
    this.checkPrecision(precision);
    const ctx: ForwardContext = { training: false, precision, tape: null, seed: 0 };
    const logitsCtx: ForwardContext = { ...ctx, logits: true };
    return {
      pad: (x, m) => {
        const [, , h, w] = x.dims as [number, number, number, number];
        const hp = Math.ceil(h / m) * m, wp = Math.ceil(w / m) * m;
        return hp === h && wp === w ? x : native.cropPad(x, { height: hp, width: wp });
      },
      conv: (l, x, factor) => {
        const layer = this.layer(l.name);
        const y = layer.forward(x, l === this.network.output.upsample ? logitsCtx : ctx, factor ?? 1);
        hooks.conv?.(layer, y);
        return y;
      },
      pool: (p, x) => this.parts.pool(p).forward(x, ctx),
      dropout: (_name, x) => x,
      crop: (x, offset, like) => {
        if (offset === null) return x;
        const [height, width] = [like.dims[2]!, like.dims[3]!];
        // A crop to itself of a plain float32 map (the logits of an input already a multiple of
        // 32) would only copy it; a bfloat16 one is widened to float32 by the crop.
        if (offset === 0 && x.dims[2] === height && x.dims[3] === width && x.layout === 'plain' && x.dtype === 'float32') return x;
        return native.cropPad(x, { top: offset, left: offset, height, width });
      },
      add: (a, b) => native.add(a, b),
      free: (x) => {
        if (x !== input) x.dispose();
      },
      ...(hooks.stage ? { stage: hooks.stage } : {}),
    };
  }

  /**
   * Logits N×classes×H×W (plain float32) for a preprocessed batch N×3×H×W, at any H×W. In
   * the keras style the input is padded at the bottom/right with zeros (the mean colour after
   * preprocessing) to a multiple of 32; in the caffe style conv1's margin does that job.
   * Either way the crops bring the logits back to the input's size.
   */
  predictLogits(x: Tensor, precision: InferencePrecision = 'float32', hooks: PassHooks = {}): Tensor {
    return walkNetwork(this.network, x, this.inferenceOps(precision, hooks, x));
  }

  /**
   * A training forward pass: the tape owns every activation until disposed after backward.
   * `firstImage`: where x's images start in the whole batch (a rank's share), for dropout.
   */
  forwardTrain(x: Tensor, precision: Precision, seed: number, firstImage = 0): { logits: Tensor; tape: Tape } {
    this.checkPrecision(precision);
    this.recorded = null;
    const tape = new Tape();
    try {
      const pass = new RecordedPass(x, { training: true, precision, tape, seed, firstImage }, this.parts);
      const logits = walkNetwork(this.network, pass.input, pass.ops());
      this.recorded = { pass, logits };
      return { logits: logits.t, tape };
    } catch (e) {
      tape.dispose();
      throw e;
    }
  }

  /**
   * Backpropagates dL/dlogits (N×classes×H×W) through the last training forward pass,
   * setting the gradients of every trainable parameter. Disposes nothing it was given.
   * `onGradReady` is called for each trainable parameter as soon as its gradient is final
   * (output layers first): data-parallel training starts sending gradients from there.
   */
  backward(dlogits: Tensor, onGradReady?: (p: Param) => void): void {
    const recorded = this.recorded;
    this.recorded = null;
    if (!recorded) throw new Error(`${this.kind}: backward without a training forward pass`);
    if (!recorded.logits.needsGrad) return;
    // The previous step's gradients go back to the buffer pool before the new ones are
    // made (same sizes): peak memory holds one set of gradients, not two.
    for (const p of this.params()) if (p.trainable) p.setGrad(null);
    recorded.pass.backward(recorded.logits, dlogits, onGradReady);
  }

  /** Frees every parameter and prepared weight copy. */
  dispose(): void {
    this.recorded = null;
    for (const l of this.layers()) {
      l.setQuant(null);
      l.clearCaches();
      for (const p of l.params()) p.dispose();
    }
  }
}
