// Does bf16 mixed-precision training reach the accuracy of fp32 training? A narrow FCN-8s is
// trained on the synthetic dataset (src/data/synth.ts) from the same initialisation and the
// same batches in both precisions, then scored on the synthetic validation split.
//
//   node --import tsx bench/bf16_training.ts [--steps 300] [--width 0.25] [--batch 8] [--size 128] [--count 400] [--json]
//
// Target (issue #5): bf16 validation mIoU within 0.02 of fp32's.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './args.js';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';
import { synthesizeDataset } from '../src/data/synth.js';
import { vocDataset, readSample } from '../src/data/datasets.js';
import { toNetworkInput } from '../src/data/transforms.js';
import { Rng } from '../src/data/prng.js';
import { ConfusionMatrix } from '../src/report/confusion.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = benchArgs(import.meta.url, { options: { steps: { type: 'string' }, width: { type: 'string' }, batch: { type: 'string' }, size: { type: 'string' }, count: { type: 'string' }, json: { type: 'boolean' }, threads: { type: 'string' } } });
const steps = Number(values.steps ?? 300), width = Number(values.width ?? 0.25), batch = Number(values.batch ?? 8);
const size = Number(values.size ?? 128), count = Number(values.count ?? 400);
configureEngine({ threads: values.threads ? Number(values.threads) : undefined });

async function main(): Promise<void> {
  const root = path.join(here, '.work', `synth-${count}-${size}`);
  if (!existsSync(path.join(root, 'ImageSets', 'Segmentation', 'val.txt'))) {
    console.error(`bf16_training: writing the synthetic dataset to ${root}`);
    await synthesizeDataset({ out: root, count, size, seed: 0 });
  }
  const load = async (split: 'train' | 'val') => {
    const ds = await vocDataset(root, { split });
    const samples = [];
    for (const e of ds.entries) samples.push(toNetworkInput(await readSample(e, ds.classes)));
    return { samples, classes: ds.classes.names.length };
  };
  const train = await load('train'), val = await load('val');
  const classes = train.classes;
  const plane = size * size;
  const pack = (idx: number[], from: typeof train.samples) => {
    const images = new Float32Array(idx.length * 3 * plane), labels = new Uint8Array(idx.length * plane);
    idx.forEach((k, b) => {
      images.set(from[k].image, b * 3 * plane);
      labels.set(from[k].label, b * plane);
    });
    return { x: native.fromArray([idx.length, 3, size, size], images), y: native.fromArray([idx.length, size, size], labels), labels };
  };
  // The same batch order for both precisions.
  const rng = new Rng(5);
  const order = Array.from({ length: steps }, () => Array.from({ length: batch }, () => Math.floor(rng.next() * train.samples.length)));

  const result: Record<string, { meanIoU: number; pixelAccuracy: number; finalLoss: number; seconds: number }> = {};
  for (const precision of ['float32', 'bfloat16'] as Precision[]) {
    const model = new FCN({ kind: 'fcn8', width, numClasses: classes, dropout: 0.2 });
    model.initialize(0);
    const opt = new Adam({ lr: 1e-3, l2: 1e-5 });
    const t0 = performance.now();
    let loss = NaN;
    for (let s = 0; s < steps; s++) {
      if (s === Math.floor(steps * 0.7)) opt.lr = 2e-4;
      const b = pack(order[s], train.samples);
      loss = trainStep(model, opt, b.x, b.y, { precision, seed: s }).loss;
      b.x.dispose();
      b.y.dispose();
      if ((s + 1) % 50 === 0) console.error(`bf16_training: ${precision} step ${s + 1}/${steps} loss ${loss.toFixed(4)}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    // Validation in the precision the model was trained in.
    const cm = new ConfusionMatrix(classes);
    for (let i = 0; i < val.samples.length; i += 16) {
      const idx = Array.from({ length: Math.min(16, val.samples.length - i) }, (_, k) => i + k);
      const b = pack(idx, val.samples);
      const logits = model.predictLogits(b.x, precision);
      const pred = native.argmax(logits);
      cm.update(b.labels, pred.toArray() as Uint8Array);
      for (const t of [b.x, b.y, logits, pred]) t.dispose();
    }
    const m = cm.compute();
    result[precision] = { meanIoU: m.meanIoU, pixelAccuracy: m.pixelAccuracy, finalLoss: loss, seconds };
    opt.dispose();
    model.dispose();
  }
  const diff = result.bfloat16.meanIoU - result.float32.meanIoU;
  if (values.json) console.log(JSON.stringify({ steps, width, batch, size, result, mIoUDiff: diff }));
  else {
    for (const [p, r] of Object.entries(result))
      console.log(`${p.padEnd(9)} val mIoU ${r.meanIoU.toFixed(4)}  pixel acc ${r.pixelAccuracy.toFixed(4)}  final loss ${r.finalLoss.toFixed(4)}  ${r.seconds.toFixed(0)} s`);
    console.log(`bf16 − fp32 mIoU: ${diff >= 0 ? '+' : ''}${diff.toFixed(4)} (target |Δ| ≤ 0.02: ${Math.abs(diff) <= 0.02 ? 'met' : 'NOT met'})`);
  }
}

main().catch((e) => {
  console.error(`bf16_training: ${(e as Error).message}`);
  process.exitCode = 1;
});
