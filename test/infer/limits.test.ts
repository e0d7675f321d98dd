// The decoded-pixel limit: an image whose header declares more pixels than allowed is refused
// before decoding, naming the file and its size, by the API and by predict, segment and eval.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { DEFAULT_MAX_PIXELS, imageSize, readImageRgb } from '../../src/io/image.js';
import { segment } from '../../src/infer/inference.js';
import { configureEngine } from '../../src/engine/config.js';
import { tempDir } from '../data/helpers.js';
import { SYNTH_CLASSES, lines, runCli, saveTinyModel, tinyDataset, tinyModel } from '../eval/fixtures.js';

const tmp = tempDir('infer-limits');
let bomb: string, small: string, weights: string, synthWeights: string, voc: string;

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A valid PNG of `width`×`height` black pixels at 1 bit per pixel: ~0.5 MB on disk, 2.7 GB
 * as decoded RGB at 30000×30000.
 */
function blackPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  const rows = Buffer.alloc((Math.ceil(width / 8) + 1) * height); // filter byte 0, then zero bits
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows, { level: 1 })), chunk('IEND', Buffer.alloc(0))]);
}

before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  bomb = join(tmp.dir, 'bomb.png');
  writeFileSync(bomb, blackPng(30000, 30000));
  small = join(tmp.dir, 'small.png');
  await sharp(Buffer.alloc(75 * 41 * 3, 90), { raw: { width: 75, height: 41, channels: 3 } }).png().toFile(small);
  weights = saveTinyModel(join(tmp.dir, 'w.safetensors'), 'fcn8', 7, 21);
  synthWeights = saveTinyModel(join(tmp.dir, 'synth.safetensors'), 'fcn8', 7, SYNTH_CLASSES);
  voc = (await tinyDataset(join(tmp.dir, 'voc'), 4)).root;
});
after(() => tmp.cleanup());

test('a 30000×30000 PNG is refused from its header: readImageRgb and segment() name the file and its size, and nothing is decoded', async () => {
  assert.deepEqual(await imageSize(bomb), { width: 30000, height: 30000 }, 'a valid PNG header');
  assert.equal(DEFAULT_MAX_PIXELS, 100_000_000);
  const rssBefore = process.memoryUsage().rss;
  await assert.rejects(readImageRgb(bomb), (e: Error) => {
    assert.match(e.message, /bomb\.png: the image is 30000×30000, 900 megapixels, over the limit of 100 megapixels/);
    return true;
  });
  const model = tinyModel('fcn8', 7, 21);
  try {
    await assert.rejects(segment(model, bomb), /bomb\.png: the image is 30000×30000/);
  } finally {
    model.dispose();
  }
  // Decoding would have needed 2.7 GB.
  const grown = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  assert.ok(grown < 400, `RSS grew by ${grown.toFixed(0)} MB`);
  // Raised limit: the same file passes the check (decoding is not attempted here); a lower one refuses a small image.
  await assert.rejects(readImageRgb(small, { maxPixels: 75 * 41 - 1 }), /small\.png: the image is 75×41, 0\.0031 megapixels, over the limit of 0\.0031 megapixels/);
  assert.equal((await readImageRgb(small, { maxPixels: 75 * 41 })).width, 75);
});

test('predict, segment and eval: --max-pixels refuses larger images with one line naming the file; the default refuses the 900 MP PNG', async () => {
  const out = join(tmp.dir, 'out');
  const cases: [string[], RegExp][] = [
    [['predict', '--weights', weights, '--image', bomb, '--labels', join(out, 'b.png')], /^fcn predict: .*bomb\.png: the image is 30000×30000, 900 megapixels, over the limit of 100 megapixels/],
    [['predict', '--weights', weights, '--image', small, '--labels', join(out, 's.png'), '--max-pixels', '3000'], /small\.png: the image is 75×41.*--max-pixels/],
    [['segment', small, '--weights', weights, '--out', out, '--max-pixels', '3000'], /^fcn segment: .*small\.png: the image is 75×41/],
    [['segment', bomb, '--weights', weights, '--out', out], /bomb\.png: the image is 30000×30000/],
    [['eval', '--weights', synthWeights, '--data', voc, '--split', 'trainval', '--max-pixels', '1000'], /^fcn eval: .*\.(jpg|png): the image is \d+×\d+/],
    [['predict', '--weights', weights, '--image', small, '--max-pixels', '0'], /--max-pixels must be a positive integer, got '0'/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.equal(lines(r.err).length, 1, `${args.join(' ')}:\n${r.err}`);
    assert.match(r.err, pattern, args.join(' '));
  }
  const ok = await runCli('predict', '--weights', weights, '--image', small, '--labels', join(out, 's.png'), '--max-pixels', String(75 * 41));
  assert.equal(ok.code, 0, ok.err);
});
