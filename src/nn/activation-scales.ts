// The scale of each quantized activation. An int8 forward pass hands uint8 tensors from layer
// to layer (a convolution's output, then the pooling of it); their real values are
// `scale · q`. Tensors are native objects, so the scale travels beside them in a WeakMap
// rather than in the addon: a pooling keeps its input's scale, and code that needs real
// values (stitching tiles, the fp32 layers) dequantizes with it.
import { native, type Tensor } from '../engine/binding.js';
import { int8SevenBitActivations } from '../engine/config.js';

const scales = new WeakMap<Tensor, number>();

/** Marks `t` (uint8) as holding real values `scale · q`; returns t. */
export function withScale(t: Tensor, scale: number): Tensor {
  scales.set(t, scale);
  return t;
}

/** The scale of a quantized tensor, or null for a float tensor. */
export function scaleOf(t: Tensor): number | null {
  return scales.get(t) ?? null;
}

/** Real values as a new float32 tensor in t's layout (t itself when already float). */
export function dequantized(t: Tensor): Tensor {
  if (t.dtype !== 'uint8' && t.dtype !== 'int8') return t;
  const s = scales.get(t);
  if (s === undefined) throw new Error(`a ${t.dtype} activation without a scale reached a float layer`);
  return native.reorder(t, { dtype: 'float32', like: t, scale: s });
}

/**
 * The largest level of a uint8 activation on this CPU: 255, or 127 where the int8 sums are
 * only exact for 7-bit inputs (see int8SevenBitActivations).
 */
export function activationLevels(): number {
  return int8SevenBitActivations() ? 127 : 255;
}

/**
 * A stored activation scale as this CPU runs it. Files store scales for 255 levels (the
 * calibrated maximum at level 255); with 127 levels the same maximum sits at level 127.
 */
export function runtimeScale(stored: number): number {
  return (stored * 255) / activationLevels();
}

/** Non-negative float values (after a ReLU) quantized to uint8 with `scale`, within activationLevels(), in t's layout. */
export function quantizedUnsigned(t: Tensor, scale: number): Tensor {
  if (activationLevels() === 255) return withScale(native.reorder(t, { dtype: 'uint8', like: t, scale: 1 / scale }), scale);
  // int8 saturates at 127: through it, values stay within 7 bits, then become uint8 as they are.
  const s8 = native.reorder(t, { dtype: 'int8', like: t, scale: 1 / scale });
  try {
    return withScale(native.reorder(s8, { dtype: 'uint8', like: s8 }), scale);
  } finally {
    s8.dispose();
  }
}

/**
 * Signed float values (the preprocessed image) quantized to int8 with `scale` (which puts the
 * calibrated largest magnitude at 127), rounded to nearest even and saturated, in t's layout.
 */
export function quantizedSigned(t: Tensor, scale: number): Tensor {
  return withScale(native.reorder(t, { dtype: 'int8', like: t, scale: 1 / scale }), scale);
}
