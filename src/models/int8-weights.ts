// An int8 model as a file: the project's safetensors weights (weights.ts) where
// each quantized convolution's `<layer>.kernel` is I8 in the Keras layout, with beside it
//   <layer>.kernel_scale  F32 (out)  real kernel = kernel_scale[o] · q
//   <layer>.input_scale   F32 (1)    real input  = input_scale · q (uint8; int8 for the layer
//                                    that reads the image, block1_conv1)
//   <layer>.output_scale  F32 (1)    its ReLU output as uint8, real = output_scale · q
// (the score layers have no output scale: their outputs are float32; in files written before
// block1_conv1 ran in int8, it keeps a float32 kernel and has only an output scale, and such
// files still load and run it in float32), and the metadata `quantization: int8` and
// `calibration` (how the activation scales were found). Any reader of the project's weights
// loads it: float32 kernels are the dequantized ones, and `--precision int8` runs the int8 form.
import type { Tensor } from '../engine/binding.js';
import type { FCN } from './fcn.js';
import { fromKerasLayout, toKerasLayout, weightsMetadata } from './weights-layout.js';
import { networkLayers } from './network.js';
import { f32, writeSafetensors, type SafetensorsTensor } from '../io/safetensors.js';
import type { WeightSource } from '../io/weight-types.js';
import type { ConvQuant } from '../nn/layers.js';

export const QUANT_SUFFIXES = ['.kernel_scale', '.input_scale', '.output_scale'] as const;
export const QUANTIZATION = 'int8';

/** Writes an int8 model (quantized by quantizeModel) atomically. */
export function saveQuantized(path: string, model: FCN, metadata: Record<string, string> = {}): void {
  if (!model.quantized) throw new Error(`${path}: the model is not quantized (quantizeModel first)`);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const layer of model.layers()) {
    const q = layer.quant;
    // Each kernel once: the int8 one where there is one.
    for (const p of layer.params()) tensors.set(p.name, toKerasLayout(p, p === layer.kernel && q?.kernel ? q.kernel : p.value));
    if (!q) continue;
    if (q.kernel && q.kernelScales) {
      tensors.set(`${layer.name}.kernel_scale`, f32([q.kernelScales.length], q.kernelScales));
      tensors.set(`${layer.name}.input_scale`, f32([1], [q.inputScale]));
    }
    if (q.outputScale !== null) tensors.set(`${layer.name}.output_scale`, f32([1], [q.outputScale]));
  }
  writeSafetensors(path, tensors, { ...weightsMetadata(model), quantization: QUANTIZATION, ...metadata });
}

function scalar(source: WeightSource, name: string): number {
  const t = source.tensors.get(name)!;
  const v = t.read();
  if (v.length !== 1 || !(Number.isFinite(v[0]) && v[0]! > 0)) throw new Error(`${source.path}: tensor '${name}' must be one positive number`);
  return v[0]!;
}

/** Gives a model loaded from a quantized file its int8 form (called by modelFromSource). */
export function attachQuantization(model: FCN, source: WeightSource): void {
  const where = source.path;
  if (source.metadata.quantization !== QUANTIZATION) throw new Error(`${where}: quantization '${source.metadata.quantization}' is not one this project runs (expected ${QUANTIZATION})`);
  const forms: [FCN['conv6'], ConvQuant][] = [];
  const made: Tensor[] = [];
  const readsImage = new Set(networkLayers(model.network).filter((l) => l.reads === null).map((l) => l.name));
  try {
    for (const layer of model.layers()) {
      const has = (suffix: string) => source.tensors.has(`${layer.name}${suffix}`);
      if (!QUANT_SUFFIXES.some(has)) continue;
      if (layer.transposed) throw new Error(`${where}: ${layer.name} is an upsampling, which this project keeps in float32`);
      const outputScale = has('.output_scale') ? scalar(source, `${layer.name}.output_scale`) : null;
      if (layer.relu !== (outputScale !== null)) throw new Error(`${where}: ${layer.name} ${layer.relu ? 'needs' : 'cannot have'} an output scale`);
      if (!has('.kernel_scale')) {
        forms.push([layer, { kernel: null, kernelScales: null, inputScale: 1, outputScale }]);
        continue;
      }
      const entry = source.tensors.get(layer.kernel.name);
      if (!entry?.readInt8) throw new Error(`${where}: ${layer.name} has a kernel scale but its kernel is not int8`);
      if (!has('.input_scale')) throw new Error(`${where}: tensor '${layer.name}.input_scale' is missing`);
      const scales = source.tensors.get(`${layer.name}.kernel_scale`)!.read();
      if (scales.length !== layer.spec.outChannels || !scales.every((s) => Number.isFinite(s) && s > 0))
        throw new Error(`${where}: tensor '${layer.name}.kernel_scale' must hold ${layer.spec.outChannels} positive numbers`);
      const kernel = fromKerasLayout(layer.kernel, entry.readInt8());
      made.push(kernel);
      const signedInput = readsImage.has(layer.name);
      forms.push([layer, { kernel, kernelScales: Float32Array.from(scales), inputScale: scalar(source, `${layer.name}.input_scale`), outputScale, ...(signedInput ? { signedInput } : {}) }]);
    }
    if (forms.length === 0) throw new Error(`${where}: says it is quantized but holds no scales`);
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
  for (const [layer, q] of forms) layer.setQuant(q);
}
