import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { readSample, vocDataset } from '../../src/data/datasets.js';
import { mixSeed, Rng } from '../../src/data/prng.js';
import {
  applyPipeline, CAFFE_MEANS_BGR, crop, evalPipeline, hflip, KERAS_MEANS_BGR, randomCrop, randomHflip, randomScale,
  resize, resizeWithPad, toNetworkInput, toRgbBytes, trainPipeline, validatePipeline, type Sample,
} from '../../src/data/transforms.js';
import type { RawSample } from '../../src/data/datasets.js';
import { needShared, vocRoot } from './helpers.js';

/** A random raw sample with blocky labels from a small label set (and some void). */
function makeRaw(w: number, h: number, seed: number, values = [0, 3, 7, 255]): RawSample {
  const rng = new Rng(seed);
  const image = new Uint8Array(w * h * 3).map(() => rng.int(256));
  const label = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) label[y * w + x] = values[(Math.floor(x / 5) + Math.floor(y / 3)) % values.length]!;
  return { id: `r${seed}`, width: w, height: h, image, label };
}
const set = (a: Uint8Array) => new Set(a);
const subset = (a: Set<number>, b: Set<number>) => [...a].every((v) => b.has(v));

describe('PRNG', () => {
  test('same seed, same stream; different seeds differ; int is in range and unbiased enough', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const sa = Array.from({ length: 50 }, () => a.nextUint32());
    assert.deepEqual(sa, Array.from({ length: 50 }, () => b.nextUint32()));
    assert.notDeepEqual(sa, Array.from({ length: 50 }, () => c.nextUint32()));
    const r = new Rng(1), hist = new Array(6).fill(0);
    for (let i = 0; i < 60000; i++) hist[r.int(6)]++;
    assert.ok(hist.every((h) => Math.abs(h - 10000) < 500), String(hist));
    assert.notEqual(mixSeed(1, 2, 3), mixSeed(1, 3, 2));
    const sh = new Rng(5).shuffle(Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual([...sh].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
  });
});

describe('network input', () => {
  test('RGB → BGR CHW minus the Keras or Caffe means, and back', () => {
    const raw = makeRaw(7, 4, 1);
    const s = toNetworkInput(raw, 'keras');
    const n = 28;
    assert.ok(Math.abs(s.image[0]! - (raw.image[2]! - KERAS_MEANS_BGR[0])) < 1e-4); // B plane
    assert.ok(Math.abs(s.image[n]! - (raw.image[1]! - KERAS_MEANS_BGR[1])) < 1e-4); // G plane
    assert.ok(Math.abs(s.image[2 * n + 5]! - (raw.image[15]! - KERAS_MEANS_BGR[2])) < 1e-4); // R of pixel 5
    const c = toNetworkInput(raw, 'caffe');
    assert.ok(Math.abs(c.image[0]! - (raw.image[2]! - CAFFE_MEANS_BGR[0])) < 1e-4);
    assert.deepEqual(toRgbBytes(s.image, 7, 4, 'keras'), raw.image);
    assert.deepEqual(toRgbBytes(c.image, 7, 4, 'caffe'), raw.image);
    assert.throws(() => toNetworkInput(raw, [1, 2] as unknown as [number, number, number]), /means must be/);
  });
});

describe('geometric transforms', () => {
  const s0 = toNetworkInput(makeRaw(40, 30, 2));
  const labels0 = set(s0.label);

  test('resize: 2× up then 2× down gives the label back exactly; values stay in the label set', () => {
    const up = resize(s0, 60, 80);
    assert.ok(subset(set(up.label), labels0));
    const back = resize(up, 30, 40);
    assert.deepEqual(back.label, s0.label);
    const odd = resize(s0, 17, 23);
    assert.ok(subset(set(odd.label), labels0));
    assert.equal(odd.image.length, 3 * 17 * 23);
  });
  test('resize is bilinear on the image: a constant stays constant, a ramp stays a ramp', () => {
    const w = 16, h = 8;
    const raw: RawSample = { id: 'ramp', width: w, height: h, image: new Uint8Array(w * h * 3), label: new Uint8Array(w * h) };
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.image.set([x * 10, 100, 50], (y * w + x) * 3);
    const r = resize(toNetworkInput(raw), h * 2, w * 2);
    const plane = (c: number, x: number, y: number) => r.image[c * 4 * w * h + y * 2 * w + x]!;
    for (let x = 1; x < 2 * w - 2; x++) assert.ok(Math.abs(plane(1, x, 3) - (100 - KERAS_MEANS_BGR[1])) < 1e-3);
    const d1 = plane(2, 10, 5) - plane(2, 9, 5), d2 = plane(2, 20, 5) - plane(2, 19, 5);
    assert.ok(Math.abs(d1 - 5) < 1e-3 && Math.abs(d2 - 5) < 1e-3, `${d1} ${d2}`);
  });
  test('hflip twice is the identity; once mirrors', () => {
    const f = hflip(s0);
    assert.equal(f.label[0], s0.label[39]);
    assert.equal(f.image[40 * 30 + 1], s0.image[40 * 30 + 38]);
    const ff = hflip(f);
    assert.deepEqual(ff.label, s0.label);
    assert.deepEqual(ff.image, s0.image);
  });
  test('crop outside the sample pads the image with 0 and the label with 255; crop back recovers it', () => {
    const c = crop(s0, -5, -3, 40, 50);
    assert.equal(c.label[0], 255);
    assert.equal(c.image[0], 0);
    assert.equal(c.label[5 * 50 + 3], s0.label[0]);
    const back = crop(c, 5, 3, 30, 40);
    assert.deepEqual(back.label, s0.label);
    assert.deepEqual(back.image, s0.image);
    assert.ok(subset(set(c.label), labels0));
  });
  test('resize-with-pad: longer side to S, rest padded at the bottom and right (label 255, image 0)', () => {
    const s = toNetworkInput(makeRaw(50, 30, 3));
    const p = resizeWithPad(s, 64);
    assert.deepEqual([p.width, p.height], [64, 64]);
    // 50×30 → 64×38 (rounded), rows 38.. are padding.
    for (let y = 38; y < 64; y++) for (let x = 0; x < 64; x++) assert.equal(p.label[y * 64 + x], 255);
    for (let i = 38 * 64; i < 64 * 64; i++) assert.equal(p.image[i], 0);
    assert.ok(subset(set(p.label), set(s.label)));
    // Round trip: cut out the image part and resize back; nearly all labels agree.
    const back = resize(crop(p, 0, 0, 38, 64), 30, 50);
    let same = 0;
    for (let i = 0; i < back.label.length; i++) same += back.label[i] === s.label[i] ? 1 : 0;
    assert.ok(same / back.label.length > 0.9, `${same}`);
  });
  test('random scale / crop / flip: reproducible under a seed, within range, labels in the set', () => {
    const run = (seed: number): Sample => {
      const rng = new Rng(seed);
      return randomHflip(randomCrop(randomScale(s0, rng, 0.5, 2), rng, 48), rng, 0.5);
    };
    const a = run(9), b = run(9);
    assert.deepEqual(a.label, b.label);
    assert.deepEqual(a.image, b.image);
    let differs = 0;
    for (let seed = 0; seed < 20; seed++) {
      const r = run(seed);
      assert.deepEqual([r.width, r.height], [48, 48]);
      assert.ok(subset(set(r.label), new Set([...labels0, 255])));
      if (r.label.join() !== a.label.join()) differs++;
    }
    assert.ok(differs >= 15);
    for (let seed = 0; seed < 50; seed++) {
      const sc = randomScale(s0, new Rng(seed), 0.5, 2);
      assert.ok(sc.width >= 20 && sc.width <= 80 && sc.height >= 15 && sc.height <= 60);
    }
  });
  test('pipelines validate their parameters', () => {
    assert.throws(() => validatePipeline({ means: 'keras', steps: [{ op: 'randomScale', min: 2, max: 1 }] }), /randomScale/);
    assert.throws(() => validatePipeline({ means: 'keras', steps: [{ op: 'randomCrop', height: 0 }] }), /randomCrop height/);
    assert.throws(() => validatePipeline({ means: 'keras', steps: [{ op: 'spin' } as never] }), /unknown transform/);
    validatePipeline(trainPipeline());
  });
});

describe('pipelines on the real VOC sample', () => {
  test('train and eval pipelines give 512×512 samples whose labels stay in the label set', { skip: needShared(vocRoot) }, async () => {
    const ds = await vocDataset(vocRoot, { split: 'val' });
    for (const e of ds.entries.slice(0, 4)) {
      const raw = await readSample(e, ds.classes);
      const orig = new Set([...set(raw.label), 255]);
      const t = applyPipeline(raw, trainPipeline({ size: 512 }), new Rng(mixSeed(1, 2)));
      assert.deepEqual([t.width, t.height], [512, 512]);
      assert.ok(subset(set(t.label), orig));
      const t2 = applyPipeline(raw, trainPipeline({ size: 512 }), new Rng(mixSeed(1, 2)));
      assert.deepEqual(t2.image, t.image);
      const v = applyPipeline(raw, evalPipeline({ size: 512 }), new Rng(0));
      assert.deepEqual([v.width, v.height], [512, 512]);
      assert.ok(subset(set(v.label), orig));
      const full = applyPipeline(raw, evalPipeline(), new Rng(0));
      assert.deepEqual([full.width, full.height], [raw.width, raw.height]);
      assert.deepEqual(full.label, raw.label);
    }
    assert.ok(join(vocRoot).length > 0);
  });
});
