// Caffe `.caffemodel` weights (the paper's FCN-32s/16s/8s and FCN-8s at-once releases, and
// Caffe's VGG16) presented as a WeightSource: the project's layer names and Keras layouts.
//
// A `.caffemodel` is one protobuf NetParameter: a list of layers (`layer`, field 100, in files
// since 2015; `layers`, field 2, the V1 form of older files such as VGG16's), each with its
// parameter blobs. The file is read once into a buffer; the float blobs are decoded as views
// into it (see the schema below) and converted to Keras layout only inside each entry's
// `read()`, one tensor at a time, so a 500 MB file is never held as several full copies.
//
// Layouts: Caffe Convolution blobs are (out, in, kh, kw) → Keras (kh, kw, in, out);
// Deconvolution blobs are (in, out, kh, kw) → Keras transposed (kh, kw, out, in); an
// InnerProduct fc6 (out, 512·7·7) is a 7×7 convolution whose inputs Caffe flattened as C, H, W.
import protobuf from 'protobufjs';
import { assertLittleEndianHost, readInputSync } from './read-file.js';
import type { WeightEntry, WeightSource } from './weight-types.js';
import { FCN_OUTPUTS, VGG16_BLOCKS, VGG16_CLASSIFIER, WEIGHT_LAYERS, scaledChannels, weightLayers, type WeightLayer } from './weight-layers.js';

// ---------------------------------------------------------------------------------------------
// The schema: the part of Caffe's protobuf schema this reader needs, written for this
// project with the field numbers of Caffe's own `caffe.proto` (messages NetParameter,
// LayerParameter, V1LayerParameter, BlobProto, BlobShape). Fields left out are skipped by the
// decoder.
//
// BlobProto's `data` and `double_data` are `repeated float|double [packed = true]` in Caffe.
// A packed repeated field is one length-delimited record, the same wire type as `bytes`, so
// declaring them `bytes` here makes the decoder hand back views into the file's buffer instead
// of JavaScript arrays of numbers: a 500 MB file is then held once, not several times.
// Caffe's releases store float values; `double_data` is declared only to refuse it clearly.
const CAFFE_SUBSET_PROTO = `
syntax = "proto2";
package caffe;

message BlobShape {
  repeated int64 dim = 1 [packed = true];
}

message BlobProto {
  optional BlobShape shape = 7;
  optional bytes data = 5;         // Caffe: repeated float, packed
  optional bytes double_data = 8;  // Caffe: repeated double, packed
  // The old 4-D shape, used when shape is absent.
  optional int32 num = 1;
  optional int32 channels = 2;
  optional int32 height = 3;
  optional int32 width = 4;
}

// The current layer message (NetParameter.layer).
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated BlobProto blobs = 7;
}

// The deprecated layer message (NetParameter.layers), as in Caffe's VGG16 release.
message V1LayerParameter {
  optional string name = 4;
  optional int32 type = 5;  // Caffe: enum LayerType; an int keeps values this subset does not name
  repeated BlobProto blobs = 6;
}

message NetParameter {
  optional string name = 1;
  repeated V1LayerParameter layers = 2;
  repeated LayerParameter layer = 100;
}
`;

/** V1LayerParameter.LayerType values of the layers that carry weights in VGG16 and FCN files. */
const V1_LAYER_TYPES: ReadonlyMap<number, string> = new Map([
  [4, 'Convolution'],
  [14, 'InnerProduct'],
  [39, 'Deconvolution'],
]);

/** NetParameter field numbers of the two layer lists (the reader walks the top level itself). */
const NET_FIELD_NAME = 1;
const NET_FIELD_V1_LAYERS = 2;
const NET_FIELD_LAYER = 100;

interface BlobMessage {
  shape?: { dim?: (number | { toNumber(): number })[] } | null;
  data?: Uint8Array;
  double_data?: Uint8Array;
  num?: number;
  channels?: number;
  height?: number;
  width?: number;
}

interface LayerMessage {
  name?: string;
  type?: string;
  blobs?: BlobMessage[];
}

interface V1LayerMessage {
  name?: string;
  type?: number;
  blobs?: BlobMessage[];
}

let cached: { layer: protobuf.Type; v1Layer: protobuf.Type } | null = null;

/** The decoders of one layer record of each form, compiled once. */
function caffeLayerTypes(): { layer: protobuf.Type; v1Layer: protobuf.Type } {
  if (!cached) {
    // keepCase: field names as written above (double_data, not doubleData).
    const root = protobuf.parse(CAFFE_SUBSET_PROTO, { keepCase: true }).root;
    cached = { layer: root.lookupType('caffe.LayerParameter'), v1Layer: root.lookupType('caffe.V1LayerParameter') };
  }
  return cached;
}

type Network = 'vgg16' | keyof typeof FCN_OUTPUTS;
const NETWORK_TITLES: Record<Network, string> = { vgg16: 'VGG16', fcn32: 'FCN-32s', fcn16: 'FCN-16s', fcn8: 'FCN-8s' };
/** The layers a file may hold with weights, by their Caffe names. */
const BY_CAFFE = new Map([...WEIGHT_LAYERS.values()].map((l) => [l.caffe, l]));

/** The at-once FCN-8s scales pool4 and pool3 before scoring them (Caffe Scale layers). */
const SCALE_LAYERS = ['scale_pool4', 'scale_pool3'] as const;
/** The layer whose output channels each Scale layer multiplies. */
const SCALED_POOL_SOURCE: Record<(typeof SCALE_LAYERS)[number], string> = { scale_pool4: 'conv4_3', scale_pool3: 'conv3_3' };
/** VGG16's ImageNet classifier: no place in the project's networks. */
const IMAGENET_CLASSIFIER = 'fc8';

interface CaffeBlob {
  dims: number[];
  /** The float32 values: a view into the file's bytes. */
  values: Uint8Array;
}

interface CaffeLayer {
  /** Position in the file, from 1, for messages about unnamed layers. */
  index: number;
  name: string;
  type: string;
  blobs: CaffeBlob[];
}

export async function readCaffeModel(path: string): Promise<WeightSource> {
  // Blob values are read as typed arrays over the file's little-endian bytes.
  assertLittleEndianHost('caffemodel');
  const { layers, form } = decodeNet(readInputSync(path), path);
  return interpret(layers, form, path);
}

// ---------------------------------------------------------------------------------------------
// Decoding

// NetParameter's top-level fields and their wire types (0 varint, 2 length-delimited). Any
// other field means the bytes are not a NetParameter: protobuf has no magic number, and this
// is what tells a damaged or foreign file from a Caffe one.
const NET_FIELDS = new Map<number, number[]>([
  [1, [2]], // name
  [2, [2]], // layers (V1)
  [3, [2]], // input
  [4, [0, 2]], // input_dim
  [5, [0]], // force_backward
  [6, [2]], // state
  [7, [0]], // debug_info
  [8, [2]], // input_shape
  [100, [2]], // layer
]);

/** Walks the NetParameter's top level itself, so that a damaged layer can be named. */
function decodeNet(file: Buffer, path: string): { layers: CaffeLayer[]; form: 'V1' | 'V2' } {
  const types = caffeLayerTypes();
  const reader = protobuf.Reader.create(file);
  const layers: CaffeLayer[] = [];
  const forms = new Set<'V1' | 'V2'>();
  const after = () => (layers.length ? ` after layer '${layers[layers.length - 1].name}'` : '');
  while (reader.pos < reader.len) {
    const at = reader.pos;
    let field: number, wire: number;
    try {
      const tag = reader.uint32();
      field = tag >>> 3;
      wire = tag & 7;
    } catch {
      throw new Error(`${path}: not a Caffe NetParameter, or truncated (unreadable field tag at byte ${at}${after()})`);
    }
    if (!NET_FIELDS.get(field)?.includes(wire))
      throw new Error(`${path}: not a Caffe NetParameter, or damaged (field ${field} with wire type ${wire} at byte ${at}${after()})`);
    if (field !== NET_FIELD_LAYER && field !== NET_FIELD_V1_LAYERS) {
      try {
        if (field === NET_FIELD_NAME) reader.string();
        else reader.skipType(wire);
      } catch (e) {
        throw new Error(`${path}: not a Caffe NetParameter, or truncated (field ${field} at byte ${at}: ${(e as Error).message})`);
      }
      continue;
    }
    const index = layers.length + 1;
    const v1 = field === NET_FIELD_V1_LAYERS;
    let length: number;
    try {
      length = reader.uint32();
    } catch {
      throw new Error(`${path}: truncated in layer ${index} (its length is cut off at byte ${at}${after()})`);
    }
    const start = reader.pos;
    if (start + length > reader.len) {
      const name = peekLayerName(file.subarray(start), v1);
      const what = name !== null ? `layer '${name}'` : `layer ${index}`;
      throw new Error(`${path}: truncated in ${what}: its record needs ${length} bytes from byte ${start}, the file has ${reader.len - start}${after()}`);
    }
    let layer: CaffeLayer;
    try {
      layer = v1 ? fromV1(types.v1Layer.decode(reader, length) as unknown as V1LayerMessage, index, path) : fromV2(types.layer.decode(reader, length) as unknown as LayerMessage, index, path);
    } catch (e) {
      if ((e as Error).message.startsWith(path)) throw e;
      const name = peekLayerName(file.subarray(start, start + length), v1);
      throw new Error(`${path}: damaged record of ${name !== null ? `layer '${name}'` : `layer ${index}`} at byte ${start} (${(e as Error).message})`);
    }
    reader.pos = start + length;
    forms.add(v1 ? 'V1' : 'V2');
    layers.push(layer);
  }
  if (!layers.length) throw new Error(`${path}: not a Caffe .caffemodel: the NetParameter holds no layers`);
  if (forms.size > 1) throw new Error(`${path}: mixes the V1 'layers' and current 'layer' lists, which Caffe never writes`);
  return { layers, form: forms.has('V1') ? 'V1' : 'V2' };
}

/** The name field of a (possibly cut-off) layer record, or null when it cannot be read. */
function peekLayerName(record: Uint8Array, v1: boolean): string | null {
  const nameField = v1 ? 4 : 1;
  const r = protobuf.Reader.create(record);
  try {
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === nameField && (tag & 7) === 2) return r.string();
      r.skipType(tag & 7);
    }
  } catch {
    // Cut off before the name.
  }
  return null;
}

function fromV2(m: LayerMessage, index: number, path: string): CaffeLayer {
  const name = m.name ?? `#${index}`;
  return { index, name, type: m.type ?? '(no type)', blobs: (m.blobs ?? []).map((b, i) => blobOf(b, name, i, path)) };
}

function fromV1(m: V1LayerMessage, index: number, path: string): CaffeLayer {
  const name = m.name ?? `#${index}`;
  const type = m.type === undefined ? '(no type)' : (V1_LAYER_TYPES.get(m.type) ?? `V1 type ${m.type}`);
  return { index, name, type, blobs: (m.blobs ?? []).map((b, i) => blobOf(b, name, i, path)) };
}

function dimNumber(d: number | { toNumber(): number }): number {
  return typeof d === 'number' ? d : d.toNumber();
}

function blobOf(m: BlobMessage, layer: string, i: number, path: string): CaffeBlob {
  const where = `${path}: layer '${layer}' blob ${i}`;
  // Files since 2015 carry `shape`; older ones the 4-D num, channels, height, width.
  const dims = m.shape ? (m.shape.dim ?? []).map(dimNumber) : [m.num ?? 0, m.channels ?? 0, m.height ?? 0, m.width ?? 0];
  if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new Error(`${where}: invalid shape [${dims.join(', ')}]`);
  const count = dims.reduce((a, b) => a * b, 1);
  if (m.double_data?.length) throw new Error(`${where}: holds double values (double_data); Caffe's FCN and VGG16 releases hold float values`);
  const values = m.data ?? new Uint8Array(0);
  if (values.length % 4 !== 0) throw new Error(`${where}: ${values.length} bytes of values is not a whole number of floats`);
  const held = values.length / 4;
  if (held !== count) {
    // Caffe writes packed values; unpacked ones would have been skipped as another wire type.
    const hint = held === 0 ? ' (none: no packed float values)' : '';
    throw new Error(`${where}: holds ${held} values${hint}, its shape [${dims.join(', ')}] needs ${count}`);
  }
  return { dims, values };
}

// ---------------------------------------------------------------------------------------------
// Interpretation: which network, checks, tensors

/** Caffe's layers with weights, by name, checked against what a VGG16/FCN file may hold. */
function interpret(all: CaffeLayer[], form: 'V1' | 'V2', path: string): WeightSource {
  const notes: string[] = [];
  const byName = new Map<string, CaffeLayer>();
  const scales = new Map<string, CaffeLayer>();
  let classifier: CaffeLayer | null = null;
  if (!all.some((l) => l.blobs.length))
    throw new Error(`${path}: no layer holds weights (files in Caffe's V0 form, from before 2014, nest them: convert the file with Caffe's upgrade_net_proto_binary first)`);
  for (const layer of all) {
    if (!layer.blobs.length) continue; // ReLU, Pooling, Crop, Dropout, Eltwise, data, loss…
    if (byName.has(layer.name) || scales.has(layer.name) || (classifier && classifier.name === layer.name))
      throw new Error(`${path}: two layers named '${layer.name}' hold weights`);
    if (BY_CAFFE.has(layer.name)) byName.set(layer.name, layer);
    else if ((SCALE_LAYERS as readonly string[]).includes(layer.name)) scales.set(layer.name, layer);
    else if (layer.name === IMAGENET_CLASSIFIER) classifier = layer;
    else throw new Error(`${path}: layer '${layer.name}' (${layer.type}) holds weights but is not a layer of Caffe's VGG16 or FCN networks`);
  }

  const network = whichNetwork(byName, path);
  const wanted = weightLayers(network).map((l) => l.caffe);
  for (const name of wanted) if (!byName.has(name)) throw new Error(`${path}: has no layer '${name}' with weights, which ${NETWORK_TITLES[network]} needs`);
  for (const name of byName.keys())
    if (!wanted.includes(name)) throw new Error(`${path}: layer '${name}' does not belong in ${NETWORK_TITLES[network]} (the file's final upsampling makes it one)`);
  if (classifier) {
    if (network !== 'vgg16') throw new Error(`${path}: layer '${classifier.name}' (VGG16's ImageNet classifier) holds weights in ${NETWORK_TITLES[network]}`);
    notes.push(`${path}: left out '${classifier.name}', VGG16's ImageNet classifier (${(squeezeTo(classifier.blobs[0].dims, 2) ?? classifier.blobs[0].dims).join('×')} weights): the FCNs score classes with their own layers`);
  }

  // Shapes, input to output: each layer's inputs are its source layer's outputs.
  const outChannels = new Map<string, number>();
  const tensors = new Map<string, WeightEntry>();
  let classes = 0;
  for (const name of wanted) {
    const layer = byName.get(name)!;
    const role = BY_CAFFE.get(name)!;
    const source = role.reads === null || role.reads === 'classes' ? role.reads : WEIGHT_LAYERS.get(role.reads)!.caffe;
    const inC = source === null ? 3 : source === 'classes' ? classes : outChannels.get(source)!;
    const entries = role.transposed ? deconvEntries(layer, role, inC, path) : convEntries(layer, role, inC, source, path, notes);
    outChannels.set(name, entries.outC);
    if (name === 'score_fr') classes = entries.outC;
    for (const [k, e] of entries.tensors) tensors.set(k, e);
  }

  const width = widthOf(outChannels, path);
  const metadata: Record<string, string> = { style: 'caffe', width: String(width) };
  if (network === 'vgg16') metadata.backbone = 'vgg16';
  else {
    metadata.model = network;
    metadata.classes = String(classes);
  }
  if (scales.size) {
    if (network !== 'fcn8' || scales.size !== SCALE_LAYERS.length)
      throw new Error(`${path}: Scale layers ${[...scales.keys()].map((s) => `'${s}'`).join(', ')} in ${NETWORK_TITLES[network]}: only the at-once FCN-8s scales its skips, with both ${SCALE_LAYERS.join(' and ')}`);
    metadata.skip_scales = SCALE_LAYERS.map((s) => formatFloat32(constantScale(scales.get(s)!, outChannels.get(SCALED_POOL_SOURCE[s])!, path))).join(',');
    notes.push(`${path}: at-once FCN-8s: pool4 and pool3 are scaled by ${metadata.skip_scales} (read from ${SCALE_LAYERS.join(', ')})`);
  }
  if (form === 'V1') notes.push(`${path}: read Caffe's deprecated V1 layer list (the form of files written before 2015)`);
  return { path, format: 'caffemodel', metadata, tensors, notes };
}

/** The network a file holds, from its final upsampling layer (none: a VGG16 backbone). */
function whichNetwork(byName: Map<string, CaffeLayer>, path: string): Network {
  const outputs = Object.entries(FCN_OUTPUTS).map(([network, o]) => [network as Network, o.upsample.caffe] as const);
  const finals = outputs.filter(([, caffe]) => byName.has(caffe));
  if (finals.length > 1) throw new Error(`${path}: has more than one final upsampling layer (${finals.map(([, caffe]) => caffe).join(', ')})`);
  if (finals.length === 0) {
    const names = outputs.map(([, caffe]) => caffe);
    if (byName.has('score_fr')) throw new Error(`${path}: layer 'score_fr' is there but no final upsampling layer (${names.slice(0, -1).join(', ')} or ${names.at(-1)})`);
    return 'vgg16';
  }
  return finals[0]![0];
}

/** The blob's dims without the leading 1s that Caffe's old 4-D shapes add, down to `rank`. */
function squeezeTo(dims: number[], rank: number): number[] | null {
  const d = [...dims];
  while (d.length > rank && d[0] === 1) d.shift();
  return d.length === rank ? d : null;
}

function shapeText(dims: readonly number[]): string {
  return `[${dims.join(', ')}]`;
}

function convEntries(
  layer: CaffeLayer,
  role: WeightLayer,
  inC: number,
  source: string | null,
  path: string,
  notes: string[],
): { outC: number; tensors: [string, WeightEntry][] } {
  const what = `${path}: layer '${layer.name}' (${layer.type})`;
  const k = role.kernel;
  const fromLayer = source === null ? 'the image' : `'${source}'`;
  if (layer.type !== 'Convolution' && !(layer.type === 'InnerProduct' && (layer.name === 'fc6' || layer.name === 'fc7')))
    throw new Error(`${what}: expected a Convolution${layer.name === 'fc6' || layer.name === 'fc7' ? ' or InnerProduct' : ''}`);
  if (layer.blobs.length !== 2) throw new Error(`${what}: has ${layer.blobs.length} blob${layer.blobs.length === 1 ? '' : 's'}, expected 2 (weights and bias)`);
  const [weights, bias] = layer.blobs;
  // As (out, in, kh, kw), the layout of a Caffe convolution.
  let caffeDims: number[];
  if (layer.type === 'InnerProduct') {
    const d = squeezeTo(weights.dims, 2);
    const flat = inC * k * k;
    if (!d || d[1] !== flat)
      throw new Error(`${what}: weights have shape ${shapeText(weights.dims)}, expected [outputs, ${flat}] (the ${inC} channels of ${fromLayer} × ${k} × ${k})`);
    caffeDims = [d[0], inC, k, k];
    notes.push(`${path}: InnerProduct '${layer.name}' (${d[0]}×${flat}) read as the ${k}×${k} convolution '${role.name}'`);
  } else {
    if (weights.dims.length !== 4 || weights.dims[1] !== inC || weights.dims[2] !== k || weights.dims[3] !== k)
      throw new Error(`${what}: weights have shape ${shapeText(weights.dims)}, expected [outputs, ${inC}, ${k}, ${k}] (inputs: the ${inC} channels of ${fromLayer})`);
    caffeDims = weights.dims;
  }
  const outC = caffeDims[0];
  if (outC < 1) throw new Error(`${what}: weights have shape ${shapeText(weights.dims)}, with no outputs`);
  const b = squeezeTo(bias.dims, 1);
  if (!b || b[0] !== outC) throw new Error(`${what}: bias has shape ${shapeText(bias.dims)}, expected [${outC}]`);
  const kernelShape = [k, k, inC, outC];
  return {
    outC,
    tensors: [
      [`${role.name}.kernel`, { shape: kernelShape, read: () => finite(toKerasKernel(weights.values, caffeDims), what, `${role.name}.kernel`) }],
      [`${role.name}.bias`, { shape: [outC], read: () => finite(copyValues(bias.values), what, `${role.name}.bias`) }],
    ],
  };
}

function deconvEntries(layer: CaffeLayer, role: WeightLayer, classes: number, path: string): { outC: number; tensors: [string, WeightEntry][] } {
  const what = `${path}: layer '${layer.name}' (${layer.type})`;
  const k = role.kernel;
  if (layer.type !== 'Deconvolution') throw new Error(`${what}: expected a Deconvolution`);
  if (layer.blobs.length === 2) throw new Error(`${what}: has a bias; the FCN upsampling layers have none (bias_term: false)`);
  if (layer.blobs.length !== 1) throw new Error(`${what}: has ${layer.blobs.length} blobs, expected 1 (weights)`);
  const [weights] = layer.blobs;
  // Caffe's Deconvolution blob is (in, out, kh, kw); here in = out = the classes.
  const d = weights.dims;
  if (d.length !== 4 || d[0] !== classes || d[1] !== classes || d[2] !== k || d[3] !== k)
    throw new Error(`${what}: weights have shape ${shapeText(d)}, expected [${classes}, ${classes}, ${k}, ${k}] (the ${classes} classes of 'score_fr', kernel ${k})`);
  return {
    outC: classes,
    tensors: [[`${role.name}.kernel`, { shape: [k, k, classes, classes], read: () => finite(toKerasKernel(weights.values, d), what, `${role.name}.kernel`) }]],
  };
}

/** The width multiplier: conv1_1's outputs over 64, checked against every layer's channels. */
function widthOf(outChannels: Map<string, number>, path: string): number {
  const expected = (w: number) => weightLayers('vgg16').map((l): [string, number] => [l.caffe, scaledChannels(l.outputs as number, w)]);
  // conv1_1's 64 channels give the width coarsely; fc6's 4096 finely (e.g. 0.1 → 6/64 vs 410/4096).
  const candidates = [VGG16_BLOCKS[0]![0]!, VGG16_CLASSIFIER[0]!].map((l) => outChannels.get(l.caffe)! / (l.outputs as number));
  for (const w of candidates) if (w <= 1 && expected(w).every(([n, c]) => outChannels.get(n) === c)) return w;
  const w = candidates[0]!;
  const [name, c] = expected(w).find(([n, c]) => outChannels.get(n) !== c) ?? ['conv1_1', 64];
  throw new Error(`${path}: layer '${name}' has ${outChannels.get(name)} outputs; VGG16 at width ${w} (from conv1_1's ${outChannels.get('conv1_1')}) has ${c}`);
}

/** The one value of an at-once Scale layer's blob (one per channel, all equal). */
function constantScale(layer: CaffeLayer, channels: number, path: string): number {
  const what = `${path}: layer '${layer.name}' (${layer.type})`;
  if (layer.type !== 'Scale') throw new Error(`${what}: expected a Scale layer`);
  if (layer.blobs.length !== 1) throw new Error(`${what}: has ${layer.blobs.length} blobs, expected 1 (the scale; no bias)`);
  const blob = layer.blobs[0];
  const d = squeezeTo(blob.dims, 1);
  if (!d || d[0] !== channels) throw new Error(`${what}: scale has shape ${shapeText(blob.dims)}, expected [${channels}] (one per channel of '${SCALED_POOL_SOURCE[layer.name as (typeof SCALE_LAYERS)[number]]}')`);
  const v = copyValues(blob.values);
  const first = v[0];
  if (!Number.isFinite(first)) throw new Error(`${what}: scale is ${first}`);
  const other = v.findIndex((x) => x !== first);
  if (other >= 0) throw new Error(`${what}: scale is not constant (channel 0: ${first}, channel ${other}: ${v[other]}); the project scales each skip by one number`);
  return first;
}

/** The shortest decimal that reads back as the same float32 (0.01, not 0.009999999776). */
function formatFloat32(v: number): string {
  for (let p = 1; p <= 9; p++) {
    const s = Number(v.toPrecision(p));
    if (Math.fround(s) === v) return String(s);
  }
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// Values

/**
 * `count` values from `start` as a Float32Array: a view into the file's buffer when it is
 * aligned for floats, else a copy of just that range (into `scratch` when it is given and
 * large enough, so that a caller taking a blob piece by piece reuses one buffer).
 */
function valuesAt(v: Uint8Array, start: number, count: number, scratch?: Uint8Array): Float32Array {
  const offset = v.byteOffset + start * 4;
  if (offset % 4 === 0) return new Float32Array(v.buffer, offset, count);
  const copy = scratch && scratch.byteOffset === 0 && scratch.length >= count * 4 ? scratch : new Uint8Array(count * 4);
  copy.set(v.subarray(start * 4, (start + count) * 4));
  return new Float32Array(copy.buffer, 0, count);
}

/** A copy: a view would keep the whole file's buffer alive. */
function copyValues(v: Uint8Array): Float32Array {
  return valuesAt(v, 0, v.length / 4).slice();
}

/**
 * A Caffe (A, B, kh, kw) blob as Keras (kh, kw, B, A). Convolutions: (out, in, …) →
 * (kh, kw, in, out); deconvolutions: (in, out, …) → (kh, kw, out, in).
 *
 * A transpose of the (A, B·kh·kw) matrix with the columns reordered, in tiles: a tile of
 * source rows is first packed into a small buffer, then each of its columns is written as
 * one contiguous run of the output. Going straight from source to output reads or writes
 * with a stride of A or B·kh·kw floats, often a multiple of 4 KB (4096 outputs: 16 KB) that
 * maps every access to one cache set: 4.7 s for VGG16's conv6 instead of about 0.5 s.
 * The blob is taken ROWS A-slices at a time, so a misaligned blob is copied in pieces.
 */
function toKerasKernel(v: Uint8Array, [a, b, kh, kw]: number[]): Float32Array {
  const out = new Float32Array(a * b * kh * kw);
  const taps = kh * kw;
  const slab = b * taps; // one source row: the weights of one A
  const ROWS = 64, COLS = 64;
  const tile = new Float32Array(ROWS * COLS);
  // Every piece starts on a whole value, so a blob is aligned or misaligned throughout.
  const misaligned = v.byteOffset % 4 !== 0;
  const scratch = misaligned ? new Uint8Array(Math.min(ROWS, a) * slab * 4) : undefined;
  const dest = new Int32Array(COLS); // output offset of each column of the tile (row 0)
  if (out.length > 2 ** 31 - 1) throw new Error(`a blob of ${out.length} values is beyond this reader's limit of 2^31`);
  for (let a0 = 0; a0 < a; a0 += ROWS) {
    const na = Math.min(ROWS, a - a0);
    const src = valuesAt(v, a0 * slab, na * slab, scratch);
    for (let p0 = 0; p0 < slab; p0 += COLS) {
      const np = Math.min(COLS, slab - p0);
      for (let j = 0; j < na; j++) {
        const from = j * slab + p0, to = j * COLS;
        for (let t = 0; t < np; t++) tile[to + t] = src[from + t];
      }
      // Source column p = bi·taps + r (r = y·kw + x) goes to output row (r·B + bi), at A's a0.
      for (let t = 0; t < np; t++) {
        const p = p0 + t;
        const bi = Math.floor(p / taps);
        dest[t] = ((p - bi * taps) * b + bi) * a + a0;
      }
      for (let t = 0; t < np; t++) {
        const base = dest[t];
        for (let j = 0; j < na; j++) out[base + j] = tile[j * COLS + t];
      }
    }
  }
  return out;
}

/** The array itself, or an error naming the layer when it holds NaN or an infinity. */
function finite(values: Float32Array, what: string, tensor: string): Float32Array {
  // x·0 is ±0 for a finite x and NaN otherwise: one quick pass, then a count only if needed.
  let probe = 0;
  for (let i = 0; i < values.length; i++) probe += values[i] * 0;
  if (probe === 0) return values;
  let bad = 0;
  let example = 0;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      if (bad === 0) example = values[i];
      bad++;
    }
  }
  if (bad) throw new Error(`${what}: ${tensor} holds ${bad} non-finite value${bad === 1 ? '' : 's'} (e.g. ${example})`);
  return values;
}
