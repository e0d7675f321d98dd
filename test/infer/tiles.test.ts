// Tiled inference gives the whole image's scores: the plan's geometry, and tiled against whole
// on an image cut into several tiles in every stage, in both network styles.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { FCN, type FcnKind, type FcnStyle } from '../../src/models/fcn.js';
import { segmentImage, wholeImageBytes } from '../../src/infer/inference.js';
import { headSupport, mapRanges, marginFor, planAxis, poolSupports } from '../../src/infer/tiling.js';
import { Rng } from '../../src/data/prng.js';
import type { RgbImage } from '../../src/io/image.js';

configureEngine({ threads: 2, precision: 'float32' });

/**
 * The stated tolerance: tiled logits within 1e-4 of the largest logit's magnitude (float32
 * rounding of sums taken in another order), labels equal wherever the whole image's two best
 * scores are further apart than that.
 */
const RELATIVE_TOLERANCE = 1e-4;

/** A picture with structure at several scales (smooth gradients, stripes, noise). */
function picture(width: number, height: number, seed: number): RgbImage {
  const rng = new Rng(seed);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const v = 127 + 80 * Math.sin(x / (11 + 7 * c)) * Math.cos(y / (19 - 4 * c)) + 40 * Math.sign(Math.sin((x + 2 * y) / 37)) + 20 * (rng.next() - 0.5);
        data[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return { data, width, height };
}

/** A narrow model whose skip scores are not zero (initialize() zeroes them), so the skips count. */
function model(kind: FcnKind, style: FcnStyle, atOnce = false): FCN {
  const m = new FCN({ kind, width: 0.0625, style, ...(atOnce ? { skipScales: [0.01, 0.0001] as const } : {}) });
  m.initialize(5);
  const rng = new Rng(9);
  for (const l of [m.score4, m.score3]) {
    if (!l) continue;
    const n = l.kernel.dims.reduce((a, b) => a * b, 1);
    // Large enough that the at-once model's scaled skips still move the logits.
    const scale = atOnce ? (l === m.score4 ? 30 : 3000) : 0.3;
    l.kernel.assign(native.fromArray(l.kernel.dims, Float32Array.from({ length: n }, () => (rng.next() - 0.5) * scale)));
  }
  return m;
}

test('planAxis: kept ranges partition the axis, windows fit the tile, start on the grid and keep the margin', () => {
  for (const [length, tile, margin, align] of [[3000, 896, 107, 32], [4000, 896, 107, 32], [450, 384, 107, 32], [97, 20, 4, 1], [601, 600, 107, 32], [457, 32, 0, 32], [376, 232, 12, 4]] as const) {
    const plan = planAxis(length, tile, margin, align);
    assert.ok(plan.windows.length >= 2, `${length}: several windows`);
    let next = 0;
    for (const [k, w] of plan.windows.entries()) {
      assert.equal(w.keepStart, next, `${length}: window ${k} keeps on from the previous one`);
      assert.ok(w.keepEnd > w.keepStart);
      next = w.keepEnd;
      assert.ok(w.end - w.start <= tile, `${length}: window ${k} is ${w.end - w.start} > ${tile}`);
      assert.equal(w.start % align, 0, `${length}: window ${k} starts on the grid`);
      if (w.start > 0) assert.ok(w.keepStart - w.start >= margin, `${length}: window ${k}'s margin before`);
      if (w.end < length) assert.ok(w.end - w.keepEnd >= margin, `${length}: window ${k}'s margin after`);
    }
    assert.equal(next, length);
  }
  assert.deepEqual(planAxis(300, 384, 107, 32).windows, [{ start: 0, end: 300, keepStart: 0, keepEnd: 300 }], 'one window when it fits');
  assert.throws(() => planAxis(1000, 256, 107, 32), /too small for a margin of 107/);
});

test('supports: block5_pool sees 212 pixels (VGG16), shifted by conv1\'s padding of 100 in the caffe style; conv6 reaches 3 pixels', () => {
  const keras = new FCN({ kind: 'fcn8', width: 0.0625 }), caffe = new FCN({ kind: 'fcn8', width: 0.0625, style: 'caffe' });
  try {
    assert.deepEqual(poolSupports(keras)[4], { stride: 32, lo: -90, hi: 121 });
    assert.deepEqual(poolSupports(caffe)[4], { stride: 32, lo: -189, hi: 22 });
    assert.deepEqual(poolSupports(keras)[2], { stride: 8, lo: -18, hi: 25 });
    assert.deepEqual(headSupport(keras), { stride: 1, lo: -3, hi: 3 });
    // block5_pool in block3_pool's pixels, where blocks 4-5 run on the stitched block3_pool.
    assert.deepEqual(poolSupports(caffe, 3).at(-1), { stride: 4, lo: -9, hi: 12 });
    assert.deepEqual(headSupport(caffe), { stride: 1, lo: 0, hi: 6 });
    assert.equal(marginFor(poolSupports(keras)[4]!), 107);
    // Every map pixel is owned by one window that computes it exactly.
    const plan = planAxis(1000, 384, 107, 32);
    const ranges = mapRanges(plan, poolSupports(caffe)[4]!, Math.ceil((1000 + 198) / 32));
    assert.equal(ranges.at(-1)!.to, Math.ceil((1000 + 198) / 32));
  } finally {
    keras.dispose();
    caffe.dispose();
  }
});

// Two ways through the body: blocks 1-3 in image tiles then blocks 4-5 in windows of the
// stitched block3_pool (the default while that map fits half the budget), or all five blocks
// in image tiles (a budget too small for it).
const TWO_STAGES = { tileSize: 384 }, ONE_STAGE = { tileSize: 384, memoryBudget: 400_000 };
const cases: { kind: FcnKind; style: FcnStyle; atOnce?: boolean; body: typeof TWO_STAGES | typeof ONE_STAGE }[] = [
  { kind: 'fcn8', style: 'keras', body: TWO_STAGES },
  { kind: 'fcn8', style: 'caffe', atOnce: true, body: TWO_STAGES },
  { kind: 'fcn16', style: 'caffe', body: ONE_STAGE },
  { kind: 'fcn32', style: 'keras', body: ONE_STAGE },
  { kind: 'fcn8', style: 'caffe', body: ONE_STAGE },
];

for (const { kind, style, atOnce, body } of cases) {
  const stages = body === TWO_STAGES ? 'blocks 1-3 and 4-5 apart' : 'all blocks in image tiles';
  test(`${kind} ${style}${atOnce ? ' at-once' : ''}, ${stages}: tiled logits and labels equal the whole image's, every pixel, within the tolerance`, () => {
    // Not a multiple of 32 either way, so the keras padding and caffe's ceil pooling meet the tiles.
    const rgb = picture(611, 457, 1);
    const m = model(kind, style, atOnce);
    try {
      const whole = segmentImage(m, rgb, { logits: true, tiling: 'whole' });
      const tiled = segmentImage(m, rgb, { logits: true, probabilities: true, tiling: 'tiled', ...body });
      assert.equal(whole.plan.tiled, false);
      const { tiles, poolWindows, headWindows, outputWindows } = tiled.plan;
      assert.ok(tiles >= 4 && headWindows >= 2 && outputWindows >= 2, `several windows in every stage: ${JSON.stringify(tiled.plan)}`);
      assert.ok(body === TWO_STAGES ? poolWindows >= 2 : poolWindows === 0, `${stages}: ${JSON.stringify(tiled.plan)}`);
      const a = whole.logits!, b = tiled.logits!;
      const K = m.numClasses, plane = rgb.width * rgb.height;
      let scale = 0, worst = 0;
      for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(a[i]!));
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      assert.ok(scale > 1, `logits of some size (${scale})`);
      const tol = RELATIVE_TOLERANCE * scale;
      assert.ok(worst <= tol, `largest difference ${worst} over ${tol}`);
      let differing = 0, varied = new Set<number>();
      for (let p = 0; p < plane; p++) {
        varied.add(whole.labels[p]!);
        if (whole.labels[p] === tiled.labels[p]) continue;
        // Allowed only at a near tie of the whole image's two best scores.
        const scores = Array.from({ length: K }, (_, c) => a[c * plane + p]!).sort((x, y) => y - x);
        assert.ok(scores[0]! - scores[1]! <= 2 * tol, `pixel ${p}: labels ${whole.labels[p]} vs ${tiled.labels[p]} with a gap of ${scores[0]! - scores[1]!}`);
        differing++;
      }
      assert.ok(varied.size >= 2, 'the label map is not one class');
      assert.ok(differing <= plane * 1e-4, `${differing} labels differ`);
      // Probabilities: a softmax of the logits per pixel.
      const probs = tiled.probabilities!;
      for (const p of [0, 12345, plane - 1]) {
        let sum = 0;
        for (let c = 0; c < K; c++) sum += probs[c * plane + p]!;
        assert.ok(Math.abs(sum - 1) < 1e-5, `probabilities of pixel ${p} sum to ${sum}`);
        assert.ok(probs[tiled.labels[p]! * plane + p]! >= Math.max(...Array.from({ length: K }, (_, c) => probs[c * plane + p]!)) - 1e-7);
      }
    } finally {
      m.dispose();
    }
  });
}

test('auto: whole while the estimate fits the memory budget, tiled above it', () => {
  const m = model('fcn8', 'keras');
  try {
    const rgb = picture(400, 300, 2);
    const estimate = wholeImageBytes(m, 300, 400);
    assert.equal(segmentImage(m, rgb, { memoryBudget: estimate }).plan.tiled, false);
    const small = segmentImage(m, rgb, { memoryBudget: estimate / 20 });
    assert.equal(small.plan.tiled, true);
    assert.ok(small.plan.tiles >= 2, JSON.stringify(small.plan));
    assert.throws(() => segmentImage(m, rgb, { tiling: 'tiled', tileSize: 100 }), /tileSize must be a multiple of 32 of at least \d+ for this model, got 100/);
  } finally {
    m.dispose();
  }
});
