// Transforms from a decoded pair to network input, and augmentation.
//
// The first step turns the RGB bytes into the network's input layout: CHW float, BGR order,
// per-channel mean subtracted (Keras vgg16.preprocess_input, or Caffe's means). All geometric
// steps after it work on that tensor, so padding is exactly 0 in the image (the mean colour)
// and 255 (void) in the label. Bilinear resampling is linear, so resizing after the mean
// subtraction equals resizing before it. Labels are always resampled by nearest neighbour.
// Every random step draws from the Rng it is given; see loader.ts for how each sample's Rng
// is derived from the seed, the epoch and the sample index.
import { VOID } from './classes.js';
import type { RawSample } from './datasets.js';
import type { Rng } from './prng.js';
import type { RgbImage } from '../io/image.js';

/** Keras `vgg16.preprocess_input` means, in BGR order. */
export const KERAS_MEANS_BGR: readonly [number, number, number] = [103.939, 116.779, 123.68];
/** The FCN Caffe release's means, in BGR order. */
export const CAFFE_MEANS_BGR: readonly [number, number, number] = [104.00698793, 116.66876762, 122.67891434];

export type Means = 'keras' | 'caffe' | readonly [number, number, number];

export function meansBgr(m: Means): [number, number, number] {
  if (m === 'keras') return [...KERAS_MEANS_BGR];
  if (m === 'caffe') return [...CAFFE_MEANS_BGR];
  if (!Array.isArray(m) || m.length !== 3 || !m.every((v) => Number.isFinite(v))) throw new Error(`means must be "keras", "caffe" or [b, g, r], got ${JSON.stringify(m)}`);
  return [m[0], m[1], m[2]];
}

/** A network-ready sample: image CHW (3 planes, B, G, R), mean-subtracted; label HW, 255 = void. */
export interface Sample {
  id: string;
  width: number;
  height: number;
  image: Float32Array;
  label: Uint8Array;
}

/** RGB HWC bytes → BGR CHW float minus the means. */
export function toNetworkInput(raw: RawSample, means: Means = 'keras'): Sample {
  const image = networkInput({ data: raw.image, width: raw.width, height: raw.height }, means);
  return { id: raw.id, width: raw.width, height: raw.height, image, label: raw.label };
}

/**
 * RGB bytes → the network's input for the window [top, top+height) × [left, left+width): CHW
 * float, BGR order, means subtracted. Pixels outside the image are 0, the mean colour, as the
 * network's own padding.
 */
export function networkInput(rgb: RgbImage, means: Means, top = 0, left = 0, height = rgb.height, width = rgb.width): Float32Array {
  const [mb, mg, mr] = meansBgr(means);
  const n = height * width;
  const out = new Float32Array(3 * n);
  const src = rgb.data, W = rgb.width;
  const y1 = Math.min(height, rgb.height - top), x0 = Math.max(0, -left), x1 = Math.min(width, W - left);
  for (let y = Math.max(0, -top); y < y1; y++) {
    const row = y * width;
    for (let x = x0, p = ((top + y) * W + left + x0) * 3; x < x1; x++, p += 3) {
      out[row + x] = src[p + 2]! - mb;
      out[n + row + x] = src[p + 1]! - mg;
      out[2 * n + row + x] = src[p]! - mr;
    }
  }
  return out;
}

/** Back from network input to RGB bytes (for viewing samples). */
export function toRgbBytes(image: Float32Array, width: number, height: number, means: Means = 'keras'): Uint8Array {
  const [mb, mg, mr] = meansBgr(means);
  const n = width * height;
  const out = new Uint8ClampedArray(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = Math.round(image[2 * n + i]! + mr);
    out[i * 3 + 1] = Math.round(image[n + i]! + mg);
    out[i * 3 + 2] = Math.round(image[i]! + mb);
  }
  return new Uint8Array(out.buffer);
}

function clampSize(v: number): number {
  return Math.max(1, Math.round(v));
}

/**
 * Where output pixel i of n falls among `size` input pixels (centres aligned): its two
 * bilinear neighbours and the weight of the second, and its nearest neighbour.
 */
function sampleAt(i: number, n: number, size: number): { i0: number; i1: number; f: number; near: number } {
  const s = Math.max(0, ((i + 0.5) * size) / n - 0.5);
  const i0 = Math.min(Math.floor(s), size - 1);
  return { i0, i1: Math.min(i0 + 1, size - 1), f: s - i0, near: Math.min(Math.floor(((i + 0.5) * size) / n), size - 1) };
}

/**
 * Resizes to height × width: the image bilinearly (pixel centres aligned, like OpenCV's
 * INTER_LINEAR and PyTorch's align_corners=False), the label by nearest neighbour.
 */
export function resize(s: Sample, height: number, width: number): Sample {
  if (!(Number.isInteger(height) && Number.isInteger(width) && height > 0 && width > 0)) throw new Error(`${s.id}: bad resize target ${width}×${height}`);
  if (height === s.height && width === s.width) return s;
  const sh = s.height, sw = s.width;
  const x0 = new Int32Array(width), x1 = new Int32Array(width), fx = new Float32Array(width), nx = new Int32Array(width);
  for (let x = 0; x < width; x++) ({ i0: x0[x], i1: x1[x], f: fx[x], near: nx[x] } = sampleAt(x, width, sw));
  const image = new Float32Array(3 * width * height);
  const label = new Uint8Array(width * height);
  const sn = sh * sw, dn = height * width;
  for (let y = 0; y < height; y++) {
    const { i0: j0, i1: j1, f: fy, near: ny } = sampleAt(y, height, sh);
    for (let c = 0; c < 3; c++) {
      const r0 = c * sn + j0 * sw, r1 = c * sn + j1 * sw, o = c * dn + y * width;
      for (let x = 0; x < width; x++) {
        const a = s.image[r0 + x0[x]!]!, b = s.image[r0 + x1[x]!]!;
        const cc = s.image[r1 + x0[x]!]!, d = s.image[r1 + x1[x]!]!;
        const f = fx[x]!;
        const top = a + (b - a) * f, bot = cc + (d - cc) * f;
        image[o + x] = top + (bot - top) * fy;
      }
    }
    const lr = ny * sw, lo = y * width;
    for (let x = 0; x < width; x++) label[lo + x] = s.label[lr + nx[x]!]!;
  }
  return { id: s.id, width, height, image, label };
}

/**
 * Cuts the window (top, left, height, width) out of the sample. The window may reach outside
 * the sample: those pixels are padding (image 0 = the mean colour, label 255).
 */
export function crop(s: Sample, top: number, left: number, height: number, width: number): Sample {
  const image = new Float32Array(3 * width * height);
  const label = new Uint8Array(width * height).fill(VOID);
  const y0 = Math.max(0, top), y1 = Math.min(s.height, top + height);
  const x0 = Math.max(0, left), x1 = Math.min(s.width, left + width);
  const sn = s.width * s.height, dn = width * height;
  if (x1 > x0) {
    for (let y = y0; y < y1; y++) {
      const so = y * s.width, doff = (y - top) * width - left;
      for (let c = 0; c < 3; c++) image.set(s.image.subarray(c * sn + so + x0, c * sn + so + x1), c * dn + doff + x0);
      label.set(s.label.subarray(so + x0, so + x1), doff + x0);
    }
  }
  return { id: s.id, width, height, image, label };
}

/** Pads to at least height × width (bottom and right), image with 0, label with 255. */
export function padTo(s: Sample, height: number, width: number): Sample {
  if (s.height >= height && s.width >= width) return s;
  return crop(s, 0, 0, Math.max(height, s.height), Math.max(width, s.width));
}

/**
 * Keras-FCN's preprocessing: scale so the longer side is `size` (aspect kept), then pad to
 * size × size at the bottom and right, with label 255.
 */
export function resizeWithPad(s: Sample, size: number): Sample {
  const f = size / Math.max(s.height, s.width);
  const h = Math.min(size, clampSize(s.height * f)), w = Math.min(size, clampSize(s.width * f));
  return padTo(resize(s, h, w), size, size);
}

/** Rows of width w, each reversed. */
function mirrorRows<T extends Float32Array | Uint8Array>(src: T, w: number): T {
  const out = src.slice() as T;
  for (let o = 0; o < src.length; o += w) out.subarray(o, o + w).reverse();
  return out;
}

/** Mirrors left-right. */
export function hflip(s: Sample): Sample {
  return { id: s.id, width: s.width, height: s.height, image: mirrorRows(s.image, s.width), label: mirrorRows(s.label, s.width) };
}

/** Scales both sides by a factor drawn uniformly from [min, max] (sizes rounded, at least 1). */
export function randomScale(s: Sample, rng: Rng, min = 0.5, max = 2): Sample {
  const factor = rng.uniform(min, max);
  return resize(s, clampSize(s.height * factor), clampSize(s.width * factor));
}

/** A random size × size window; a smaller sample is first padded (bottom/right) with 0 / 255. */
export function randomCrop(s: Sample, rng: Rng, height: number, width = height): Sample {
  const p = padTo(s, height, width);
  const top = rng.int(p.height - height + 1);
  const left = rng.int(p.width - width + 1);
  return top === 0 && left === 0 && p.height === height && p.width === width ? p : crop(p, top, left, height, width);
}

/** Mirrors with probability p. */
export function randomHflip(s: Sample, rng: Rng, p = 0.5): Sample {
  return rng.chance(p) ? hflip(s) : s;
}

/** A serialisable transform step (so pipelines can be sent to worker threads). */
export type TransformSpec =
  | { op: 'resizeWithPad'; size: number }
  | { op: 'randomScale'; min: number; max: number }
  | { op: 'randomCrop'; height: number; width?: number }
  | { op: 'hflip'; p?: number };

export interface PipelineSpec {
  means: Means;
  steps: TransformSpec[];
}

/** Checks a pipeline's parameters, throwing on the first bad one. */
export function validatePipeline(p: PipelineSpec): void {
  meansBgr(p.means);
  const posInt = (v: unknown, what: string) => {
    if (!(typeof v === 'number' && Number.isInteger(v) && v > 0)) throw new Error(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
  };
  for (const t of p.steps) {
    switch (t.op) {
      case 'resizeWithPad': posInt(t.size, 'resizeWithPad size'); break;
      case 'randomScale':
        if (!(t.min > 0 && t.max >= t.min)) throw new Error(`randomScale needs 0 < min ≤ max, got ${t.min}-${t.max}`);
        break;
      case 'randomCrop':
        posInt(t.height, 'randomCrop height');
        if (t.width !== undefined) posInt(t.width, 'randomCrop width');
        break;
      case 'hflip':
        if (t.p !== undefined && !(t.p >= 0 && t.p <= 1)) throw new Error(`hflip p must be in [0, 1], got ${t.p}`);
        break;
      default:
        throw new Error(`unknown transform ${JSON.stringify((t as { op: unknown }).op)}`);
    }
  }
}

/** Applies a pipeline to a decoded pair. */
export function applyPipeline(raw: RawSample, p: PipelineSpec, rng: Rng): Sample {
  let s = toNetworkInput(raw, p.means);
  for (const t of p.steps) {
    switch (t.op) {
      case 'resizeWithPad': s = resizeWithPad(s, t.size); break;
      case 'randomScale': s = randomScale(s, rng, t.min, t.max); break;
      case 'randomCrop': s = randomCrop(s, rng, t.height, t.width ?? t.height); break;
      case 'hflip': s = randomHflip(s, rng, t.p ?? 0.5); break;
    }
  }
  return s;
}

/** Training augmentation: random scale, random crop padded with void, random flip. */
export function trainPipeline(o: { size?: number; scale?: [number, number]; flip?: boolean; means?: Means } = {}): PipelineSpec {
  const size = o.size ?? 512;
  const [min, max] = o.scale ?? [0.5, 2];
  const steps: TransformSpec[] = [];
  if (!(min === 1 && max === 1)) steps.push({ op: 'randomScale', min, max });
  steps.push({ op: 'randomCrop', height: size });
  if (o.flip ?? true) steps.push({ op: 'hflip', p: 0.5 });
  return { means: o.means ?? 'keras', steps };
}

/** Keras-FCN's deterministic preprocessing: resize-with-pad to size × size (no size: full image). */
export function evalPipeline(o: { size?: number; means?: Means } = {}): PipelineSpec {
  return { means: o.means ?? 'keras', steps: o.size ? [{ op: 'resizeWithPad', size: o.size }] : [] };
}
