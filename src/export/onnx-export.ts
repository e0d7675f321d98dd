// ONNX export of an FCN: one self-contained file that ONNX Runtime (or any ONNX engine) runs
// on plain pixels.
//
// Input  `image`  float32 [batch, 3, height, width], RGB, values 0–255, any height and width.
// Output `logits` float32 [batch, classes, height, width], class scores before softmax, at the
//                 input's own size.
// Output `labels` int64   [batch, height, width], the arg-max class of every pixel (the first
//                 class on ties); left out with `labels: false`.
//
// The preprocessing is inside the graph — RGB → BGR (a Gather over the channels) minus the
// model's BGR means — so users feed pixels, not network input. The rest is the walk every
// pass takes over the network's description (models/network.ts): Keras style pads the
// preprocessed image at the bottom and right with zeros (the mean colour) to a multiple of 32,
// with the amount computed from Shape at run time, and slices the logits back to height ×
// width; Caffe style pads nothing, pools with ceil_mode, and crops each skip's scores and the
// final scores at the description's offsets to the size of a reference tensor read with Shape.
// Dropout is the identity at inference and is left out.
//
// An int8 model (made by `fcn quantize`) is written in the QDQ form that ONNX Runtime runs
// with its own int8 kernels: each quantized convolution's input passes QuantizeLinear →
// DequantizeLinear at its calibrated scale (uint8, zero point 0; int8 for block1_conv1's
// signed input, the preprocessed image), its kernel is an int8 initializer with
// per-output-channel scales behind a DequantizeLinear, its bias int32 at scale input × kernel,
// and its ReLU output passes a Q/DQ pair at its output scale. The layers the engine keeps in
// float32 (the upsamplings, the skip sums; block1_conv1's kernel in older int8 files) stay
// float32 here too.
//
// Weights are initializers whose raw_data holds little-endian float32. The file is produced
// as a sequence of chunks: the protobuf messages around the weights are encoded with the
// schema in io/onnx.ts, and each weight's bytes are converted from the engine only when its
// chunk is reached, so writing a 500 MB model holds one tensor at a time, not the whole file.
import { native } from '../engine/binding.js';
import type { FCN } from '../models/fcn.js';
import { walkNetwork, type NetworkOps } from '../models/network.js';
import type { Conv2d, ConvQuant } from '../nn/layers.js';
import type { Tensor } from '../engine/binding.js';
import { meansBgr } from '../data/transforms.js';
import { VOC_CLASS_NAMES } from '../data/classes.js';
import { writeFileAtomic } from '../io/atomic.js';
import { assertLittleEndianHost } from '../io/read-file.js';
import { packageVersion } from '../io/package-version.js';
import {
  GraphProto, ModelProto, OnnxAttributeType, OnnxDataType, OnnxField, TensorProto, encodeMessage, lengthDelimited, valueInfo,
  type OnnxAttribute, type OnnxNode, type OnnxTensorHeader, type OnnxValueInfo,
} from '../io/onnx.js';

export const ONNX_INPUT = 'image';
export const ONNX_LOGITS = 'logits';
export const ONNX_LABELS = 'labels';
export const DEFAULT_OPSET = 13;
/** Opset 13 has every operator the graph uses in its current form. */
export const MIN_OPSET = 13;
/**
 * The newest opset whose IR version is settled here (ONNX 1.18: opset 23, IR 11);
 * onnxruntime-node 1.30 runs up to 26. The graph is the same in all of them.
 */
export const MAX_OPSET = 23;

export interface OnnxExportOptions {
  /** ONNX operator set version, MIN_OPSET…MAX_OPSET (default 13). */
  opset?: number;
  /** Add the `labels` output (arg-max over classes); default true. */
  labels?: boolean;
  /** Class names for the metadata; default: the model's own, else VOC's for 21 classes. */
  classNames?: readonly string[];
  /** Extra metadata_props entries (e.g. the source weight file). */
  metadata?: Record<string, string>;
  /** An int8 model as QDQ (default: when the model is quantized); false writes its float32 form. */
  int8?: boolean;
  /**
   * int8: activations in 7 bits (0–127), for int8 kernels that saturate full-range uint8 ×
   * int8 sums (x86 without VNNI). Default false.
   */
  reduceRange?: boolean;
}

// The ONNX IR version of the ONNX release that introduced each opset.
function irVersionFor(opset: number): number {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}


/** A graph initializer: small constants carry their values in the header; weights are read lazily. */
interface Initializer {
  header: OnnxTensorHeader;
  /** Bytes of raw_data, converted when the chunk is written. */
  raw?: { byteLength: number; read: () => Uint8Array };
}

const attrInts = (name: string, ints: number[]): OnnxAttribute => ({ name, type: OnnxAttributeType.INTS, ints });
const attrInt = (name: string, i: number): OnnxAttribute => ({ name, type: OnnxAttributeType.INT, i });

class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: Initializer[] = [];
  private readonly names = new Set<string>();

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`ONNX export: the value name '${name}' is used twice`);
    this.names.add(name);
    return name;
  }

  /** Adds a node with one output named `output` and returns that name. */
  op(opType: string, inputs: string[], output: string, attribute: OnnxAttribute[] = []): string {
    this.nodes.push({ opType, input: inputs, output: [this.claim(output)], name: output, attribute });
    return output;
  }

  int64(name: string, values: number[], dims: number[] = [values.length]): string {
    this.initializers.push({ header: { name: this.claim(name), dims, dataType: OnnxDataType.INT64, int64Data: values } });
    return name;
  }

  float(name: string, values: number[], dims: number[] = [values.length]): string {
    this.initializers.push({ header: { name: this.claim(name), dims, dataType: OnnxDataType.FLOAT, floatData: values } });
    return name;
  }

  /** An initializer of any fixed-width type, its little-endian bytes read when written. */
  raw(name: string, dims: number[], dataType: number, read: () => Uint8Array, byteLength: number): string {
    this.initializers.push({ header: { name: this.claim(name), dims, dataType }, raw: { byteLength, read } });
    return name;
  }

  /** A float32 initializer; the host is little-endian (see onnxChunks), so its bytes are a view. */
  weight(name: string, dims: number[], read: () => Float32Array): string {
    const byteLength = 4 * dims.reduce((a, b) => a * b, 1);
    return this.raw(name, dims, OnnxDataType.FLOAT, () => {
      const values = read();
      if (values.byteLength !== byteLength) throw new Error(`ONNX export: ${name} has ${values.length} values, its shape [${dims.join(', ')}] needs ${byteLength / 4}`);
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    }, byteLength);
  }
}

/** Kernel and bias initializers of a layer in ONNX layouts. */
function layerWeights(g: GraphBuilder, layer: Conv2d): string[] {
  const k = layer.kernel;
  // The engine keeps every kernel as (out, in, kh, kw): that is ONNX Conv's W. ONNX
  // ConvTranspose's W is (in, out, kh, kw), one swap of the first two axes.
  const dims = layer.transposed ? [k.dims[1]!, k.dims[0]!, k.dims[2]!, k.dims[3]!] : [...k.dims];
  const kernel = g.weight(k.name, dims, () => {
    if (!layer.transposed) return k.value.toArray() as Float32Array;
    const swapped = native.permute(k.value, [1, 0, 2, 3]);
    try {
      return swapped.toArray() as Float32Array;
    } finally {
      swapped.dispose();
    }
  });
  const inputs = [kernel];
  const b = layer.bias;
  if (b) inputs.push(g.weight(b.name, [...b.dims], () => b.value.toArray() as Float32Array));
  return inputs;
}

/** int8 export: how stored activation scales become the file's (see OnnxExportOptions.reduceRange); null: float32 export. */
type ActivationScale = ((stored: number) => number) | null;

/** x through QuantizeLinear → DequantizeLinear at `scale` (uint8, or `signed` int8; zero point 0), named `name`. */
function qdq(g: GraphBuilder, x: string, scale: number, name: string, signed = false): string {
  const s = g.float(`${name}_qscale`, [scale], []);
  const zero = g.raw(`${name}_qzero`, [], signed ? OnnxDataType.INT8 : OnnxDataType.UINT8, () => new Uint8Array(1), 1);
  return g.op('DequantizeLinear', [g.op('QuantizeLinear', [x, s, zero], `${name}_quantized`), s, zero], name);
}

/** A quantized layer's int8 kernel and int32 bias, each behind a per-channel DequantizeLinear. */
function int8LayerWeights(g: GraphBuilder, layer: Conv2d, q: ConvQuant & { kernel: Tensor; kernelScales: Float32Array }, inputScale: number): string[] {
  const k = layer.kernel, out = k.dims[0]!, count = k.dims.reduce((a, b) => a * b, 1);
  const axis = [attrInt('axis', 0)];
  const scales = g.float(`${k.name}_scale`, [...q.kernelScales], [out]);
  const kernel = g.raw(`${k.name}_int8`, [...k.dims], OnnxDataType.INT8, () => {
    const v = q.kernel.toArray() as Int8Array;
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }, count);
  const zeros = g.raw(`${k.name}_zero`, [out], OnnxDataType.INT8, () => new Uint8Array(out), out);
  const inputs = [g.op('DequantizeLinear', [kernel, scales, zeros], `${k.name}_dequantized`, axis)];
  const b = layer.bias;
  if (b) {
    // As ONNX Runtime's quantizer writes it: int32 at scale input × kernel, so that the bias
    // joins the integer sum.
    const biasScales = Array.from(q.kernelScales, (s) => s * inputScale);
    const values = Int32Array.from(b.value.toArray() as Float32Array, (v, o) => Math.round(v / biasScales[o]!));
    const bias = g.raw(`${b.name}_int32`, [out], OnnxDataType.INT32, () => new Uint8Array(values.buffer), 4 * out);
    inputs.push(g.op('DequantizeLinear', [bias, g.float(`${b.name}_scale`, biasScales, [out])], `${b.name}_dequantized`, axis));
  }
  return inputs;
}

/** A convolution (its input first times `factor`, when given), float32 or QDQ int8. */
function conv(g: GraphBuilder, layer: Conv2d, x: string, factor: number | undefined, int8: ActivationScale): string {
  const q = int8 ? layer.quant : null;
  const quantized = q?.kernel && q.kernelScales ? { ...q, kernel: q.kernel, kernelScales: q.kernelScales } : null;
  // A signed input (the image) has 127 levels in every mode; uint8 activations as the export's.
  const signed = quantized?.signedInput ?? false;
  const inputScale = quantized ? (signed ? quantized.inputScale : int8!(quantized.inputScale)) : 0;
  // The engine quantizes the input before the factor (it folds the factor into the output scales).
  let input = quantized ? qdq(g, x, inputScale, `${layer.name}_input`, signed) : x;
  if (factor !== undefined) input = g.op('Mul', [input, g.float(`${x}_scale`, [factor], [])], `${x}_scaled`);
  const [, , kh, kw] = layer.kernel.dims;
  const p = layer.padding, s = layer.stride;
  const attrs = [attrInts('kernel_shape', [kh!, kw!]), attrInts('strides', [s, s]), attrInts('pads', [p, p, p, p])];
  const weights = quantized ? int8LayerWeights(g, layer, quantized, inputScale) : layerWeights(g, layer);
  const outputQdq = q && q.outputScale !== null;
  const y = g.op(layer.transposed ? 'ConvTranspose' : 'Conv', [input, ...weights], layer.relu || outputQdq ? `${layer.name}_linear` : layer.name, attrs);
  if (!layer.relu) return y;
  const relu = g.op('Relu', [y], outputQdq ? `${layer.name}_relu` : layer.name);
  return outputQdq ? qdq(g, relu, int8!(q.outputScale!), layer.name) : relu;
}

/** The network's steps as ONNX nodes, on value names (a walk over models/network.ts). */
function graphOps(g: GraphBuilder, model: FCN, int8: ActivationScale): NetworkOps<string> {
  // Spatial size of a value, int64 [2] = (height, width), for pads and crops; made once per value.
  const sizes = new Map<string, string>();
  const sizeOf = (x: string) => sizes.get(x) ?? sizes.set(x, g.op('Gather', [g.op('Shape', [x], `${x}_shape`), 'hw_axes'], `${x}_hw`, [attrInt('axis', 0)])).get(x)!;
  return {
    pad: (x, multiple) => {
      // Zeros at the bottom and right up to a multiple: pad = (m − size mod m) mod m.
      const m = g.int64('pad_multiple', [multiple], []);
      const rest = g.op('Mod', [sizeOf(x), m], `${x}_hw_mod`);
      const pad = g.op('Mod', [g.op('Sub', [m, rest], 'pad_hw_or_multiple'), m], 'pad_hw');
      const pads = g.op('Concat', [g.int64('pads_begin', [0, 0, 0, 0, 0, 0]), pad], 'pads', [attrInt('axis', 0)]); // N, C, H, W begins; N, C ends; H, W ends
      return g.op('Pad', [x, pads], 'padded', [{ name: 'mode', type: OnnxAttributeType.STRING, s: Buffer.from('constant') }]);
    },
    conv: (l, x, factor) => conv(g, model.layer(l.name), x, factor, int8),
    pool: (p, x) => g.op('MaxPool', [x], p.name, [attrInts('kernel_shape', [p.kernel, p.kernel]), attrInts('strides', [p.kernel, p.kernel]), attrInt('ceil_mode', p.ceil ? 1 : 0)]),
    dropout: (_name, x) => x, // the identity at inference
    crop: (x, offset, like, name) => {
      if (offset === null) return x;
      const starts = g.int64(`${name}_starts`, [offset, offset]);
      const ends = offset === 0 ? sizeOf(like) : g.op('Add', [sizeOf(like), starts], `${name}_ends`);
      return g.op('Slice', [x, starts, ends, 'hw_axes'], name);
    },
    add: (a, b, name) => g.op('Add', [a, b], name),
    free: () => {},
  };
}

/** The model as an ONNX graph (initializers not yet converted). */
function buildGraph(model: FCN, withLabels: boolean, int8: ActivationScale): { graph: GraphBuilder; inputs: OnnxValueInfo[]; outputs: OnnxValueInfo[] } {
  const g = new GraphBuilder();
  g.int64('hw_axes', [2, 3]);
  // Preprocessing: RGB → BGR, minus the BGR means (no scaling), as the engine's toNetworkInput.
  const bgr = g.op('Gather', [ONNX_INPUT, g.int64('bgr_channels', [2, 1, 0])], 'image_bgr', [attrInt('axis', 1)]);
  const x = g.op('Sub', [bgr, g.float('means_bgr', meansBgr(model.means), [1, 3, 1, 1])], 'preprocessed');
  const logits = walkNetwork(model.network, x, graphOps(g, model, int8));
  if (logits !== ONNX_LOGITS) throw new Error(`ONNX export: the network's output is '${logits}', not '${ONNX_LOGITS}'`);
  if (withLabels) g.op('ArgMax', [ONNX_LOGITS], ONNX_LABELS, [attrInt('axis', 1), attrInt('keepdims', 0)]);

  const inputs = [valueInfo(ONNX_INPUT, OnnxDataType.FLOAT, ['batch', 3, 'height', 'width'], 'RGB pixels, 0-255, NCHW; preprocessing is in the graph')];
  const outputs = [valueInfo(ONNX_LOGITS, OnnxDataType.FLOAT, ['batch', model.numClasses, 'height', 'width'], 'class scores before softmax')];
  if (withLabels) outputs.push(valueInfo(ONNX_LABELS, OnnxDataType.INT64, ['batch', 'height', 'width'], 'arg-max class per pixel'));
  return { graph: g, inputs, outputs };
}

function metadataOf(model: FCN, options: OnnxExportOptions): Record<string, string> {
  const classNames = options.classNames ?? model.classNames ?? (model.numClasses === VOC_CLASS_NAMES.length ? VOC_CLASS_NAMES : undefined);
  if (classNames && classNames.length !== model.numClasses) throw new Error(`ONNX export: ${classNames.length} class names for a model of ${model.numClasses} classes`);
  const meta: Record<string, string> = {
    model: model.kind,
    style: model.style,
    width: String(model.width),
    classes: String(model.numClasses),
    means: JSON.stringify(meansBgr(model.means)),
    means_order: 'BGR',
    input: `${ONNX_INPUT}: float32 [batch, 3, height, width], RGB 0-255`,
    outputs: `${ONNX_LOGITS}: float32 [batch, classes, height, width]${options.labels === false ? '' : `; ${ONNX_LABELS}: int64 [batch, height, width]`}`,
  };
  if (classNames) meta.class_names = JSON.stringify(classNames);
  if (model.skipScales) meta.skip_scales = model.skipScales.join(',');
  return { ...meta, ...options.metadata };
}

/**
 * The ONNX file as chunks, in order. Weights are read from the model while iterating: keep
 * the model alive (not disposed, not training) until the iteration ends.
 */
export function onnxChunks(model: FCN, options: OnnxExportOptions = {}): Iterable<Uint8Array> {
  // ONNX's raw_data is little-endian; the weights are written as the engine holds them.
  assertLittleEndianHost('ONNX export');
  const opset = options.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET) throw new Error(`ONNX export: opset must be an integer from ${MIN_OPSET} to ${MAX_OPSET}, got ${opset}`);
  const int8 = options.int8 ?? model.quantized;
  if (int8 && !model.quantized) throw new Error(`ONNX export: int8 needs an int8 model (made by fcn quantize); this ${model.kind} is float32`);
  // Files store scales for 255 levels; in 7 bits the same maximum sits at level 127.
  const levels = options.reduceRange ? 127 : 255;
  const { graph, inputs, outputs } = buildGraph(model, options.labels ?? true, int8 ? (stored) => (stored * 255) / levels : null);
  const metadata = metadataOf(model, options);

  const head = encodeMessage(ModelProto, {
    irVersion: irVersionFor(opset),
    producerName: 'fcn',
    producerVersion: packageVersion(),
    docString: `${model.kind} (${metadata.style} style, width ${model.width}, ${model.numClasses} classes). Input ${metadata.input}; outputs ${metadata.outputs}.`,
    opsetImport: [{ domain: '', version: opset }],
    metadataProps: Object.entries({ ...metadata, ...(int8 ? { precision: 'int8', activation_levels: String(levels) } : {}) }).map(([key, value]) => ({ key, value })),
  });
  // The graph without its initializers; they are appended to the graph message below (a
  // protobuf message may carry the items of a repeated field anywhere in its bytes).
  const body = encodeMessage(GraphProto, { name: model.kind, node: graph.nodes, input: inputs, output: outputs });
  const initializers = graph.initializers.map((init) => {
    const header = encodeMessage(TensorProto, init.header);
    const rawKey = init.raw ? lengthDelimited(OnnxField.tensorRawData, init.raw.byteLength) : new Uint8Array(0);
    const length = header.length + rawKey.length + (init.raw?.byteLength ?? 0);
    return { header, rawKey, length, raw: init.raw, key: lengthDelimited(OnnxField.graphInitializer, length) };
  });
  const graphLength = body.length + initializers.reduce((sum, i) => sum + i.key.length + i.length, 0);

  return (function* () {
    yield head;
    yield lengthDelimited(OnnxField.modelGraph, graphLength);
    yield body;
    for (const i of initializers) {
      yield Buffer.concat([i.key, i.header, i.rawKey]);
      if (i.raw) yield i.raw.read();
    }
  })();
}

/** The ONNX file in memory (for small models and tests; use writeOnnx for large ones). */
export function exportOnnx(model: FCN, options: OnnxExportOptions = {}): Uint8Array {
  return Buffer.concat([...onnxChunks(model, options)]);
}

/** Writes the ONNX file atomically, converting one weight at a time. */
export function writeOnnx(file: string, model: FCN, options: OnnxExportOptions = {}): void {
  writeFileAtomic(file, onnxChunks(model, options));
}
