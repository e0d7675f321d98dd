// `fcn export onnx`: a weight file as a self-contained ONNX model for other runtimes.
import { statSync } from 'node:fs';
import { readClassSet } from '../data/classes.js';
import { loadModel } from '../models/weights.js';
import { resolveWeights } from '../io/weights-cache.js';
import { DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ONNX_INPUT, ONNX_LABELS, ONNX_LOGITS, writeOnnx } from '../export/onnx-export.js';
import { UsageError, parse, parseNumber, requireString } from './args.js';
import { applyEngineFlags, engineFlags, requireFile, writableFile } from './engine-flags.js';

export const EXPORT_HELP = `Usage:
  fcn export onnx --weights W --out model.onnx [--opset N] [--logits-only] [--classes FILE]

  Writes the model as one ONNX file (weights inside) that ONNX Runtime and other ONNX engines
  run on plain pixels: the preprocessing (RGB → BGR, minus the model's means) is in the graph.
    input   ${ONNX_INPUT}   float32 [batch, 3, height, width]  RGB, 0-255, any height and width
    output  ${ONNX_LOGITS}  float32 [batch, classes, height, width]  class scores before softmax
    output  ${ONNX_LABELS}  int64   [batch, height, width]  arg-max class per pixel
  Metadata: model, style, width, classes, class_names, means (BGR).

Options:
  --weights W      required: a safetensors, Keras .h5 or Caffe .caffemodel file, or the
                   name of known weights already fetched (fcn weights list)
  --out F          required: the ONNX file to write (atomically)
  --opset N        ONNX operator set, ${MIN_OPSET} to ${MAX_OPSET}; default ${DEFAULT_OPSET}
  --logits-only    leave out the ${ONNX_LABELS} output; default: both outputs
  --classes FILE   class names for the metadata (classes.json); default: the model's, else
                   VOC's for a 21-class model
  --threads N      engine threads; default: FCN_THREADS, else all cores

Examples:
  fcn export onnx --weights fcn8.safetensors --out fcn8.onnx
  fcn export onnx --weights fcn8s --out fcn8s-caffe.onnx --opset 17     (after fcn weights fetch fcn8s)
`;

const cmd = 'export';
const FORMATS = ['onnx'];

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(cmd, argv, {
    ...engineFlags,
    weights: { type: 'string' }, out: { type: 'string' }, opset: { type: 'string' }, classes: { type: 'string' },
    'logits-only': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(EXPORT_HELP);
    return 0;
  }
  const [format, ...extra] = positionals;
  if (format === undefined) throw new UsageError(`fcn ${cmd}: no format given (expected: fcn export onnx --weights W --out F)`);
  if (!FORMATS.includes(format)) throw new UsageError(`fcn ${cmd}: unknown format '${format}' (expected ${FORMATS.join(', ')})`);
  if (extra.length > 0) throw new UsageError(`fcn ${cmd}: unexpected argument '${extra[0]}'`);
  applyEngineFlags(cmd, values);
  const weights = requireString(cmd, values.weights, 'weights');
  const out = requireString(cmd, values.out, 'out');
  const opset = parseNumber(cmd, values.opset, 'opset', (n) => Number.isInteger(n) && n >= MIN_OPSET && n <= MAX_OPSET, `an integer from ${MIN_OPSET} to ${MAX_OPSET}`) ?? DEFAULT_OPSET;
  let weightsFile: string;
  try {
    weightsFile = resolveWeights(weights);
  } catch (e) {
    throw new UsageError(`fcn ${cmd}: --weights: ${(e as Error).message}`);
  }
  if (values.classes !== undefined) requireFile(cmd, values.classes, 'classes file');
  writableFile(cmd, out, 'out');

  // loadModel may be synchronous or asynchronous depending on the weight formats it reads.
  const model = await loadModel(weightsFile);
  try {
    let classNames: string[] | undefined;
    if (values.classes !== undefined) {
      classNames = (await readClassSet(values.classes)).names;
      if (classNames.length !== model.numClasses) throw new UsageError(`fcn ${cmd}: ${values.classes} names ${classNames.length} classes but the model predicts ${model.numClasses}`);
    }
    const labels = !values['logits-only'];
    const t0 = performance.now();
    writeOnnx(out, model, { opset, labels, ...(classNames ? { classNames } : {}) });
    const megabytes = statSync(out).size / 1e6;
    const style = (model as { style?: string }).style ?? 'keras';
    console.log(`wrote ${out}: ${model.kind} (${style} style, width ${model.width}, ${model.numClasses} classes), opset ${opset}, ${megabytes.toFixed(1)} MB, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(`  input  ${ONNX_INPUT}: float32 [batch, 3, height, width], RGB 0-255`);
    console.log(`  output ${ONNX_LOGITS}: float32 [batch, ${model.numClasses}, height, width]${labels ? `\n  output ${ONNX_LABELS}: int64 [batch, height, width]` : ''}`);
  } finally {
    model.dispose();
  }
  return 0;
}
