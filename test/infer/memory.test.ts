// Images of many sizes one after another: the engine's idle buffers (pooled by exact size, so
// no later image of another size reuses them) are released once over the limit, so memory
// stays flat over a split or a folder of photos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { FCN } from '../../src/models/fcn.js';
import { segmentImage } from '../../src/infer/inference.js';

configureEngine({ threads: 2, precision: 'float32' });

const sizes: [number, number][] = Array.from({ length: 8 }, (_, i) => [120 + 13 * i, 90 + 7 * i]);
const image = (w: number, h: number) => ({ data: new Uint8Array(w * h * 3).map((_, i) => (i * 7) % 256), width: w, height: h });

test('idle buffers stay under the limit after every image of a new size, and pile up without it', () => {
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  model.initialize(1);
  try {
    native.poolTrim();
    const limit = 4 * 2 ** 20;
    for (const [w, h] of sizes) {
      segmentImage(model, image(w, h), { idleBufferLimit: limit });
      const idle = native.poolStats().pooledBytes;
      assert.ok(idle <= limit, `${w}×${h}: ${idle} idle bytes over ${limit}`);
    }
    // The same run without releasing: what the limit prevents.
    native.poolTrim();
    let kept = 0;
    for (const [w, h] of sizes) {
      segmentImage(model, image(w, h), { idleBufferLimit: Infinity });
      kept = native.poolStats().pooledBytes;
    }
    assert.ok(kept > 4 * limit, `without releasing, ${kept} idle bytes pile up`);
  } finally {
    model.dispose();
    native.poolTrim();
  }
});
