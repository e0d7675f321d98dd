// Model weights as safetensors files in Keras layouts (weights-layout.ts), so that a Keras
// `.h5` maps one to one. Loading goes through the one WeightSource interface, so Keras `.h5`
// and Caffe `.caffemodel` files load wherever safetensors do, and a file made by `quantize`
// gets its int8 form (int8-weights.ts).
import { native, type Tensor } from '../engine/binding.js';
import { writeSafetensors, type SafetensorsFile } from '../io/safetensors.js';
import { FCN, FCN_KINDS, FCN_STYLES, type FcnKind, type FcnOptions, type FcnStyle } from './fcn.js';
import { readWeightSource, sourceFromSafetensors } from '../io/weight-source.js';
import type { WeightEntry, WeightSource } from '../io/weight-types.js';
import { resolveWeights } from '../io/weights-cache.js';
import type { Param } from '../nn/param.js';
import { parseColor } from '../data/classes.js';
import { QUANT_SUFFIXES, attachQuantization } from './int8-weights.js';
import { fromKerasLayout, kerasShape, weightsMetadata, weightsToKeras } from './weights-layout.js';

/** Prefix of the optimiser-state tensors a training checkpoint adds to the weights. */
export const OPTIMIZER_PREFIX = 'optimizer.';

/** Writes the model's weights atomically. */
export function saveWeights(path: string, model: FCN, metadata: Record<string, string> = {}): void {
  writeSafetensors(path, weightsToKeras(model), { ...weightsMetadata(model), ...metadata });
}

export interface LoadOptions {
  /** Required when the file does not record its model (e.g. converted from elsewhere). */
  kind?: FcnKind;
  width?: number;
  dropout?: number;
  /** Accept NaN/Inf weights (for debugging a diverged run); refused by default. */
  allowNonFinite?: boolean;
}

/**
 * The source's entry for each of the model's parameters, every shape checked before any value
 * is read (a differing one fails, naming both shapes); a missing one fails when `required`.
 */
function staged(model: FCN, source: WeightSource, required: boolean): [Param, WeightEntry][] {
  const out: [Param, WeightEntry][] = [];
  for (const p of model.params()) {
    const t = source.tensors.get(p.name);
    const want = kerasShape(p);
    if (!t && required) throw new Error(`${source.path}: tensor '${p.name}' is missing (expected shape [${want.join(', ')}] for ${model.kind} width ${model.width})`);
    if (!t) continue;
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new Error(`${source.path}: tensor '${p.name}' has shape [${t.shape.join(', ')}], the model expects [${want.join(', ')}]`);
    out.push([p, t]);
  }
  return out;
}

/** Reads one tensor of a source as the engine's tensor for p, refusing non-finite values unless allowed. */
function readChecked(source: WeightSource, p: Param, entry: WeightEntry, allowNonFinite: boolean): Tensor {
  const data = entry.read();
  const t = fromKerasLayout(p, data);
  // A sum of squares (accumulated natively in double) is finite exactly when every value is.
  if (!allowNonFinite && !Number.isFinite(native.sumSquares(t))) {
    t.dispose();
    const i = data.findIndex((v) => !Number.isFinite(v));
    throw new Error(`${source.path}: tensor '${p.name}' has a non-finite value (${data[i]}) at element ${i}: the weights are corrupt or come from a diverged run`);
  }
  return t;
}

/**
 * Loads every parameter of `model` from a weight source. Every name and shape is checked
 * before any value is read (see staged); extra tensors are an error too (they mean the file is
 * for another model). A failure while reading values (non-finite weights, a damaged file)
 * leaves the model partly loaded: callers dispose it.
 */
export function loadSourceInto(model: FCN, source: WeightSource, options: { allowNonFinite?: boolean } = {}): void {
  const entries = staged(model, source, true);
  const expected = new Set(entries.map(([p]) => p.name));
  // Training checkpoints carry the optimiser's state beside the weights, under `optimizer.`.
  // An int8 model's scales travel beside its kernels (int8-weights.ts).
  const extra = [...source.tensors.keys()].find((n) => !expected.has(n) && !n.startsWith(OPTIMIZER_PREFIX) && !QUANT_SUFFIXES.some((x) => n.endsWith(x)));
  if (extra !== undefined) throw new Error(`${source.path}: tensor '${extra}' is not a parameter of ${model.kind} (is the file for another model?)`);
  for (const [p, t] of entries) p.assign(readChecked(source, p, t, options.allowNonFinite ?? false));
}

/** As loadSourceInto, from a safetensors file already read. */
export function loadWeightsInto(model: FCN, file: SafetensorsFile, source: string): void {
  loadSourceInto(model, sourceFromSafetensors(file, source));
}

/**
 * Copies the tensors of `source` that `model` has (same name; the shape must match) and
 * returns their layer names: for starting from a backbone (VGG16) or another model's weights.
 */
export function loadMatchingSource(model: FCN, source: WeightSource, options: { allowNonFinite?: boolean } = {}): Set<string> {
  const loaded = new Set<string>();
  for (const [p, t] of staged(model, source, false)) {
    p.assign(readChecked(source, p, t, options.allowNonFinite ?? false));
    loaded.add(p.name.slice(0, p.name.lastIndexOf('.')));
  }
  return loaded;
}

/**
 * Opens any weight file the project reads — safetensors, Keras `.h5`, Caffe `.caffemodel` —
 * by path, or a known pretrained name (`fcn8s`, `vgg16`…) from the weights cache.
 */
export async function openWeights(pathOrName: string): Promise<WeightSource> {
  return readWeightSource(resolveWeights(pathOrName));
}

/** Builds the model a weights file describes (model, style, width, classes) and loads it. */
export async function loadModel(pathOrName: string, options: LoadOptions = {}): Promise<FCN> {
  const source = await openWeights(pathOrName);
  try {
    return modelFromSource(source, options);
  } finally {
    source.close?.();
  }
}

/** As loadModel, from a safetensors file already read (training checkpoints). */
export function modelFromFile(file: SafetensorsFile, path: string, options: LoadOptions = {}): FCN {
  return modelFromSource(sourceFromSafetensors(file, path), options);
}

/** The network a source's metadata implies, as FCN options (without loading anything). */
export function modelOptionsFromSource(source: WeightSource, options: LoadOptions = {}): FcnOptions {
  const path = source.path;
  const meta = source.metadata;
  if (!meta.model && meta.backbone && !options.kind)
    throw new Error(`${path}: holds a ${meta.backbone} backbone, not an FCN: start training from it with \`fcn train --init ${path}\``);
  const kind = (options.kind ?? meta.model) as FcnKind | undefined;
  if (!kind) throw new Error(`${path}: the file does not say which model it holds: pass the model (fcn32, fcn16 or fcn8)`);
  if (!FCN_KINDS.includes(kind)) throw new Error(`${path}: unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
  if (options.kind && meta.model && options.kind !== meta.model) throw new Error(`${path}: holds a ${meta.model} model, not ${options.kind}`);
  const style = (meta.style ?? 'keras') as FcnStyle;
  if (!FCN_STYLES.includes(style)) throw new Error(`${path}: unknown network style '${style}' in its metadata (expected ${FCN_STYLES.join(', ')})`);
  const width = options.width ?? (meta.width !== undefined ? Number(meta.width) : inferWidth(source));
  if (!(width > 0 && width <= 1)) throw new Error(`${path}: width ${meta.width} in its metadata is not in (0, 1]`);
  const numClasses = meta.classes !== undefined ? Number(meta.classes) : undefined;
  if (numClasses !== undefined && !(Number.isInteger(numClasses) && numClasses >= 1)) throw new Error(`${path}: classes '${meta.classes}' in its metadata is not a positive integer`);
  let skipScales: [number, number] | null = null;
  if (meta.skip_scales) {
    const v = meta.skip_scales.split(',').map(Number);
    if (v.length !== 2 || !v.every((x) => Number.isFinite(x) && x > 0)) throw new Error(`${path}: skip_scales '${meta.skip_scales}' in its metadata is not two positive numbers`);
    skipScales = [v[0], v[1]];
  }
  const classNames = metadataList(meta, 'class_names', path);
  if (classNames && !classNames.every((n) => typeof n === 'string')) throw new Error(`${path}: class_names in its metadata is not a list of names`);
  const classColors = metadataList(meta, 'class_colors', path)?.map((c, k) => parseColor(c, `${path}: class_colors[${k}]`));
  return { kind, style, width, numClasses, skipScales, classNames: classNames as string[] | undefined, classColors, dropout: options.dropout };
}

/** A metadata entry holding a JSON array (class_names, class_colors), or undefined when absent. */
function metadataList(meta: Record<string, string>, key: string, path: string): unknown[] | undefined {
  if (!meta[key]) return undefined;
  let list: unknown = null;
  try {
    list = JSON.parse(meta[key]);
  } catch {
    /* said below */
  }
  if (!Array.isArray(list)) throw new Error(`${path}: ${key} in its metadata is not a JSON array`);
  return list;
}

/** Builds and loads the model a weight source describes. */
export function modelFromSource(source: WeightSource, options: LoadOptions = {}): FCN {
  // Every parameter is replaced by the file's: filling them first would only cost memory.
  const model = new FCN({ ...modelOptionsFromSource(source, options), uninitialized: true });
  try {
    loadSourceInto(model, source, options);
    if (source.metadata.quantization !== undefined) attachQuantization(model, source);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/** The width multiplier implied by block1_conv1's output channels (64 at full width). */
function inferWidth(source: WeightSource): number {
  const k = source.tensors.get('block1_conv1.kernel');
  return k ? k.shape[3] / 64 : 1;
}
