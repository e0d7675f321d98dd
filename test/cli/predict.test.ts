// fcn init and fcn predict: weights written, a label map and logits at the image's own size.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { decode } from 'fast-png';
import { readNpy } from '../support/npy.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/weights.js';
import { segment } from '../../src/infer/inference.js';
import { configureEngine } from '../../src/engine/config.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('cli-predict');
after(() => tmp.cleanup());

test('init writes a seeded model; predict writes a palette label map and (21, H, W) logits equal to the API', async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  const w = path.join(tmp.dir, 'w.safetensors'), w2 = path.join(tmp.dir, 'w2.safetensors');
  const init = await runCli('init', '--model', 'fcn16', '--width', '0.0625', '--seed', '4', '--out', w);
  assert.equal(init.code, 0, init.err);
  assert.match(init.out, /fcn16 \(keras style\), width 0.0625, seed 4/);
  await runCli('init', '--model', 'fcn16', '--width', '0.0625', '--seed', '4', '--out', w2);
  assert.deepEqual(readFileSync(w), readFileSync(w2), 'same seed, same bytes');
  assert.equal(readSafetensors(w).metadata.model, 'fcn16');

  // An image whose sides are not multiples of 32.
  const image = path.join(tmp.dir, 'photo.png');
  const W = 75, H = 41;
  const rgb = Buffer.alloc(W * H * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 37) % 251;
  await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toFile(image);
  const labels = path.join(tmp.dir, 'out', 'labels.png'), logits = path.join(tmp.dir, 'out', 'logits.npy');
  const r = await runCli('predict', '--weights', w, '--image', image, '--labels', labels, '--logits', logits, '--precision', 'float32');
  assert.equal(r.code, 0, r.err);
  const png = decode(readFileSync(labels));
  assert.deepEqual([png.width, png.height, png.channels], [W, H, 1]);
  assert.ok(png.palette && png.palette.length >= 21, 'a palette PNG');
  const npy = readNpy(logits);
  assert.equal(npy.dtype, 'float32');
  assert.deepEqual(npy.shape, [21, H, W]);
  const model = await loadModel(w);
  const api = await segment(model, image, { logits: true, precision: 'float32' });
  model.dispose();
  assert.deepEqual(npy.data, api.logits);
  assert.deepEqual(Uint8Array.from(png.data), api.labels);
});

test('bad arguments: one clear line, non-zero exit', async () => {
  const w = path.join(tmp.dir, 'w.safetensors');
  const notImage = path.join(tmp.dir, 'notes.txt');
  writeFileSync(notImage, 'not an image');
  const cases: [string[], RegExp][] = [
    [['init', '--model', 'fcn9', '--out', path.join(tmp.dir, 'x.safetensors')], /fcn init: unknown model 'fcn9'/],
    [['init', '--model', 'fcn8'], /fcn init: --out is required/],
    [['init', '--model', 'fcn8', '--width', '2', '--out', path.join(tmp.dir, 'x.safetensors')], /--width must be in \(0, 1\]/],
    [['predict', '--weights', path.join(tmp.dir, 'none.safetensors'), '--image', notImage], /--weights '.*none\.safetensors': no such file/],
    [['predict', '--weights', w, '--image', notImage], /notes.txt: not a readable image/],
    [['predict', '--weights', w], /--image is required/],
    [['predict', '--weights', notImage, '--image', notImage], /notes.txt/],
    [['nonsense'], /unknown command 'nonsense'/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.equal(lines(r.err).length, 1, `${args.join(' ')}:\n${r.err}`);
    assert.match(r.err, pattern);
  }
});
