// Post-training int8 quantization of an FCN, as oneDNN's int8 convolutions want it:
//   - kernels symmetric per output channel: q = round(w / s[o]), s[o] = max|w[o]| / 127;
//   - activations after each ReLU convolution per tensor, unsigned: q = round(a / s),
//     s = (the largest value seen over the calibration images) / 255;
//   - the preprocessed image, block1_conv1's input, is signed: int8 per tensor, symmetric,
//     s = (the largest magnitude seen) / 127 (an image quantized at about its own 8 bits), so
//     the first convolution runs in int8 too, with no float32 map of 64 channels at full size;
//   - biases stay float32 (the convolution adds them before its output scale).
// The transposed convolutions (the bilinear upsamplings) and the additions of the skips run
// in float32 on the small score maps. Max calibration keeps every value in range; the score
// layers' float32 outputs carry no rounding of their own.
import { native, type Tensor } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import type { FCN } from '../models/fcn.js';
import { networkLayers } from '../models/network.js';
import { networkInput } from '../data/transforms.js';
import type { RgbImage } from '../io/image.js';
import type { Conv2d, ConvQuant } from '../nn/layers.js';

/**
 * The largest output of each ReLU convolution over the calibration images, by layer name, and
 * under IMAGE_INPUT the largest magnitude of the preprocessed images.
 */
export type ActivationMaxima = Map<string, number>;
export const IMAGE_INPUT = '(image)';

/** Runs the float32 model over preprocessed inputs, recording the input's and each ReLU convolution's largest value. */
export function calibrate(model: FCN, inputs: Iterable<Tensor>, onImage?: (index: number) => void): ActivationMaxima {
  const maxima: ActivationMaxima = new Map();
  const record = (name: string, t: Tensor) => maxima.set(name, Math.max(maxima.get(name) ?? 0, native.absMax(t)));
  const conv = (layer: Conv2d, y: Tensor) => {
    if (layer.relu) record(layer.name, y);
  };
  let i = 0;
  for (const x of inputs) {
    record(IMAGE_INPUT, x);
    model.predictLogits(x, 'float32', { conv }).dispose();
    onImage?.(i);
    i++;
  }
  if (i === 0) throw new Error('calibration needs at least one image');
  return maxima;
}

/** calibrate() over decoded pictures, each preprocessed as inference does and freed after its pass. */
export function calibrateOnImages(model: FCN, pictures: readonly RgbImage[], onImage?: (index: number) => void): ActivationMaxima {
  function* inputs(): Generator<Tensor> {
    for (const rgb of pictures) {
      const x = native.fromArray([1, 3, rgb.height, rgb.width], networkInput(rgb, model.means));
      try {
        yield x;
      } finally {
        x.dispose();
      }
    }
  }
  return calibrate(model, inputs(), onImage);
}

/** A kernel (plain float32 O,I,KH,KW) as int8 with one scale per output channel. */
export function quantizeKernel(w: Tensor): { kernel: Tensor; scales: Float32Array } {
  const [O] = w.dims as [number];
  const data = w.toArray() as Float32Array;
  const per = data.length / O;
  const q = new Int8Array(data.length);
  const scales = new Float32Array(O);
  for (let o = 0; o < O; o++) {
    let m = 0;
    for (let i = o * per; i < (o + 1) * per; i++) m = Math.max(m, Math.abs(data[i]!));
    // An all-zero channel (e.g. Keras-FCN's zero-initialised skip scores) quantizes to zeros.
    const s = m > 0 ? m / 127 : 1;
    scales[o] = s;
    for (let i = o * per; i < (o + 1) * per; i++) q[i] = Math.max(-127, Math.min(127, Math.round(data[i]! / s)));
  }
  return { kernel: native.fromArray([...w.dims], q), scales };
}

/** The scale of an unsigned activation whose largest value is `max` (or, `signed`, of a signed one whose largest magnitude is `max`). */
export function activationScale(max: number, signed = false): number {
  // A layer that never fired over the calibration set still needs a positive scale. float32,
  // as the file stores it: a model quantized in memory runs exactly as its file.
  return Math.fround(Math.max(max, 1e-6) / (signed ? 127 : 255));
}

/** Gives every convolution of `model` its int8 form from calibrated maxima (replacing any). */
export function quantizeModel(model: FCN, maxima: ActivationMaxima): void {
  const forms: [Conv2d, ConvQuant][] = [];
  try {
    // Each convolution reads the output of a ReLU convolution (through pooling), or for
    // block1_conv1 the image; the upsamplings stay float32.
    for (const l of networkLayers(model.network).filter((c) => !c.transposed)) {
      const layer = model.layer(l.name), input = l.reads === null ? null : model.layer(l.reads);
      const outMax = maxima.get(layer.name);
      if (layer.relu && outMax === undefined) throw new Error(`calibration saw no output of ${layer.name}`);
      const outputScale = layer.relu ? activationScale(outMax!) : null;
      const inMax = maxima.get(input?.name ?? IMAGE_INPUT);
      if (inMax === undefined) throw new Error(`calibration saw no ${input ? `output of ${input.name}` : 'input image'}`);
      const { kernel, scales } = quantizeKernel(layer.kernel.value);
      const signedInput = input === null;
      forms.push([layer, { kernel, kernelScales: scales, inputScale: activationScale(inMax, signedInput), outputScale, ...(signedInput ? { signedInput } : {}) }]);
    }
  } catch (e) {
    disposeAll(...forms.map(([, q]) => q.kernel));
    throw e;
  }
  for (const [layer, q] of forms) layer.setQuant(q);
}
