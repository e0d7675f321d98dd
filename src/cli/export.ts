// `fcn export onnx`: a weight file as a self-contained ONNX model for other runtimes.
import { statSync } from 'node:fs';
import { readClassSet } from '../data/classes.js';
import { loadModel } from '../models/weights.js';
import { checkInputFile, checkWeightsArgument, prepareOutputFile } from './paths.js';
import { DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ONNX_INPUT, ONNX_LABELS, ONNX_LOGITS, writeOnnx } from '../export/onnx-export.js';
import { UsageError, parse, parseNumber, requireString } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { REQUIRED, engineOptionSpecs, type CommandSpec } from './help.js';

export const exportSpec = {
  name: 'export',
  summary: 'a model as an ONNX file that runs on plain RGB pixels',
  usage: ['onnx --weights FILE --out FILE [--opset N] [--logits-only] [--classes FILE] [--float32] [--reduce-range]'],
  details: `Writes the model as one ONNX file, weights inside, that ONNX Runtime and other ONNX engines run
on plain pixels: the preprocessing (RGB → BGR, minus the model's BGR means) is in the graph.
  input   ${ONNX_INPUT}    float32 [batch, 3, height, width]        RGB, 0-255, any height and width
  output  ${ONNX_LOGITS}   float32 [batch, classes, height, width]  class scores before softmax
  output  ${ONNX_LABELS}   int64   [batch, height, width]           arg-max class of each pixel
Metadata (metadata_props): model, style, width, classes, class_names, means (BGR), skip_scales.
An int8 model (fcn quantize) is written as QDQ: QuantizeLinear/DequantizeLinear around int8
kernels and calibrated activation scales, which ONNX Runtime runs with its own int8 kernels.`,
  positionals: 'onnx',
  options: {
    weights: { type: 'string', value: 'FILE', help: 'the weights: safetensors, Keras .h5 or Caffe .caffemodel, or the name of known weights already fetched (fcn weights list)', default: REQUIRED },
    out: { type: 'string', value: 'FILE', help: 'the ONNX file to write (atomically)', default: REQUIRED },
    opset: { type: 'string', value: 'N', help: `ONNX operator set, ${MIN_OPSET} to ${MAX_OPSET}`, default: String(DEFAULT_OPSET) },
    'logits-only': { type: 'boolean', help: `leave out the ${ONNX_LABELS} output`, default: `both ${ONNX_LOGITS} and ${ONNX_LABELS}` },
    classes: { type: 'string', value: 'FILE', help: 'class names for the metadata (classes.json)', default: "the model's, else VOC's for 21 classes" },
    float32: { type: 'boolean', help: 'an int8 model: write its float32 form (dequantized kernels) instead of QDQ', default: 'QDQ for int8 models' },
    'reduce-range': { type: 'boolean', help: 'int8: activations in 7 bits, for runtimes whose int8 kernels saturate 8-bit sums (x86 without VNNI)', default: 'off (8 bits)' },
    // Exporting computes nothing: of the engine options only the threads (of the weight layout
    // conversions) apply.
    threads: engineOptionSpecs.threads,
  },
  examples: [
    'fcn export onnx --weights fcn8.safetensors --out fcn8.onnx',
    'fcn export onnx --weights fcn8s --out fcn8s-caffe.onnx --opset 17',
  ],
} satisfies CommandSpec;

const cmd = 'export';

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(exportSpec, argv);
  const [format, ...extra] = positionals;
  if (format === undefined) throw new UsageError(`fcn ${cmd}: no format given (expected: fcn export onnx --weights FILE --out FILE)`);
  if (format !== 'onnx') throw new UsageError(`fcn ${cmd}: unknown format '${format}' (expected onnx)`);
  if (extra.length > 0) throw new UsageError(`fcn ${cmd}: unexpected argument '${extra[0]}' (fcn ${cmd} --help shows the usage)`);
  applyEngineFlags(exportSpec, values);
  const weights = requireString(cmd, values.weights, 'weights');
  const out = requireString(cmd, values.out, 'out');
  const opset = parseNumber(cmd, values.opset, 'opset', (n) => Number.isInteger(n) && n >= MIN_OPSET && n <= MAX_OPSET, `an integer from ${MIN_OPSET} to ${MAX_OPSET}`) ?? DEFAULT_OPSET;
  // A known name (fcn8s, …) stands for its file in the weights cache; anything else is a path.
  const weightsFile = checkWeightsArgument(cmd, 'weights', weights);
  if (values.classes !== undefined) checkInputFile(cmd, 'classes', values.classes);
  prepareOutputFile(cmd, 'out', out);

  const model = await loadModel(weightsFile);
  try {
    const classNames = values.classes !== undefined ? (await readClassSet(values.classes)).names : undefined;
    if (classNames && classNames.length !== model.numClasses) throw new UsageError(`fcn ${cmd}: --classes '${values.classes}': names ${classNames.length} classes, the model predicts ${model.numClasses}`);
    const labels = !values['logits-only'];
    const t0 = performance.now();
    const int8 = model.quantized && !values.float32;
    if (values['reduce-range'] && !int8) throw new UsageError(`fcn ${cmd}: --reduce-range applies to int8 models written as QDQ; '${weights}' ${model.quantized ? 'is written as float32 (--float32)' : 'is a float32 model'}`);
    writeOnnx(out, model, { opset, labels, int8, reduceRange: Boolean(values['reduce-range']), classNames });
    const megabytes = statSync(out).size / 1e6;
    console.log(`wrote ${out}: ${model.kind} (${model.style} style, width ${model.width}, ${model.numClasses} classes), ${int8 ? 'int8 (QDQ), ' : ''}opset ${opset}, ${megabytes.toFixed(1)} MB, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(`  input  ${ONNX_INPUT}: float32 [batch, 3, height, width], RGB 0-255`);
    console.log(`  output ${ONNX_LOGITS}: float32 [batch, ${model.numClasses}, height, width]${labels ? `\n  output ${ONNX_LABELS}: int64 [batch, height, width]` : ''}`);
  } finally {
    model.dispose();
  }
  return 0;
}
