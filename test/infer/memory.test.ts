// Images of many sizes one after another: the engine's idle buffers (pooled by exact size, so
// no image of another size reuses them) are kept for an image of the same size, released
// before one of another size and whenever over the limit, so memory stays flat over a split or
// a folder of photos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { FCN } from '../../src/models/fcn.js';
import { segmentImage } from '../../src/infer/inference.js';

configureEngine({ threads: 2, precision: 'float32' });

const sizes: [number, number][] = Array.from({ length: 8 }, (_, i) => [120 + 13 * i, 90 + 7 * i]);
const image = (w: number, h: number) => ({ data: new Uint8Array(w * h * 3).map((_, i) => (i * 7) % 256), width: w, height: h });

test('idle buffers stay under the limit after every image, are reused by an image of the same size and released before one of another size', () => {
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  model.initialize(1);
  const pooled = () => native.poolStats().pooledBytes;
  try {
    native.poolTrim();
    const limit = 4 * 2 ** 20;
    for (const [w, h] of sizes) {
      segmentImage(model, image(w, h), { idleBufferLimit: limit });
      assert.ok(pooled() <= limit, `${w}×${h}: ${pooled()} idle bytes over ${limit}`);
    }
    // Without a limit: what one image leaves is kept for the next of its size...
    const [a, b] = [image(...sizes[0]!), image(...sizes[1]!)];
    segmentImage(model, a, { idleBufferLimit: Infinity });
    const afterA = pooled();
    assert.ok(afterA > 0);
    segmentImage(model, a, { idleBufferLimit: Infinity });
    assert.equal(pooled(), afterA, 'the same size reuses the idle buffers');
    // ...and released before an image of another size: only the new image's are left.
    segmentImage(model, b, { idleBufferLimit: Infinity });
    const afterB = pooled();
    native.poolTrim();
    segmentImage(model, b, { idleBufferLimit: Infinity });
    assert.equal(afterB, pooled(), `after ${sizes[0]} then ${sizes[1]}, only the second's buffers are idle`);
  } finally {
    model.dispose();
    native.poolTrim();
  }
});

test('tiled inference leaves no tensor behind, also when it fails midway', () => {
  const model = new FCN({ kind: 'fcn8', width: 0.0625, style: 'caffe' });
  model.initialize(2);
  const live = () => native.poolStats().liveBytes;
  try {
    const rgb = image(420, 350);
    segmentImage(model, rgb, { tiling: 'tiled', tileSize: 320 }); // prepares every layer's weights
    const before = live();
    const r = segmentImage(model, rgb, { tiling: 'tiled', tileSize: 320 });
    assert.ok(r.plan.tiles >= 2 && r.plan.poolWindows >= 2, JSON.stringify(r.plan));
    assert.equal(live(), before, 'live bytes after a tiled image');
    // A NaN in score7's bias fails the image in the output stage, after every map was made.
    const bias = model.score7.bias!;
    bias.assign(native.fromArray(bias.dims, new Float32Array(bias.dims[0]!).fill(NaN)));
    const withNaN = live();
    assert.throws(() => segmentImage(model, rgb, { tiling: 'tiled', tileSize: 320 }), /non-finite scores/);
    assert.equal(live(), withNaN, 'live bytes after a failed tiled image');
  } finally {
    model.dispose();
    native.poolTrim();
  }
});
