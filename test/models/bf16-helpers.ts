// What the bfloat16 model-level tests measure with: bf16 rounding done in JavaScript (an
// independent reference for what storing a value in bf16 costs), gradients as plain arrays,
// their relative L2 error and scale, and synthetic images of any size.
import { native, type Precision, type Tensor } from '../../src/engine/binding.js';
import type { FCN } from '../../src/models/fcn.js';
import { computeGradients } from '../../src/train/step.js';
import { renderScene } from '../../src/data/synth.js';
import { toNetworkInput } from '../../src/data/transforms.js';
import { Rng } from '../../src/data/prng.js';
import type { RgbImage } from '../../src/io/image.js';

const word = new Float32Array(1), bits = new Uint32Array(word.buffer);

/** `v` rounded to the nearest bfloat16 (ties to even), as oneDNN converts float32 to bf16. */
export function roundToBf16(v: number): number {
  word[0] = v;
  const lsb = (bits[0]! >>> 16) & 1;
  bits[0] = ((bits[0]! + 0x7fff + lsb) >>> 16) << 16;
  return word[0];
}

/** Every parameter's value rounded to bf16 in place (the master weights as bf16 would store them). */
export function roundWeightsToBf16(model: FCN): void {
  for (const p of model.params()) p.assign(native.fromArray(p.dims, Float32Array.from(p.value.toArray() as Float32Array, roundToBf16)));
}

export interface Gradients {
  loss: number;
  /** Each parameter's gradient by name, in float64 for the sums below. */
  byName: Map<string, Float64Array>;
}

/** The loss and every parameter's gradient for one batch, in a precision, without an update. */
export function gradientsOf(model: FCN, x: Tensor, y: Tensor, precision: Precision): Gradients {
  const r = computeGradients(model, x, y, { precision });
  const byName = new Map<string, Float64Array>();
  for (const p of model.params()) if (p.grad) byName.set(p.name, Float64Array.from(p.grad.toArray() as Float32Array));
  return { loss: r.loss, byName };
}

/** ||b − a|| / ||a||. */
export function relativeL2(a: Float64Array, b: Float64Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (b[i]! - a[i]!) ** 2;
    n += a[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

/** The least-squares factor s minimising ||b − s·a||: 1 when b has a's magnitude along a. */
export function scaleAlong(a: Float64Array, b: Float64Array): number {
  let dot = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    n += a[i]! ** 2;
  }
  return dot / n;
}

/** `n` synthetic S×S scenes (shapes on textured backgrounds, 6 classes) as a training batch. */
export function sceneBatch(seed: number, n: number, S: number): { x: Tensor; y: Tensor } {
  const images = new Float32Array(n * 3 * S * S), labels = new Uint8Array(n * S * S);
  for (let i = 0; i < n; i++) {
    const scene = renderScene(seed, i, S);
    const s = toNetworkInput({ id: String(i), width: S, height: S, image: scene.image, label: scene.label });
    images.set(s.image, i * 3 * S * S);
    labels.set(s.label, i * S * S);
  }
  return { x: native.fromArray([n, 3, S, S], images), y: native.fromArray([n, S, S], labels) };
}

/** A synthetic scene cut to width × height (sizes not multiples of 32 meet the tiles' edges). */
export function scenePicture(seed: number, width: number, height: number): RgbImage {
  const side = Math.max(width, height);
  const scene = renderScene(seed, 0, side);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) data.set(scene.image.subarray(y * side * 3, (y * side + width) * 3), y * width * 3);
  return { data, width, height };
}

/** Non-zero skip scores (initialize() zeroes them), so the 1/16 and 1/8 paths count too. */
export function randomSkipScores(model: FCN, seed: number, scale: number): void {
  const rng = new Rng(seed);
  for (const l of [model.score4, model.score3]) {
    if (!l) continue;
    const n = l.kernel.dims.reduce((a, b) => a * b, 1);
    l.kernel.assign(native.fromArray(l.kernel.dims, Float32Array.from({ length: n }, () => (rng.next() - 0.5) * scale)));
  }
}
