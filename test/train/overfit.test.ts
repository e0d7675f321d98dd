// Learning, end to end on real data: a narrow FCN-8s memorises 8 real VOC images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { requires } from '../prereq.js';
import path from 'node:path';
import { native } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';
import { Adam } from '../../src/train/optim.js';
import { trainStep } from '../../src/train/step.js';
import { vocDataset, readSample } from '../../src/data/datasets.js';
import { toNetworkInput, resizeWithPad } from '../../src/data/transforms.js';
import { ConfusionMatrix } from '../../src/report/confusion.js';

const voc = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
const skip = requires(existsSync(voc), `the real VOC sample is not at ${voc}`);

test('a narrow FCN-8s overfits 8 real VOC images (training mIoU ≥ 0.85)', { skip, timeout: 600_000 }, async () => {
  const S = 128, n = 8;
  const ds = await vocDataset(voc, { split: 'train' });
  const images = new Float32Array(n * 3 * S * S), labels = new Uint8Array(n * S * S);
  // The first 8 training images in which every labelled class covers at least 1% of the
  // 128×128 frame (a 50-pixel person cannot be learned at this scale by any model).
  let count = 0;
  for (const e of ds.entries) {
    if (count === n) break;
    const s = resizeWithPad(toNetworkInput(await readSample(e, ds.classes)), S);
    const hist = new Map<number, number>();
    for (const v of s.label) hist.set(v, (hist.get(v) ?? 0) + 1);
    if ([...hist].some(([k, v]) => k !== 255 && v < 0.01 * S * S)) continue;
    images.set(s.image, count * 3 * S * S);
    labels.set(s.label, count * S * S);
    count++;
  }
  assert.equal(count, n);
  const x = native.fromArray([n, 3, S, S], images), y = native.fromArray([n, S, S], labels);
  const model = new FCN({ kind: 'fcn8', width: 0.25, dropout: 0 });
  model.initialize(1);
  const opt = new Adam({ lr: 1e-3 });
  const steps = 300;
  let first = NaN, last = NaN;
  for (let step = 1; step <= steps; step++) {
    // Adam at 1e-3 for longer than this spiked (loss 0.07 → 0.76 near step 190) under one
    // float32 rounding of the same arithmetic and not under another: the rate drops early.
    // Initialisations 1 and 2 reach 0.916 and 0.892 with this schedule.
    if (step === 120) opt.lr = 2e-4;
    const r = trainStep(model, opt, x, y, { seed: step });
    if (step === 1) first = r.loss;
    last = r.loss;
  }
  const logits = model.predictLogits(x);
  const pred = native.argmax(logits);
  const cm = new ConfusionMatrix(21);
  cm.update(labels, pred.toArray() as Uint8Array);
  const { meanIoU, pixelAccuracy } = cm.compute();
  assert.ok(last < first / 10, `loss ${first} → ${last}`);
  assert.ok(meanIoU >= 0.85, `training mean IoU ${meanIoU.toFixed(3)} (pixel accuracy ${pixelAccuracy.toFixed(3)})`);
  for (const t of [x, y, logits, pred]) t.dispose();
  opt.dispose();
  model.dispose();
});
