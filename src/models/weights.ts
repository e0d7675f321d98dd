// Model weights as safetensors files in Keras layouts, so that a Keras `.h5` maps one to
// one: `<layer>.kernel` is (kh, kw, in, out) for convolutions and (kh, kw, out, in) for
// transposed convolutions, `<layer>.bias` is (out), all float32. The metadata records the
// model and width so that a file alone rebuilds its network.
import { native, type Tensor } from '../engine/binding.js';
import { readSafetensors, writeSafetensors, type SafetensorsFile, type SafetensorsTensor } from '../io/safetensors.js';
import { FCN, FCN_KINDS, type FcnKind } from './fcn.js';
import type { Param } from '../nn/param.js';

export const WEIGHTS_FORMAT = 'fcn-keras-layout';
/** Prefix of the optimiser-state tensors a training checkpoint adds to the weights. */
export const OPTIMIZER_PREFIX = 'optimizer.';

/** Axis order of the Keras array, as indices into the engine's O,I,KH,KW. */
function kerasAxes(p: Param): number[] {
  if (p.role === 'bias') return [0];
  return p.transposed ? [2, 3, 0, 1] : [2, 3, 1, 0];
}

function inversePerm(perm: number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((a, k) => (inv[a] = k));
  return inv;
}

export function kerasShape(p: Param): number[] {
  return kerasAxes(p).map((a) => p.dims[a]);
}

/** A parameter's value (or another array of its shape, e.g. its gradient) in Keras layout. */
export function toKerasLayout(p: Param, t: Tensor = p.value): SafetensorsTensor {
  const k = native.permute(t, kerasAxes(p));
  try {
    return { dtype: 'F32', shape: kerasShape(p), data: k.toArray() as Float32Array };
  } finally {
    k.dispose();
  }
}

/** A Keras-layout array as the engine's tensor for parameter p (O,I,KH,KW or (out)). */
function fromKerasLayout(p: Param, data: Float32Array): Tensor {
  const k = native.fromArray(kerasShape(p), data);
  try {
    return native.permute(k, inversePerm(kerasAxes(p)));
  } finally {
    k.dispose();
  }
}

/** The model's parameters as Keras-layout float32 arrays, by checkpoint name. */
export function weightsToKeras(model: FCN): Map<string, SafetensorsTensor> {
  return new Map(model.params().map((p) => [p.name, toKerasLayout(p)]));
}

export function weightsMetadata(model: FCN): Record<string, string> {
  return { format: WEIGHTS_FORMAT, model: model.kind, width: String(model.width), classes: String(model.numClasses) };
}

/** Writes the model's weights atomically. */
export function saveWeights(path: string, model: FCN, metadata: Record<string, string> = {}): void {
  writeSafetensors(path, weightsToKeras(model), { ...weightsMetadata(model), ...metadata });
}

/**
 * Loads every parameter of `model` from a Keras-layout file. Fails on the first tensor whose
 * name is missing or whose shape differs, naming it and both shapes; extra tensors are an
 * error too (they mean the file is for another model).
 */
export function loadWeightsInto(model: FCN, file: SafetensorsFile, source: string): void {
  const expected = new Set<string>();
  const staged: [Param, SafetensorsTensor][] = [];
  for (const p of model.params()) {
    expected.add(p.name);
    const t = file.tensors.get(p.name);
    const want = kerasShape(p);
    if (!t) throw new Error(`${source}: tensor '${p.name}' is missing (expected shape [${want.join(', ')}] for ${model.kind} width ${model.width})`);
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new Error(`${source}: tensor '${p.name}' has shape [${t.shape.join(', ')}], the model expects [${want.join(', ')}]`);
    if (t.dtype !== 'F32') throw new Error(`${source}: tensor '${p.name}' is ${t.dtype}, expected F32`);
    staged.push([p, t]);
  }
  // Training checkpoints carry the optimiser's state beside the weights, under `optimizer.`.
  const extra = [...file.tensors.keys()].find((n) => !expected.has(n) && !n.startsWith(OPTIMIZER_PREFIX));
  if (extra !== undefined) throw new Error(`${source}: tensor '${extra}' is not a parameter of ${model.kind} (is the file for another model?)`);
  for (const [p, t] of staged) p.assign(fromKerasLayout(p, t.data as Float32Array));
}

export interface LoadOptions {
  /** Required when the file does not record its model (e.g. converted from elsewhere). */
  kind?: FcnKind;
  width?: number;
  dropout?: number;
}

/**
 * Copies the tensors of `file` that `model` has (same name; the shape must match) and
 * returns their layer names: for starting from a backbone or another model's weights.
 */
export function loadMatchingWeights(model: FCN, file: SafetensorsFile, source: string): Set<string> {
  const loaded = new Set<string>();
  for (const p of model.params()) {
    const t = file.tensors.get(p.name);
    if (!t) continue;
    const want = kerasShape(p);
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new Error(`${source}: tensor '${p.name}' has shape [${t.shape.join(', ')}], the model expects [${want.join(', ')}]`);
    if (t.dtype !== 'F32') throw new Error(`${source}: tensor '${p.name}' is ${t.dtype}, expected F32`);
    p.assign(fromKerasLayout(p, t.data as Float32Array));
    loaded.add(p.name.slice(0, p.name.lastIndexOf('.')));
  }
  return loaded;
}

/** Builds the model a weights file describes and loads it. */
export function loadModel(path: string, options: LoadOptions = {}): FCN {
  return modelFromFile(readSafetensors(path), path, options);
}

/** As loadModel, from a file already read. */
export function modelFromFile(file: SafetensorsFile, path: string, options: LoadOptions = {}): FCN {
  const meta = file.metadata;
  const kind = (options.kind ?? meta.model) as FcnKind | undefined;
  if (!kind) throw new Error(`${path}: the file does not say which model it holds: pass the model (fcn32, fcn16 or fcn8)`);
  if (!FCN_KINDS.includes(kind)) throw new Error(`${path}: unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
  if (options.kind && meta.model && options.kind !== meta.model) throw new Error(`${path}: holds a ${meta.model} model, not ${options.kind}`);
  const width = options.width ?? (meta.width !== undefined ? Number(meta.width) : inferWidth(file));
  const numClasses = meta.classes !== undefined ? Number(meta.classes) : undefined;
  const model = new FCN({ kind, width, numClasses, dropout: options.dropout });
  try {
    loadWeightsInto(model, file, path);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/** The width multiplier implied by block1_conv1's output channels (64 at full width). */
function inferWidth(file: SafetensorsFile): number {
  const k = file.tensors.get('block1_conv1.kernel');
  return k ? k.shape[3] / 64 : 1;
}
