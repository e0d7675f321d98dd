// Small images give exactly what inference gave before it moved into src/infer/inference.ts:
// the model's forward pass on toNetworkInput's preprocessing (the model's means) and argmax,
// through segment(), segmentFiles() (fcn segment) and evaluate() (fcn eval).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { decode } from 'fast-png';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { openDataset } from '../../src/data/datasets.js';
import { readLabel } from '../../src/data/labels.js';
import { toNetworkInput } from '../../src/data/transforms.js';
import { evaluate } from '../../src/eval/evaluate.js';
import { readImageRgb, type RgbImage } from '../../src/io/image.js';
import { FCN } from '../../src/models/fcn.js';
import { segment, segmentImage } from '../../src/infer/inference.js';
import { segmentFiles } from '../../src/infer/segment-files.js';
import { tempDir } from '../data/helpers.js';
import { SYNTH_CLASSES, tinyDataset } from '../eval/fixtures.js';

const tmp = tempDir('infer-same');
after(() => tmp.cleanup());
before(() => configureEngine({ threads: 2, precision: 'float32' }));

/** The inference code as it was: a faked training sample, predictLogits, argmax. */
function reference(model: FCN, rgb: RgbImage): { labels: Uint8Array; logits: Float32Array } {
  const input = toNetworkInput({ id: '', width: rgb.width, height: rgb.height, image: rgb.data, label: new Uint8Array(0) }, model.means);
  const x = native.fromArray([1, 3, rgb.height, rgb.width], input.image);
  const logits = model.predictLogits(x, 'float32');
  const labelsT = native.argmax(logits);
  const out = { labels: labelsT.toArray() as Uint8Array, logits: logits.toArray() as Float32Array };
  for (const t of [x, logits, labelsT]) t.dispose();
  return out;
}

test('segment() and segmentImage(): labels and logits bit for bit as before, keras and caffe means', async () => {
  const file = join(tmp.dir, 'photo.png');
  const w = 75, h = 41;
  await sharp(Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 37) % 251)), { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
  const rgb = await readImageRgb(file);
  for (const style of ['keras', 'caffe'] as const) {
    const model = new FCN({ kind: style === 'keras' ? 'fcn8' : 'fcn16', width: 0.0625, style });
    model.initialize(4);
    try {
      const ref = reference(model, rgb);
      const viaPath = await segment(model, file, { logits: true, precision: 'float32' });
      const viaRgb = segmentImage(model, rgb, { logits: true, precision: 'float32' });
      for (const r of [viaPath, viaRgb]) {
        assert.equal(r.plan.tiled, false);
        assert.deepEqual(r.labels, ref.labels, `${style}: labels`);
        assert.deepEqual(r.logits, ref.logits, `${style}: logits`);
      }
      assert.ok(new Set(ref.labels).size >= 2, 'more than one class predicted');
    } finally {
      model.dispose();
    }
  }
});

test('segmentFiles (fcn segment) writes the labels as before; evaluate (fcn eval) counts them as before', async () => {
  const root = (await tinyDataset(join(tmp.dir, 'synth'), 5)).root;
  const dataset = await openDataset(root, { split: 'trainval' });
  const model = new FCN({ kind: 'fcn8', width: 0.0625, numClasses: SYNTH_CLASSES });
  model.initialize(11);
  try {
    const hist = Array.from({ length: SYNTH_CLASSES }, () => new Array<number>(SYNTH_CLASSES).fill(0));
    const expected = new Map<string, Uint8Array>();
    for (const entry of dataset.entries) {
      const ref = reference(model, await readImageRgb(entry.image));
      expected.set(entry.image, ref.labels);
      const truth = await readLabel(entry.label, dataset.classes);
      for (let i = 0; i < truth.data.length; i++) if (truth.data[i]! < SYNTH_CLASSES) hist[truth.data[i]!]![ref.labels[i]!]!++;
    }
    const result = await evaluate(model, dataset, { precision: 'float32' });
    assert.deepEqual(result.confusion.toJSON().hist, hist);

    const out = join(tmp.dir, 'segments');
    mkdirSync(out);
    const files = await segmentFiles([...expected.keys()], { out, model, precision: 'float32' });
    for (const f of files) assert.deepEqual(Uint8Array.from(decode(readFileSync(f.labels)).data), expected.get(f.image), f.image);
  } finally {
    model.dispose();
  }
});
