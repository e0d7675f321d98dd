// A model whose forward pass yields NaN (here: a NaN weight, loaded with allowNonFinite) gives
// an error naming the image, never a label map, whole or tiled.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { segment, segmentImage } from '../../src/infer/inference.js';
import type { FCN } from '../../src/models/fcn.js';
import { tempDir } from '../data/helpers.js';
import { tinyModel } from '../eval/fixtures.js';

const tmp = tempDir('infer-nonfinite');
let image: string;
let broken: FCN;

before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  const model = tinyModel('fcn8', 7, 21);
  // score7 has no ReLU after it (a fused ReLU turns NaN into 0), so the NaN reaches the logits.
  const k = model.score7.kernel;
  const values = k.value.toArray() as Float32Array;
  values[17] = NaN;
  k.assign(native.fromArray(k.dims, values));
  const file = join(tmp.dir, 'nan.safetensors');
  saveWeights(file, model);
  model.dispose();
  await assert.rejects(loadModel(file), /score7/, 'refused by default');
  broken = await loadModel(file, { allowNonFinite: true });
  image = join(tmp.dir, 'photo.png');
  const w = 97, h = 70;
  await sharp(Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 31) % 256)), { raw: { width: w, height: h, channels: 3 } }).png().toFile(image);
});
after(() => {
  broken?.dispose();
  tmp.cleanup();
});

test('NaN scores are an error naming the image, whole and tiled', async () => {
  await assert.rejects(segment(broken, image), (e: Error) => {
    assert.match(e.message, /photo\.png: the model produced non-finite scores \(\d+ NaN and 0 infinite of \d+ values\)/);
    return true;
  });
  const rgb = { data: new Uint8Array(400 * 340 * 3).fill(100), width: 400, height: 340 };
  assert.throws(() => segmentImage(broken, rgb, { name: 'big.jpg', tiling: 'tiled', tileSize: 320 }), /^Error: big\.jpg: the model produced non-finite scores \(\d+ NaN and 0 infinite of \d+ values in the window at \(0, 0\)/);
});
