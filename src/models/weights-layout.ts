// A model's parameters as the project's weights files lay them out, the Keras layouts, so
// that a Keras `.h5` maps one to one: `<layer>.kernel` is (kh, kw, in, out) for convolutions
// and (kh, kw, out, in) for transposed convolutions, `<layer>.bias` is (out). The metadata
// records the model, style, width, classes (and their names) so that a file alone rebuilds
// its network. Shared by the float32 files (weights.ts), training checkpoints and int8 files
// (int8-weights.ts).
import { native, type Tensor } from '../engine/binding.js';
import type { SafetensorsTensor } from '../io/safetensors.js';
import type { Param } from '../nn/param.js';
import type { FCN } from './fcn.js';
import { rgbHex } from '../data/classes.js';

export const WEIGHTS_FORMAT = 'fcn-keras-layout';

/** Axis order of the Keras array, as indices into the engine's O,I,KH,KW. */
export function kerasAxes(p: Param): number[] {
  if (p.role === 'bias') return [0];
  return p.transposed ? [2, 3, 0, 1] : [2, 3, 1, 0];
}

export function inversePerm(perm: number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((a, k) => (inv[a] = k));
  return inv;
}

export function kerasShape(p: Param): number[] {
  return kerasAxes(p).map((a) => p.dims[a]);
}

/**
 * A parameter's value (or another array of its shape, e.g. its gradient) in Keras layout. Read
 * from the master as stored: saving a checkpoint does not move a master kept in its gradient's layout.
 */
export function toKerasLayout(p: Param, t: Tensor = p.master): SafetensorsTensor {
  // A gradient may come in its kernel's blocked layout: permute reads plain tensors.
  const plain = t.layout === 'plain' ? t : native.reorder(t);
  let k: Tensor;
  try {
    k = native.permute(plain, kerasAxes(p));
  } finally {
    if (plain !== t) plain.dispose();
  }
  try {
    const data = k.toArray();
    if (data instanceof Float32Array) return { dtype: 'F32', shape: kerasShape(p), data };
    if (data instanceof Int8Array) return { dtype: 'I8', shape: kerasShape(p), data };
    throw new Error(`${p.name}: a ${t.dtype} tensor has no weights-file form`);
  } finally {
    k.dispose();
  }
}

/** A Keras-layout array as the engine's tensor for parameter p (O,I,KH,KW or (out)), in one native pass. */
export function fromKerasLayout(p: Param, data: Float32Array | Int8Array): Tensor {
  return native.fromArray(kerasShape(p), data, inversePerm(kerasAxes(p)));
}

/** The model's parameters as Keras-layout float32 arrays, by checkpoint name. */
export function weightsToKeras(model: FCN): Map<string, SafetensorsTensor> {
  return new Map(model.params().map((p) => [p.name, toKerasLayout(p)]));
}

export function weightsMetadata(model: FCN): Record<string, string> {
  return {
    format: WEIGHTS_FORMAT,
    model: model.kind,
    style: model.style,
    width: String(model.width),
    classes: String(model.numClasses),
    ...(model.skipScales ? { skip_scales: model.skipScales.join(',') } : {}),
    ...(model.classNames ? { class_names: JSON.stringify(model.classNames) } : {}),
    ...(model.classColors ? { class_colors: JSON.stringify(model.classColors.map(rgbHex)) } : {}),
  };
}
