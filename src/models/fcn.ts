// FCN-32s, FCN-16s and FCN-8s on one shared VGG16 body, with the seed's layer names.
// Shape letters: N batch, C channels, H×W the input's size, Hp×Wp padded to a multiple of 32.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { Tape, disposeAll } from '../engine/tensor.js';
import { Conv2d, Dropout, MaxPool2d, type ForwardContext } from '../nn/layers.js';
import { Param } from '../nn/param.js';
import { bilinearInit, glorotUniform, heUniform, zeroInit } from '../nn/init.js';
import { Rng } from '../data/prng.js';

export type FcnKind = 'fcn32' | 'fcn16' | 'fcn8';
export const FCN_KINDS: readonly FcnKind[] = ['fcn32', 'fcn16', 'fcn8'];
export const NUM_CLASSES = 21;
/** The body's total stride: inputs are padded to a multiple of it. */
export const OUTPUT_STRIDE = 32;

export interface FcnOptions {
  kind: FcnKind;
  /** Channel multiplier of VGG16 (1 = full width; 0.125 for small test models). */
  width?: number;
  numClasses?: number;
  /** Dropout rate of drop6 and drop7 (the seed used 0.2). */
  dropout?: number;
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

export class FCN {
  readonly kind: FcnKind;
  readonly width: number;
  readonly numClasses: number;
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

  constructor(options: FcnOptions) {
    const { kind } = options;
    if (!FCN_KINDS.includes(kind)) throw new Error(`unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
    const width = options.width ?? 1;
    if (!(width > 0 && width <= 1)) throw new Error(`width must be in (0, 1], got ${width}`);
    this.kind = kind;
    this.width = width;
    const classes = (this.numClasses = options.numClasses ?? NUM_CLASSES);
    const rate = options.dropout ?? 0.2;

    let inC = 3;
    for (const [b, n, c] of VGG_BLOCKS) {
      const out = scaledChannels(c, width);
      const convs: Conv2d[] = [];
      for (let i = 1; i <= n; i++) {
        convs.push(new Conv2d(`block${b}_conv${i}`, { inChannels: inC, outChannels: out, kernel: 3, relu: true }));
        inC = out;
      }
      this.blocks.push({ convs, pool: new MaxPool2d(`block${b}_pool`) });
    }
    const fc = scaledChannels(4096, width);
    const c3 = scaledChannels(256, width), c4 = scaledChannels(512, width);
    this.conv6 = new Conv2d('conv6', { inChannels: inC, outChannels: fc, kernel: 7, relu: true });
    this.drop6 = new Dropout('drop6', rate, 6);
    this.conv7 = new Conv2d('conv7', { inChannels: fc, outChannels: fc, kernel: 1, relu: true });
    this.drop7 = new Dropout('drop7', rate, 7);
    this.score7 = new Conv2d('score7', { inChannels: fc, outChannels: classes, kernel: 1 });
    const up = (name: string, k: number, s: number) => new Conv2d(name, { inChannels: classes, outChannels: classes, kernel: k, stride: s, transposed: true });
    if (kind === 'fcn32') {
      this.upsample = up('fcn32', 64, 32);
    } else {
      this.score7Upsample = up('score7_upsample', 4, 2);
      this.score4 = new Conv2d('score4', { inChannels: c4, outChannels: classes, kernel: 1 });
      if (kind === 'fcn16') {
        this.upsample = up('fcn16', 32, 16);
      } else {
        this.skip4Upsample = up('skip4_upsample', 4, 2);
        this.score3 = new Conv2d('score3', { inChannels: c3, outChannels: classes, kernel: 1 });
        this.upsample = up('fcn8', 16, 8);
      }
    }
    // The seed freezes its bilinear upsampling layers.
    for (const l of this.upsamplers()) l.trainable = false;
  }

  /** Every layer with parameters, input to output. */
  layers(): Conv2d[] {
    const heads = [this.score7Upsample, this.score4, this.skip4Upsample, this.score3].filter((l): l is Conv2d => l !== null);
    return [...this.blocks.flatMap((b) => b.convs), this.conv6, this.conv7, this.score7, ...heads, this.upsample];
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
   * Logits N×classes×H×W (plain float32) for a preprocessed batch N×3×H×W. Any H×W: the
   * input is padded at the bottom/right with zeros (the mean colour after preprocessing)
   * to a multiple of 32, and the logits are cropped back.
   */
  predictLogits(x: Tensor, precision: Precision = 'float32'): Tensor {
    const ctx: ForwardContext = { training: false, precision, tape: null, seed: 0 };
    return this.run(x, ctx);
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

  private run(x: Tensor, ctx: ForwardContext): Tensor {
    const [, , h, w] = x.dims;
    const hp = Math.ceil(h / OUTPUT_STRIDE) * OUTPUT_STRIDE, wp = Math.ceil(w / OUTPUT_STRIDE) * OUTPUT_STRIDE;
    this.inputSize = [h, w];
    // In training the tape keeps every activation; in inference each is freed once used
    // (except the caller's input and the pools the skips read later).
    const keep = (t: Tensor) => (ctx.tape ? ctx.tape.keep(t) : t);
    let pool3: Tensor | null = null, pool4: Tensor | null = null;
    const done = (t: Tensor) => {
      if (!ctx.tape && t !== x && t !== pool3 && t !== pool4) t.dispose();
    };
    let t = h === hp && w === wp ? x : keep(native.cropPad(x, { height: hp, width: wp }));
    const step = (f: (v: Tensor) => Tensor | null) => {
      const y = f(t);
      if (y) {
        keep(y);
        done(t);
        t = y;
      }
    };
    for (const [i, block] of this.blocks.entries()) {
      for (const conv of block.convs) step((v) => conv.forward(v, ctx));
      step((v) => block.pool.forward(v, ctx)); // block i+1 ends at 1/2, 1/4, 1/8, 1/16, 1/32
      if (i === 2) pool3 = t; // 1/8
      if (i === 3) pool4 = t; // 1/16
    }
    step((v) => this.conv6.forward(v, ctx)); // 1/32
    step((v) => this.drop6.forward(v, ctx));
    step((v) => this.conv7.forward(v, ctx));
    step((v) => this.drop7.forward(v, ctx));
    step((v) => this.score7.forward(v, ctx));
    if (this.score7Upsample && this.score4) {
      const s4 = keep(this.score4.forward(pool4!, ctx));
      step((v) => this.score7Upsample!.forward(v, ctx)); // 1/16
      step((v) => native.add(v, s4)); // skip4
      done(s4);
      if (this.skip4Upsample && this.score3) {
        const s3 = keep(this.score3.forward(pool3!, ctx));
        step((v) => this.skip4Upsample!.forward(v, ctx)); // 1/8
        step((v) => native.add(v, s3)); // skip3
        done(s3);
      }
    }
    const pools = [pool3, pool4];
    pool3 = pool4 = null;
    for (const p of pools) if (p) done(p);
    const full = keep(this.upsample.forward(t, ctx)); // 1/1, Hp×Wp
    done(t);
    // The edge: plain float32 logits at the input's own size.
    const logits = native.cropPad(full, { height: h, width: w });
    done(full);
    return logits;
  }

  private inputSize: [number, number] = [0, 0];

  /**
   * Backpropagates dL/dlogits (N×classes×H×W) through the last training forward pass,
   * setting the gradients of every trainable parameter. Layers below the lowest trainable
   * one are skipped. Disposes nothing it was given.
   */
  backward(dlogits: Tensor): void {
    const chain = [...this.blocks.flatMap((b) => b.convs), this.conv6, this.conv7, this.score7];
    // A layer's input gradient is wanted only when something below it is trainable.
    const trainableBelow = (layers: Conv2d[]) => layers.some((l) => l.trainable);
    const below = (l: Conv2d) => {
      if (l === this.score4) return trainableBelow(this.blocks.slice(0, 4).flatMap((b) => b.convs));
      if (l === this.score3) return trainableBelow(this.blocks.slice(0, 3).flatMap((b) => b.convs));
      const i = chain.indexOf(l);
      return i < 0 ? trainableBelow(chain) || trainableBelow([this.score4, this.score3].filter((x): x is Conv2d => x !== null)) : trainableBelow(chain.slice(0, i));
    };
    if (!this.layers().some((l) => l.trainable)) return;
    // The previous step's gradients go back to the buffer pool before the new ones are
    // made (same sizes): peak memory holds one set of gradients, not two.
    for (const p of this.params()) if (p.trainable) p.setGrad(null);
    const [hp, wp] = this.inputSize.map((s) => Math.ceil(s / OUTPUT_STRIDE) * OUTPUT_STRIDE);
    let g: Tensor | null = native.cropPad(dlogits, { height: hp, width: wp });
    let dPool3: Tensor | null = null, dPool4: Tensor | null = null;
    const swap = (next: Tensor | null) => {
      if (next !== g) disposeAll(g);
      g = next;
    };
    const join = (extra: Tensor) => {
      if (g) {
        swap(native.add(g, extra));
        extra.dispose();
      } else g = extra;
    };
    try {
      swap(this.upsample.backward(g, true));
      if (this.skip4Upsample && this.score3) {
        dPool3 = this.score3.backward(g!, below(this.score3));
        swap(this.skip4Upsample.backward(g!, true));
      }
      if (this.score7Upsample && this.score4) {
        dPool4 = this.score4.backward(g!, below(this.score4));
        swap(this.score7Upsample.backward(g!, true));
      }
      swap(this.score7.backward(g!, below(this.score7)));
      if (g) swap(this.drop7.backward(g) ?? g);
      if (g) swap(this.conv7.backward(g, below(this.conv7)));
      if (g) swap(this.drop6.backward(g) ?? g);
      if (g) swap(this.conv6.backward(g, below(this.conv6)));
      for (let i = this.blocks.length - 1; i >= 0; i--) {
        // The skips join the body's gradient at the pools they read.
        if (i === 3 && dPool4) {
          join(dPool4);
          dPool4 = null;
        }
        if (i === 2 && dPool3) {
          join(dPool3);
          dPool3 = null;
        }
        if (!g) continue;
        const block = this.blocks[i];
        swap(block.pool.backward(g));
        for (let j = block.convs.length - 1; j >= 0 && g; j--) swap(block.convs[j].backward(g, below(block.convs[j])));
      }
    } finally {
      disposeAll(g, dPool3, dPool4);
    }
  }

  /** Frees every parameter and prepared weight copy. */
  dispose(): void {
    for (const l of this.layers()) {
      l.clearCaches();
      for (const p of l.params()) p.dispose();
    }
  }
}
