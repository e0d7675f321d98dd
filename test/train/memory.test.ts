// Native memory is freed deterministically: a long training loop keeps RSS flat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';
import { Adam } from '../../src/train/optim.js';
import { trainStep } from '../../src/train/step.js';

// Steps yield to the event loop, as the training loop does: node-api runs the finalisers of
// collected tensor wrappers only there.
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
/** RSS after a full collection and a turn of the loop (so every finaliser has run). */
async function settledRss(): Promise<number> {
  gc();
  await tick();
  gc();
  await tick();
  return process.memoryUsage().rss;
}

test('200 forward/backward steps do not grow RSS or live native buffers', async (t) => {
  const model = new FCN({ kind: 'fcn8', width: 0.125, dropout: 0.2 });
  model.initialize(0);
  const opt = new Adam({ lr: 1e-4, l2: 1e-5 });
  const H = 96, W = 80;
  const x = native.fromArray([2, 3, H, W], Float32Array.from({ length: 2 * 3 * H * W }, (_, i) => Math.sin(i) * 50));
  const y = native.fromArray([2, H, W], Uint8Array.from({ length: 2 * H * W }, (_, i) => (i % 9 === 0 ? 255 : i % 21)));
  const step = async (i: number) => {
    trainStep(model, opt, x, y, { seed: i });
    model.predictLogits(x).dispose();
    await tick();
    // Regular full collections keep V8's own heap sizing out of the measurement: what is
    // measured is native memory, which must not grow at all.
    if (i % 25 === 0) gc();
  };
  // Warm-up: primitive cache, buffer pool, JIT, allocator. Sampled every 50 steps over 900, RSS
  // rose by 10–13 MB from step 100 to 250–300, then stayed level or fell (by 4–6 MB) to the end;
  // with 100 steps of warm-up, a CI run saw 25 MB. The window starts after that rise.
  for (let i = 0; i < 300; i++) await step(i);
  const rss0 = await settledRss(), stats0 = native.poolStats();
  for (let i = 300; i < 500; i++) await step(i);
  const rss1 = await settledRss(), stats1 = native.poolStats();
  const grownMb = (rss1 - rss0) / 2 ** 20;
  // Exact: every tensor a step makes is disposed, and the pool holds the same idle buffers.
  assert.equal(stats1.liveBuffers, stats0.liveBuffers, 'every tensor a step makes is disposed');
  assert.equal(stats1.liveBytes, stats0.liveBytes);
  assert.equal(stats1.pooledBytes, stats0.pooledBytes, 'the pool does not grow');
  // RSS also moves with the C allocator's and OpenMP's own bookkeeping: over this window it grew
  // by 0.6–2.1 MB in five runs. A step's tensors take ~50 MB, so a leak of even one step's worth
  // in 200 steps is far above this bound.
  t.diagnostic(`RSS ${(rss0 / 2 ** 20).toFixed(0)} → ${(rss1 / 2 ** 20).toFixed(0)} MB over steps 300–500`);
  assert.ok(grownMb < 24, `RSS grew by ${grownMb.toFixed(1)} MB over 200 steps`);
  for (const t of [x, y]) t.dispose();
  opt.dispose();
  model.dispose();
});
