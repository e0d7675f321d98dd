// Bounded native memory: idle buffers and cached primitives are capped (setCacheLimits), the
// least recently used released first, so evaluating images of many distinct sizes keeps both
// flat instead of keeping every size's buffers and primitives for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';

const defaults = native.setCacheLimits();

test('the defaults: 1 GiB of idle buffers, 256 primitives', () => {
  assert.deepEqual(defaults, { poolBytes: 2 ** 30, primitives: 256 });
});

test('unset, the bound on idle buffers is the larger of 1 GiB and half the most bytes ever live', () => {
  // A training step at 512² holds several GiB and takes back over 1 GiB of its own buffers each
  // step: a fixed 1 GiB freed the oldest and faulted them in again every step.
  const big = native.zeros([(2.5 * 2 ** 30) / 4]);
  try {
    const bound = native.setCacheLimits().poolBytes;
    assert.ok(bound >= 1.25 * 2 ** 30 && bound < 1.3 * 2 ** 30, `bound ${bound}`);
  } finally {
    big.dispose();
  }
  // Idle now (2.5 GiB is more than the bound): freed at release, not kept.
  assert.ok(native.poolStats().pooledBytes < 2 ** 30);
});

test('idle buffers beyond the bound are freed oldest first, and lowering the bound frees at once', () => {
  const kb = (n: number) => native.zeros([n * 256]); // n KiB of float32
  native.poolTrim(true);
  try {
    native.setCacheLimits({ poolBytes: 7 * 1024 });
    const [a, b, c] = [kb(2), kb(3), kb(4)];
    a.dispose();
    b.dispose();
    assert.equal(native.poolStats().pooledBytes, 5 * 1024);
    c.dispose(); // 9 KiB idle > 7: the oldest (a, 2 KiB) goes
    assert.deepEqual([native.poolStats().pooledBytes, native.poolStats().pooledBuffers], [7 * 1024, 2]);
    // b's size is still pooled (reused: the idle bytes drop), a's is not (a new buffer).
    const b2 = kb(3);
    assert.equal(native.poolStats().pooledBytes, 4 * 1024);
    const a2 = kb(2);
    assert.equal(native.poolStats().pooledBytes, 4 * 1024);
    a2.dispose();
    b2.dispose(); // 2 + 3 + 4 = 9 KiB: c (released before a2 and b2) goes
    assert.equal(native.poolStats().pooledBytes, 5 * 1024);
    // A buffer larger than the whole bound is freed on release.
    kb(8).dispose();
    assert.equal(native.poolStats().pooledBytes, 5 * 1024);
    // Idle now: b2 (3 KiB, released last) and a2 (2 KiB): lowering the bound to 3 KiB frees a2.
    assert.deepEqual(native.setCacheLimits({ poolBytes: 3 * 1024 }), { poolBytes: 3 * 1024, primitives: 256 });
    assert.deepEqual([native.poolStats().pooledBytes, native.poolStats().pooledBuffers], [3 * 1024, 1]);
  } finally {
    native.setCacheLimits(defaults);
  }
});

test('the primitive cache keeps at most its bound, and a bound of 0 caches nothing', () => {
  native.poolTrim(true);
  try {
    native.setCacheLimits({ primitives: 3 });
    const tensors = [1, 2, 3, 4, 5].map((n) => native.zeros([n, 4]));
    for (const t of tensors) native.reluForward(t).dispose();
    assert.equal(native.poolStats().primitives, 3);
    native.setCacheLimits({ primitives: 1 });
    assert.equal(native.poolStats().primitives, 1);
    native.setCacheLimits({ primitives: 0 });
    const y = native.reluForward(tensors[0]);
    assert.equal(native.poolStats().primitives, 0);
    assert.deepEqual(Array.from(y.toArray()), [0, 0, 0, 0], 'uncached primitives still run');
    y.dispose();
    for (const t of tensors) t.dispose();
  } finally {
    native.setCacheLimits(defaults);
  }
});

test('forward passes over 60 distinct input sizes keep idle buffers and primitives within their bounds', (t) => {
  const limits = { poolBytes: 8 * 2 ** 20, primitives: 48 };
  native.poolTrim(true);
  native.setCacheLimits(limits);
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  try {
    model.initialize(0);
    // Between passes only the parameters and the layers' prepared weights (at most one copy
    // per layer) are live: every tensor a pass makes is disposed.
    const maxLive = native.poolStats().liveBuffers + model.layers().length;
    let maxPooled = 0, maxPrimitives = 0;
    const rss: number[] = [];
    // Sizes on both sides of multiples of 32 (the model pads to them), all distinct.
    for (let i = 0; i < 60; i++) {
      const h = 40 + 16 * (i % 6) + (i % 4), w = 36 + 12 * Math.floor(i / 6) + (i % 3);
      const x = native.fromArray([1, 3, h, w], Float32Array.from({ length: 3 * h * w }, (_, k) => Math.sin(k * 0.1) * 50));
      const logits = model.predictLogits(x);
      assert.deepEqual(logits.dims, [1, 21, h, w]);
      x.dispose();
      logits.dispose();
      const s = native.poolStats();
      assert.ok(s.pooledBytes <= limits.poolBytes, `${s.pooledBytes} idle bytes after size ${h}×${w}`);
      assert.ok(s.primitives <= limits.primitives, `${s.primitives} primitives after size ${h}×${w}`);
      assert.ok(s.liveBuffers <= maxLive, `${s.liveBuffers} live buffers after size ${h}×${w}`);
      maxPooled = Math.max(maxPooled, s.pooledBytes);
      maxPrimitives = Math.max(maxPrimitives, s.primitives);
      if (i % 20 === 19) rss.push(process.memoryUsage().rss / 2 ** 20);
    }
    // The bounds were reached, so they (not a small workload) kept the counts down.
    assert.equal(maxPrimitives, limits.primitives);
    assert.ok(maxPooled > limits.poolBytes / 2, `idle bytes peaked at ${maxPooled}`);
    t.diagnostic(`RSS after 20, 40 and 60 sizes: ${rss.map((r) => r.toFixed(0)).join(', ')} MB`);
  } finally {
    model.dispose();
    native.setCacheLimits(defaults);
  }
});
