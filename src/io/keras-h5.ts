// Keras `.h5` weight files as a WeightSource: Keras-FCN's FCN models (`model.save_weights()` or
// `model.save()`) and Keras's VGG16 ImageNet files (with or without the classifier).
//
// Layout Keras writes: a root attribute `layer_names` (byte strings, every layer, weightless
// ones too), one group per layer with attribute `weight_names` (kernel then bias), and each
// weight as a dataset at `<layer>/<weight name>`. The dataset names depend on the Keras version
// (`<layer>/kernel:0`, `<layer>_W_1:0`, `param_0`…), so only their order is relied on.
// `model.save()` puts all of it under a `model_weights` group. Attributes too large for one HDF5
// attribute are split by Keras into `<name>0`, `<name>1`…
//
// Keras-FCN's layer names are already the project's and its kernels already Keras layouts. In a
// VGG16 file `fc1` (7·7·C, F) becomes `conv6` (7, 7, C, F) — Keras's Flatten flattens (7, 7, C)
// row-major, so the reshape moves no data — `fc2` (F, F) becomes `conv7` (1, 1, F, F), and the
// ImageNet `predictions` layer is left out.
//
// HDF5 is read by h5wasm (the HDF5 C library in WebAssembly) straight from the host file system.
// Opening reads only attributes and dataset headers; each dataset is read when its entry's
// `read()` is called, in slices of at most 16 MB, so the WebAssembly heap (which never
// shrinks) stays small and a 528 MB VGG16 file is held once, as the float32 arrays handed out.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import h5wasm, { type Dataset, type File as H5File, type Group } from 'h5wasm/node';
import type { WeightEntry, WeightSource } from './weight-types.js';
import { fcnErrorClass } from '../errors.js';
import { FCN_OUTPUTS, WEIGHT_LAYERS, weightLayers } from './weight-layers.js';

/** Largest slice of a dataset read through the WebAssembly heap at once, by default. */
const READ_CHUNK_BYTES = 16 << 20;

// h5wasm's Metadata.type: HDF5's H5T_class_t.
const H5T_FLOAT = 1;

type LayerKind =
  /** Conv2D: kernel (k, k, in, out) and bias (out). */
  | { kind: 'conv'; kernel: number }
  /** Conv2DTranspose without bias: kernel (k, k, out, in). */
  | { kind: 'transposed'; kernel: number }
  /** VGG16's Dense fc1/fc2, stored as the convolution `target` of size k×k. */
  | { kind: 'dense'; target: string; kernel: number }
  /** VGG16's ImageNet classifier: no FCN layer takes it. */
  | { kind: 'dropped' };

const LAYERS = new Map<string, LayerKind>([
  ...[...WEIGHT_LAYERS.values()].map((l): [string, LayerKind] => [l.name, { kind: l.transposed ? 'transposed' : 'conv', kernel: l.kernel }]),
  // Keras's VGG16 names its classifier fc1, fc2 (Dense) and predictions.
  ['fc1', { kind: 'dense', target: 'conv6', kernel: 7 }],
  ['fc2', { kind: 'dense', target: 'conv7', kernel: 1 }],
  ['predictions', { kind: 'dropped' }],
]);

/** Layers only an FCN has (a VGG16 file with these is not one file but two mixed). */
const FCN_HEADS = [...WEIGHT_LAYERS.keys()].filter((name) => !weightLayers('vgg16').some((l) => l.name === name));
const FINAL_UPSAMPLING = Object.values(FCN_OUTPUTS).map((o) => o.upsample.name);

/** A problem with the file's content, already worded for the user (not an HDF5 library error). */
const KerasFileError = fcnErrorClass('BAD_KERAS_FILE');

/** The innermost reason of an HDF5 error stack as h5wasm's throwing handler reports it. */
function hdf5Reason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const frames = [...message.matchAll(/#\d+:.*? in [\w.]+\(\): (.+)$/gm)];
  const reason = frames.length ? frames[frames.length - 1][1] : message.split('\n')[0];
  return reason.trim();
}

/**
 * Runs h5wasm calls with HDF5's errors thrown as exceptions instead of printed to stderr
 * (h5wasm's default), turning library errors into `<path>: <what> (<reason>)`; our own
 * KerasFileErrors pass through. The handler is process-wide, so it is restored afterwards.
 */
function withHdf5Errors<T>(module: H5Module, path: string, what: string, fn: () => T): T {
  module.activate_throwing_error_handler();
  try {
    return fn();
  } catch (e) {
    if (e instanceof KerasFileError) throw e;
    throw new Error(`${path}: ${what} (${hdf5Reason(e)})`);
  } finally {
    module.deactivate_throwing_error_handler();
  }
}

type H5Module = Awaited<typeof h5wasm.ready>;

function fail(message: string): never {
  throw new KerasFileError(message);
}

/** A string-list attribute, joined from Keras's `<name>0`, `<name>1`… chunks if split; null if absent. */
function stringListAttribute(path: string, object: Group, name: string, where: string): string[] | null {
  const attrs = object.attrs;
  const parts: string[] = [];
  if (name in attrs) parts.push(name);
  else for (let i = 0; `${name}${i}` in attrs; i++) parts.push(`${name}${i}`);
  if (parts.length === 0) return null;
  const out: string[] = [];
  for (const part of parts) {
    const value = attrs[part].value;
    if (typeof value === 'string') out.push(value);
    else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) out.push(...(value as string[]));
    // Keras stores an empty list as an empty float64 array.
    else if (ArrayBuffer.isView(value) && (value as ArrayLike<number>).length === 0) continue;
    else fail(`${path}: attribute '${part}' of ${where} is not a list of strings`);
  }
  return out;
}

function stringAttribute(object: Group, name: string): string | null {
  if (!(name in object.attrs)) return null;
  const value = object.attrs[name].value;
  return typeof value === 'string' ? value : null;
}

const shapeText = (shape: number[]) => `[${shape.join(', ')}]`;

/** One tensor to produce: where it is stored and the shape it is handed out in. */
interface PlannedTensor {
  /** `<layer>.kernel` / `<layer>.bias` in the project's naming. */
  name: string;
  /** How errors name it: "layer 'fc1' (conv6) kernel". */
  label: string;
  datasetPath: string;
  storedShape: number[];
  shape: number[];
}

interface StoredWeight {
  datasetPath: string;
  shape: number[];
}

/** Checks one layer's stored weights and plans its tensors. */
function planLayer(path: string, layer: string, kind: LayerKind, weights: StoredWeight[], weightNames: string[]): PlannedTensor[] {
  const expectBias = kind.kind !== 'transposed';
  const expected = expectBias ? 2 : 1;
  if (weights.length !== expected)
    fail(
      `${path}: layer '${layer}' has ${weights.length} weight${weights.length === 1 ? '' : 's'} (${weightNames.join(', ')}), expected ${expected} ` +
        (expectBias ? '(kernel, bias)' : '(kernel only: transposed convolutions have no bias)'),
    );
  const target = kind.kind === 'dense' ? kind.target : layer;
  const label = target === layer ? `layer '${layer}'` : `layer '${layer}' (${target})`;
  const [kernel, bias] = weights;
  const ks = kernel.shape;
  let shape: number[];
  if (kind.kind === 'dense') {
    const cells = kind.kernel * kind.kernel;
    if (ks.length !== 2 || ks[0] % cells !== 0)
      fail(`${path}: ${label} kernel has shape ${shapeText(ks)}, expected [${cells === 1 ? '' : `${kind.kernel}·${kind.kernel}·`}in, out]`);
    shape = [kind.kernel, kind.kernel, ks[0] / cells, ks[1]];
  } else {
    const k = (kind as { kernel: number }).kernel;
    const axes = kind.kind === 'conv' ? 'in, out' : 'out, in';
    if (ks.length !== 4 || ks[0] !== k || ks[1] !== k) fail(`${path}: ${label} kernel has shape ${shapeText(ks)}, expected [${k}, ${k}, ${axes}]`);
    shape = ks;
  }
  if (shape.some((d) => d === 0)) fail(`${path}: ${label} kernel has shape ${shapeText(ks)}, which holds no values`);
  const planned: PlannedTensor[] = [{ name: `${target}.kernel`, label: `${label} kernel`, datasetPath: kernel.datasetPath, storedShape: ks, shape }];
  if (bias) {
    const out = shape[3];
    if (bias.shape.length !== 1 || bias.shape[0] !== out) fail(`${path}: ${label} bias has shape ${shapeText(bias.shape)}, expected [${out}] (the kernel's output channels)`);
    planned.push({ name: `${target}.bias`, label: `${label} bias`, datasetPath: bias.datasetPath, storedShape: bias.shape, shape: bias.shape });
  }
  return planned;
}

/** The stored weights of one layer group, with their types checked. */
function storedWeights(path: string, layer: string, group: Group, weightNames: string[]): StoredWeight[] {
  return weightNames.map((weightName, i) => {
    const role = i === 0 ? 'kernel' : i === 1 ? 'bias' : `weight ${i}`;
    const dataset = group.get(weightName);
    if (!(dataset instanceof h5wasm.Dataset))
      fail(`${path}: layer '${layer}' lists ${role} '${weightName}' but the file has no dataset '${group.path}/${weightName}'`);
    const meta = dataset.metadata;
    if (meta.type !== H5T_FLOAT || (meta.size !== 4 && meta.size !== 8))
      fail(`${path}: layer '${layer}' ${role} '${weightName}' is stored as ${String(dataset.dtype)}, expected float32 or float64`);
    return { datasetPath: dataset.path, shape: [...(meta.shape ?? [])] };
  });
}

/**
 * `dataset` as float32 (float64 is converted) in row-major order, read in slices along the
 * outermost axes so that no slice exceeds chunkBytes. Throws at the first non-finite value.
 */
function readFloat32(dataset: Dataset, shape: number[], fileLabel: string, chunkBytes: number): Float32Array {
  const bytes = dataset.metadata.size;
  const total = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(total);
  // innerSize[k]: elements of one index of axes 0..k-1, i.e. the product of shape[k..].
  const innerSize = shape.map((_, k) => shape.slice(k).reduce((a, b) => a * b, 1)).concat(1);
  // The outermost axis `split` whose sub-blocks fit; axes before it are taken one index at a time.
  let split = 0;
  while (split < shape.length && innerSize[split] * bytes > chunkBytes) split++;
  const copy = (values: unknown, at: number) => {
    if (!(values instanceof Float32Array || values instanceof Float64Array)) fail(`${fileLabel} did not read as floating point values`);
    out.set(values, at);
    return values.length;
  };
  if (split === 0) {
    copy(dataset.value, 0);
  } else {
    const axis = split - 1;
    const rowsPerSlice = Math.max(1, Math.floor(chunkBytes / (innerSize[split] * bytes)));
    const outerCount = total / innerSize[axis];
    let at = 0;
    for (let outer = 0; outer < outerCount; outer++) {
      // The multi-index of `outer` over axes 0..axis-1, each as a one-element range.
      const fixed: [number, number][] = [];
      let rest = outer;
      for (let a = axis - 1; a >= 0; a--) {
        const i = rest % shape[a];
        rest = (rest - i) / shape[a];
        fixed.unshift([i, i + 1]);
      }
      for (let row = 0; row < shape[axis]; row += rowsPerSlice) at += copy(dataset.slice([...fixed, [row, Math.min(row + rowsPerSlice, shape[axis])]]), at);
    }
    if (at !== total) fail(`${fileLabel} read ${at} values, expected ${total}`);
  }
  for (let i = 0; i < out.length; i++) {
    const v = out[i];
    // v - v is NaN exactly for NaN and ±Infinity (also float64 values beyond float32's range).
    if (v - v !== 0) fail(`${fileLabel} has non-finite values (element ${i} is ${v})`);
  }
  return out;
}

/** The open HDF5 file behind a source: reopened if read after closing, closed once all is read. */
class FileHandle {
  private file: H5File | null;
  private readonly unread: Set<string>;

  constructor(
    private readonly module: H5Module,
    private readonly path: string,
    private readonly absolutePath: string,
    file: H5File,
    names: Iterable<string>,
    private readonly chunkBytes: number,
  ) {
    this.file = file;
    this.unread = new Set(names);
    if (this.unread.size === 0) this.close();
  }

  read(t: PlannedTensor): Float32Array {
    const data = withHdf5Errors(this.module, this.path, `${t.label} could not be read`, () => {
      this.file ??= openFile(this.path, this.absolutePath);
      const dataset = this.file.get(t.datasetPath);
      if (!(dataset instanceof h5wasm.Dataset)) fail(`${this.path}: ${t.label}: dataset '${t.datasetPath}' has gone`);
      return readFloat32(dataset, t.storedShape, `${this.path}: ${t.label}`, this.chunkBytes);
    });
    this.unread.delete(t.name);
    if (this.unread.size === 0) this.close();
    return data;
  }

  close(): void {
    if (!this.file) return;
    const file = this.file;
    this.file = null;
    withHdf5Errors(this.module, this.path, 'could not be closed', () => file.close());
  }
}

// A source dropped before all of its tensors were read still has its file open.
const closeWhenCollected = new FinalizationRegistry<FileHandle>((handle) => {
  try {
    handle.close();
  } catch {
    // Nothing to report to: the source is gone.
  }
});

function openFile(path: string, absolutePath: string): H5File {
  const file = new h5wasm.File(absolutePath, 'r');
  // With the throwing handler active a failed open throws; this guards the handler being off.
  if (file.file_id < 0n) fail(`${path}: not a readable HDF5 file`);
  return file;
}

/**
 * Opens a Keras `.h5` weight file; tensors are read when asked for (see the top of this file),
 * at most `chunkBytes` at a time (tests make it tiny to read in many slices).
 */
export async function readKerasH5(path: string, chunkBytes = READ_CHUNK_BYTES): Promise<WeightSource> {
  if (!(chunkBytes >= 1)) throw new Error(`readKerasH5: chunkBytes must be at least 1, got ${chunkBytes}`);
  const absolutePath = resolve(path);
  try {
    if (!statSync(absolutePath).isFile()) throw new Error(`${path}: not a file`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw code ? new Error(`${path}: cannot read file (${code})`) : e;
  }
  const module = await h5wasm.ready;
  const file = withHdf5Errors(module, path, 'not a readable HDF5 file', () => openFile(path, absolutePath));
  let planned: Map<string, PlannedTensor>;
  let metadata: Record<string, string>;
  const notes: string[] = [];
  try {
    ({ planned, metadata } = withHdf5Errors(module, path, 'cannot read the HDF5 file', () => inspect(path, file, notes)));
  } catch (e) {
    try {
      file.close();
    } catch {
      // The error being thrown says more than a failed close would.
    }
    throw e;
  }
  const handle = new FileHandle(module, path, absolutePath, file, planned.keys(), chunkBytes);
  const tensors = new Map<string, WeightEntry>();
  for (const [name, t] of planned) tensors.set(name, { shape: t.shape, read: () => handle.read(t) });
  const source: WeightSource = { path, format: 'keras-h5', metadata, tensors, notes, close: () => handle.close() };
  closeWhenCollected.register(source, handle);
  return source;
}

/** Reads the file's structure and checks it; no weight values are read. */
function inspect(path: string, file: H5File, notes: string[]): { planned: Map<string, PlannedTensor>; metadata: Record<string, string> } {
  // model.save() files keep the weights under `model_weights`; save_weights() files at the root.
  let root: Group = file;
  let layerNames = stringListAttribute(path, file, 'layer_names', 'the root group');
  if (layerNames === null) {
    const nested = file.get('model_weights');
    if (nested instanceof h5wasm.Group) {
      root = nested;
      layerNames = stringListAttribute(path, nested, 'layer_names', "group 'model_weights'");
    }
  }
  if (layerNames === null) fail(`${path}: no 'layer_names' attribute (at the root or in 'model_weights'): not a Keras weight file`);

  const planned = new Map<string, PlannedTensor>();
  const sourceLayer = new Map<string, string>(); // project layer → the file's layer that gave it
  const present = new Set<string>(); // the file's layers with weights
  const kernelShapes = new Map<string, number[]>(); // project layer → its kernel's shape
  for (const layer of layerNames) {
    const group = root.get(layer);
    if (!(group instanceof h5wasm.Group)) fail(`${path}: layer '${layer}' is listed in 'layer_names' but has no group`);
    const weightNames = stringListAttribute(path, group, 'weight_names', `layer '${layer}'`);
    if (weightNames === null) fail(`${path}: layer '${layer}' has no 'weight_names' attribute`);
    if (weightNames.length === 0) continue; // input, pooling, dropout, flatten, add, softmax…
    const kind = LAYERS.get(layer);
    if (!kind) fail(`${path}: layer '${layer}' is not a layer of FCN-32s/16s/8s or VGG16 (is the file for another network?)`);
    if (present.has(layer)) fail(`${path}: layer '${layer}' is listed twice in 'layer_names'`);
    present.add(layer);
    const weights = storedWeights(path, layer, group, weightNames);
    if (kind.kind === 'dropped') {
      const ks = weights[0]?.shape ?? [];
      notes.push(`'${layer}' (VGG16's ImageNet classifier${ks.length === 2 ? `, ${ks[0]} → ${ks[1]}` : ''}) left out: an FCN has no such layer`);
      continue;
    }
    for (const t of planLayer(path, layer, kind, weights, weightNames)) {
      const target = t.name.slice(0, t.name.lastIndexOf('.'));
      const earlier = sourceLayer.get(target);
      if (earlier !== undefined && earlier !== layer) fail(`${path}: layers '${earlier}' and '${layer}' both give ${target}`);
      sourceLayer.set(target, layer);
      planned.set(t.name, t);
      if (t.name.endsWith('.kernel')) kernelShapes.set(target, t.shape);
    }
  }
  if (present.size === 0) fail(`${path}: no layer has weights`);

  const metadata: Record<string, string> = { format_source: 'keras-h5', style: 'keras' };
  const firstConv = kernelShapes.get('block1_conv1');
  if (firstConv) metadata.width = String(firstConv[3] / 64);
  for (const [attribute, key] of [['keras_version', 'keras_version'], ['backend', 'keras_backend']]) {
    const value = stringAttribute(root, attribute) ?? stringAttribute(file, attribute);
    if (value !== null) metadata[key] = value;
  }

  const hasClassifier = ['fc1', 'fc2', 'predictions'].filter((l) => present.has(l));
  const heads = FCN_HEADS.filter((l) => present.has(l));
  if (hasClassifier.length && heads.length)
    fail(`${path}: holds both VGG16's classifier (${hasClassifier.join(', ')}) and FCN layers (${heads.join(', ')}): not one network`);
  if (heads.length) {
    const finals = FINAL_UPSAMPLING.filter((l) => present.has(l));
    if (finals.length > 1) fail(`${path}: holds the final layers of several models (${finals.join(', ')})`);
    if (finals.length === 1) metadata.model = finals[0]!;
    else notes.push('no final upsampling layer (fcn32, fcn16 or fcn8): the file does not say which model it holds');
    const score7 = kernelShapes.get('score7');
    if (score7) metadata.classes = String(score7[3]);
  } else {
    metadata.backbone = 'vgg16';
    const fc1 = planned.get('conv6.kernel');
    if (present.has('fc1') && fc1) notes.push(`fc1 ${shapeText(fc1.storedShape)} reshaped to conv6 ${shapeText(fc1.shape)}`);
    const fc2 = planned.get('conv7.kernel');
    if (present.has('fc2') && fc2) notes.push(`fc2 ${shapeText(fc2.storedShape)} reshaped to conv7 ${shapeText(fc2.shape)}`);
    const missing = ['conv6', 'conv7'].filter((l) => !kernelShapes.has(l));
    if (missing.length === 2) notes.push('no fc1/fc2 layers (VGG16 without its classifier): conv6 and conv7 keep their initialisation');
    else if (missing.length === 1) notes.push(`no ${missing[0] === 'conv6' ? 'fc1' : 'fc2'} layer: ${missing[0]} keeps its initialisation`);
  }
  return { planned, metadata };
}
