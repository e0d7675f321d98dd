// `fcn quantize`: an int8 model from float weights, with activation scales calibrated on
// images the user gives (src/quant/quantize.ts says how).
import { statSync } from 'node:fs';
import { configureEngine, engineConfig } from '../engine/config.js';
import { loadModel } from '../models/weights.js';
import { calibrateOnImages, quantizeModel } from '../quant/quantize.js';
import { saveQuantized } from '../models/int8-weights.js';
import { collectImages } from '../infer/segment-files.js';
import { segmentImage } from '../infer/inference.js';
import { readImageRgb, type RgbImage } from '../io/image.js';
import { checkWeightsArgument, prepareOutputFile } from './paths.js';
import { UsageError, asUsageError, parse, parseNumber, requireString } from './args.js';
import { REQUIRED, engineOptionSpecs, type CommandSpec } from './help.js';

export const quantizeSpec = {
  name: 'quantize',
  summary: 'an int8 model from float weights and calibration images (--precision int8)',
  usage: ['--weights FILE --calib IMAGE|FOLDER[,…] --out FILE [--images N] [--size S]'],
  details: `Post-training quantization for oneDNN's int8 convolutions: kernels int8 with one scale per output
channel; each ReLU convolution's output uint8 with a scale set by the largest value seen over
the calibration images (run through the float32 model), and the image block1_conv1 reads int8
with a scale set by its largest magnitude; biases, the upsamplings and the skip additions stay
float32. The output is a safetensors weights file that every
command reads: --precision int8 runs it in int8 (predict, segment, eval, serve); float32 runs
the dequantized weights (fcn predict --weights Q --image IMAGE --precision int8). Use a few dozen
images like those the model will see.
After writing, the command reports how often the int8 and float32 models agree on the
calibration images' pixels.`,
  options: {
    weights: { type: 'string', value: 'FILE|NAME', help: 'the float model: .safetensors, Keras .h5, .caffemodel, or a fetched name (fcn8s…)', default: REQUIRED },
    calib: { type: 'string', value: 'PATHS', help: 'calibration images: image files or folders (every .jpg/.jpeg/.png), comma-separated', default: REQUIRED },
    out: { type: 'string', value: 'FILE', help: 'the int8 model to write (atomically)', default: REQUIRED },
    images: { type: 'string', value: 'N', help: 'use at most N calibration images (the first N in name order)', default: '32' },
    size: { type: 'string', value: 'S', help: 'scale calibration images down so neither side exceeds S pixels', default: '512' },
    threads: engineOptionSpecs.threads,
  },
  examples: ['fcn quantize --weights fcn8.safetensors --calib data/VOCdevkit/VOC2012/JPEGImages --images 32 --out fcn8-int8.safetensors', 'fcn quantize --weights fcn8s --calib photos/ --size 500 --out fcn8s-int8.safetensors'],
} satisfies CommandSpec;

const cmd = 'quantize';

export async function quantizeCommand(argv: string[]): Promise<number> {
  const { values } = parse(quantizeSpec, argv);
  const threads = parseNumber(cmd, values.threads, 'threads', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const weights = requireString(cmd, values.weights, 'weights');
  const calib = requireString(cmd, values.calib, 'calib');
  const out = requireString(cmd, values.out, 'out');
  const limit = parseNumber(cmd, values.images, 'images', (n) => Number.isInteger(n) && n >= 1, 'a positive integer') ?? 32;
  const size = parseNumber(cmd, values.size, 'size', (n) => Number.isInteger(n) && n >= 32, 'an integer of at least 32') ?? 512;
  checkWeightsArgument(cmd, 'weights', weights);
  const paths = calib.split(',').map((s) => s.trim());
  if (paths.some((p) => p === '')) throw new UsageError(`fcn ${cmd}: --calib must be a comma-separated list of images or folders, got '${calib}'`);
  const images = asUsageError(() => collectImages(paths).slice(0, limit), (m) => `fcn ${cmd}: --calib: ${m}`);
  if (images.length === 0) throw new UsageError(`fcn ${cmd}: --calib '${calib}' holds no .jpg, .jpeg or .png image`);
  prepareOutputFile(cmd, 'out', out);
  configureEngine({ ...(threads !== undefined ? { threads } : {}), precision: 'float32' });

  // Decoded (and scaled down) up front: a bad image fails before any network runs.
  const pictures: RgbImage[] = [];
  for (const f of images) pictures.push(await readImageRgb(f, { fitWithin: size }));
  const model = await loadModel(weights);
  try {
    const t0 = performance.now();
    const maxima = calibrateOnImages(model, pictures, (i) => process.stderr.write(`\rcalibrating: ${i + 1}/${pictures.length} images`));
    process.stderr.write('\n');
    quantizeModel(model, maxima);
    saveQuantized(out, model, { calibration: JSON.stringify({ method: 'max', images: pictures.length, size }) });
    const seconds = (performance.now() - t0) / 1000;
    const layers = model.layers().filter((l) => l.quant?.kernel).length;
    console.log(`wrote ${out}: ${model.kind} (${model.style} style, width ${model.width}), ${layers} int8 convolutions, ${(statSync(out).size / 1e6).toFixed(1)} MB; calibrated on ${pictures.length} image${pictures.length === 1 ? '' : 's'} in ${seconds.toFixed(1)} s`);

    // How close int8 comes to float32 on the same pictures: the share of pixels whose class agrees.
    let same = 0, total = 0;
    for (const rgb of pictures) {
      const a = segmentImage(model, rgb, { precision: 'float32' }).labels, b = segmentImage(model, rgb, { precision: 'int8' }).labels;
      for (let i = 0; i < a.length; i++) same += a[i] === b[i] ? 1 : 0;
      total += a.length;
    }
    console.log(`int8 and float32 agree on ${((100 * same) / total).toFixed(2)}% of the calibration images' pixels (${engineConfig().threads} threads)`);
    console.log(`run it with --precision int8, e.g. fcn predict --weights ${out} --image IMAGE --precision int8`);
  } finally {
    model.dispose();
  }
  return 0;
}
