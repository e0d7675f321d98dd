// Weight initialisers, seeded: He-uniform for kernels under a ReLU, Keras's glorot-uniform
// default for the rest, zeros, and the FCN paper's bilinear kernel for transposed convolutions.
import { native } from '../engine/binding.js';
import type { Param } from './param.js';
import type { Rng } from '../data/prng.js';

/** Glorot (Xavier) uniform over a kernel O,I,KH,KW: limit √(6 / (fan_in + fan_out)). */
export function glorotUniform(param: Param, rng: Rng): void {
  const [o, i, kh, kw] = param.dims;
  uniformInit(param, rng, Math.sqrt(6 / (kh * kw * i + kh * kw * o)));
}

/**
 * He (Kaiming) uniform: limit √(6 / fan_in). Glorot scaling halves the signal's variance at
 * every ReLU, so through VGG16's 15 ReLU layers a randomly initialised FCN starts with a
 * near-constant output and barely trains; He scaling keeps the variance (He et al. 2015).
 */
export function heUniform(param: Param, rng: Rng): void {
  const [, i, kh, kw] = param.dims;
  uniformInit(param, rng, Math.sqrt(6 / (kh * kw * i)));
}

// Values are drawn in order and written slice by slice into the parameter's own buffer: no
// full-size JS copy or second native buffer (conv6's kernel alone is 411 MB).
const SLICE = 1 << 20;

function uniformInit(param: Param, rng: Rng, limit: number): void {
  const [o, i, kh, kw] = param.dims;
  const total = o * i * kh * kw;
  const target = writableValue(param);
  const values = new Float32Array(Math.min(SLICE, total));
  for (let start = 0; start < total; start += SLICE) {
    const n = Math.min(SLICE, total - start);
    const slice = n === values.length ? values : values.subarray(0, n);
    for (let k = 0; k < n; k++) slice[k] = (rng.next() * 2 - 1) * limit;
    native.writeArray(target, slice, start);
  }
  param.version++;
}

/** The parameter's tensor when it can be written in place (plain float32), else a fresh one. */
function writableValue(param: Param) {
  const v = param.value;
  if (!v.disposed && v.dtype === 'float32' && v.layout === 'plain') return v;
  param.assign(native.zeros(param.dims));
  return param.value;
}

export function zeroInit(param: Param): void {
  param.assign(native.zeros(param.dims));
}

/** The bilinear interpolation kernel (one k×k plane), as the FCN paper's upsampling uses. */
export function bilinearPlane(k: number): Float32Array {
  const factor = Math.floor((k + 1) / 2);
  const centre = k % 2 === 1 ? factor - 1 : factor - 0.5;
  const plane = new Float32Array(k * k);
  for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) plane[y * k + x] = (1 - Math.abs(y - centre) / factor) * (1 - Math.abs(x - centre) / factor);
  return plane;
}

/** Bilinear upsampling: class i → class i only; zero between different classes. */
export function bilinearInit(param: Param): void {
  const [o, i, kh, kw] = param.dims;
  if (o !== i || kh !== kw) throw new Error(`${param.name}: bilinear init needs a square kernel with as many outputs as inputs, got ${param.dims.join('×')}`);
  const plane = bilinearPlane(kh);
  const values = new Float32Array(o * i * kh * kw);
  for (let c = 0; c < o; c++) values.set(plane, (c * i + c) * kh * kw);
  param.assign(native.fromArray(param.dims, values));
}
