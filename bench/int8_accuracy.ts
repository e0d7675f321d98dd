// int8 against float32 on a trained model: quantize it (calibrated on the first N training
// images), evaluate both precisions on the validation split, and print the paper's metrics,
// the mean IoU difference and the share of pixels whose class agrees.
//
//   node --import tsx bench/int8_accuracy.ts --weights W --data ROOT [--calib 32] [--split val]
//
// For the demo's model: `fcn demo --out D`, then --weights D/run/checkpoints/best.safetensors --data D/data.
import { benchArgs } from './args.js';
import { configureEngine } from '../src/engine/config.js';
import { loadModel } from '../src/models/weights.js';
import { calibrateOnImages, quantizeModel } from '../src/quant/quantize.js';
import { activationLevels } from '../src/nn/activation-scales.js';
import { openDataset } from '../src/data/datasets.js';
import { evaluate } from '../src/eval/evaluate.js';
import { segmentImage } from '../src/infer/inference.js';
import { readImageRgb } from '../src/io/image.js';

const { values } = benchArgs(import.meta.url, { options: { weights: { type: 'string' }, data: { type: 'string' }, calib: { type: 'string' }, split: { type: 'string' }, threads: { type: 'string' } } });
if (!values.weights || !values.data) {
  console.error('bench/int8_accuracy.ts: --weights and --data are required (bench/int8_accuracy.ts --help shows the usage)');
  process.exit(2);
}
configureEngine({ threads: Number(values.threads ?? 2), precision: 'float32' });
const model = await loadModel(values.weights);
const train = await openDataset(values.data, { split: 'train' });
const pictures = await Promise.all(train.entries.slice(0, Number(values.calib ?? 32)).map((e) => readImageRgb(e.image)));
quantizeModel(model, calibrateOnImages(model, pictures));
const val = await openDataset(values.data, { split: values.split ?? 'val' });
const fp32 = await evaluate(model, val, { precision: 'float32' });
const int8 = await evaluate(model, val, { precision: 'int8' });
let same = 0, total = 0;
for (const e of val.entries) {
  const rgb = await readImageRgb(e.image);
  const a = segmentImage(model, rgb, { precision: 'float32' }).labels, b = segmentImage(model, rgb, { precision: 'int8' }).labels;
  for (let i = 0; i < a.length; i++) same += a[i] === b[i] ? 1 : 0;
  total += a.length;
}
const f = (v: number) => v.toFixed(4);
console.log(`${values.weights}: ${model.kind} width ${model.width}; calibrated on ${pictures.length} training images; ${val.entries.length} ${values.split ?? 'val'} images; uint8 activations with ${activationLevels()} levels on this CPU`);
console.log(`float32  mean IoU ${f(fp32.metrics.meanIoU)}  pixel accuracy ${f(fp32.metrics.pixelAccuracy)}`);
console.log(`int8     mean IoU ${f(int8.metrics.meanIoU)}  pixel accuracy ${f(int8.metrics.pixelAccuracy)}`);
console.log(`mean IoU difference ${(int8.metrics.meanIoU - fp32.metrics.meanIoU).toFixed(4)}; int8 and float32 agree on ${((100 * same) / total).toFixed(2)}% of the pixels`);
model.dispose();
