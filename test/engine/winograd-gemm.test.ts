// The addon's own Winograd convolution (algorithm 'winograd-gemm': F(4×4, 3×3) and F(4×4, 7×7),
// the α² products in one batched matmul) must compute the convolution itself: checked against the
// float64 plain-loop reference and oneDNN's direct kernel for 3×3 and 7×7 kernels, paddings 0, 1
// and 3, sizes that are not a multiple of the tile, odd channel counts, two images, bias and ReLU;
// with shapes that cross its chunk of tiles and its block of output channels; its transformed
// weights reused; and refused where it does not apply. (The whole network on it: test/models/winograd.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native, type Tensor } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { chooseKernel, setKernelChoice } from '../../src/engine/kernel-choice.js';
import * as ref from './reference.js';

configureEngine({ threads: 2, precision: 'float32' });
const toTensor = (a: ref.Arr) => native.fromArray(a.dims, Float32Array.from(a.data));
const values = (t: Tensor) => Float64Array.from(t.toArray() as Float32Array);
type Pad4 = [number, number, number, number];

const cases = [
  { name: '3×3 pad 1, 9×11 (not a multiple of 4), 8 → 5 channels', x: [1, 8, 9, 11], w: [5, 8, 3, 3], pad: 1, bias: true, relu: false },
  { name: '3×3 pad 0, 2 images of 13×10, 17 → 19 channels, ReLU', x: [2, 17, 13, 10], w: [19, 17, 3, 3], pad: 0, bias: true, relu: true },
  { name: '3×3 pad 1, 3 → 33 channels (the image layer), no bias', x: [1, 3, 14, 7], w: [33, 3, 3, 3], pad: 1, bias: false, relu: false },
  { name: '3×3 pad 1, 64 → 48 channels at 16×16, ReLU', x: [1, 64, 16, 16], w: [48, 64, 3, 3], pad: 1, bias: true, relu: true },
  { name: '7×7 pad 3 (conv6), 12×9, 7 → 33 channels', x: [1, 7, 12, 9], w: [33, 7, 7, 7], pad: 3, bias: true, relu: false },
  { name: '7×7 pad 0, 2 images of 11×8, 20 → 6 channels, ReLU', x: [2, 20, 11, 8], w: [6, 20, 7, 7], pad: 0, bias: true, relu: true },
  { name: '7×7 pad 3, 1×1 input (every tap but the centre in the padding)', x: [1, 9, 1, 1], w: [5, 9, 7, 7], pad: 3, bias: true, relu: false },
];

const absArr = (a: ref.Arr): ref.Arr => ({ dims: a.dims, data: a.data.map(Math.abs) });
/**
 * The largest |a − b| over the largest output of the convolution of |x| with |w| (plus |bias|):
 * a float32 dot product's rounding error is bounded by a multiple of Σ |x·w| (Higham), and so is
 * Winograd's, with a multiple that grows with its transforms' entries. Relative to the outputs
 * themselves, an output that is a small difference of large terms would look inaccurate when it
 * is not.
 */
function errorOverScale(a: ArrayLike<number>, b: ArrayLike<number>, scale: ref.Arr): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  for (const v of scale.data) m = Math.max(m, v);
  return d / m;
}

// The bounds, measured on these shapes (x uniform in ±1, weights in ±0.5; float32 ε = 6e-8):
// oneDNN's direct kernel is 1.4e-8 to 1.5e-7 from the float64 reference; F(4×4, 3×3) (points
// 0, ±1, ±2, ∞: transform entries up to 8) 7.5e-7 to 9.9e-7, and 2.3e-6 from the direct kernel
// over 1040 channels' outputs; F(4×4, 7×7) (0, ±1, ±2, ±1/2, ±5/4, ∞) 2.3e-6 to 1.2e-5, the
// worst where all but the centre tap fall in the padding (the transformed weights carry every
// tap, and their contributions cancel only to rounding), and 2.6e-5 over 1040 channels. Each
// bound leaves 2.5× headroom over the worst seen for its kernel size.
const toleranceFor = (w: number[]) => (w[2] === 7 ? 6.5e-5 : 6e-6);

for (const c of cases)
  test(`winograd-gemm ${c.name}: equals the reference and the direct kernel`, () => {
    const x = ref.randomArr(c.x, 21, 1), w = ref.randomArr(c.w, 22, 0.5), b = c.bias ? ref.randomArr([c.w[0]!], 23, 0.3) : null;
    const yRef = ref.conv(x, w, b, { stride: 1, pad: c.pad, relu: c.relu });
    const xt = toTensor(x), wt = toTensor(w), bt = b ? toTensor(b) : null;
    const opts = { padding: [c.pad, c.pad, c.pad, c.pad] as Pad4, relu: c.relu };
    const made: (Tensor | null)[] = [xt, wt, bt];
    try {
      const wino = native.convForward(xt, wt, bt, { ...opts, algorithm: 'winograd-gemm' });
      const direct = native.convForward(xt, wt, bt, { ...opts, algorithm: 'direct' });
      made.push(wino.y, wino.weightsCache, direct.y, direct.weightsCache);
      assert.deepEqual(wino.y.dims, yRef.dims);
      assert.ok(wino.weightsCache, 'the transformed weights are handed back');
      const yw = values(wino.y), yd = values(direct.y);
      const scale = ref.conv(absArr(x), absArr(w), b && absArr(b), { stride: 1, pad: c.pad });
      const errWino = errorOverScale(yw, yRef.data, scale), errDirect = errorOverScale(yd, yRef.data, scale), apart = errorOverScale(yw, yd, scale);
      const tolerance = toleranceFor(c.w);
      assert.ok(errWino < tolerance, `error against the reference ${errWino} (direct's: ${errDirect})`);
      assert.ok(apart < tolerance, `error against the direct kernel ${apart}`);
      // Again with the transformed weights: nothing transformed anew, the same computation.
      const again = native.convForward(xt, wt, bt, { ...opts, algorithm: 'winograd-gemm', weightsCache: wino.weightsCache });
      made.push(again.y);
      assert.equal(again.weightsCache, null);
      assert.deepEqual(values(again.y), yw);
      // The direct kernel's packed weights are not Winograd's: given those, they are transformed.
      if (direct.weightsCache) {
        const other = native.convForward(xt, wt, bt, { ...opts, algorithm: 'winograd-gemm', weightsCache: direct.weightsCache });
        made.push(other.y, other.weightsCache);
        assert.ok(other.weightsCache);
        assert.deepEqual(values(other.y), yw);
      }
    } finally {
      for (const t of made) t?.dispose();
    }
  });

// Chunks of tiles hold 32 MB of transformed input and products: 16 → 16 channels at 300×300
// is 5625 tiles of 36·32·4 bytes (two chunks of unequal size); 1040 output channels are a block of
// 1024 and one of 16.
for (const c of [
  { name: 'two chunks of tiles (300×300, 16 channels)', x: [1, 16, 300, 300], w: [16, 16, 3, 3], pad: 1 },
  { name: 'two blocks of output channels (1040), 3×3', x: [2, 3, 6, 5], w: [1040, 3, 3, 3], pad: 1 },
  { name: 'two blocks of output channels (1040), 7×7', x: [1, 4, 5, 6], w: [1040, 4, 7, 7], pad: 3 },
])
  test(`winograd-gemm across ${c.name} equals the direct kernel`, () => {
    const x = ref.randomArr(c.x, 31, 1), w = ref.randomArr(c.w, 32, 0.5), b = ref.randomArr([c.w[0]!], 33, 0.3);
    const xt = toTensor(x), wt = toTensor(w), bt = toTensor(b), xa = toTensor(absArr(x)), wa = toTensor(absArr(w)), ba = toTensor(absArr(b));
    const made: (Tensor | null)[] = [xt, wt, bt, xa, wa, ba];
    try {
      const opts = { padding: [c.pad, c.pad, c.pad, c.pad] as Pad4, relu: true };
      const wino = native.convForward(xt, wt, bt, { ...opts, algorithm: 'winograd-gemm' });
      const direct = native.convForward(xt, wt, bt, { ...opts, algorithm: 'direct' });
      const scale = native.convForward(xa, wa, ba, { padding: opts.padding });
      made.push(wino.y, wino.weightsCache, direct.y, direct.weightsCache, scale.y, scale.weightsCache);
      const err = errorOverScale(values(wino.y), values(direct.y), { dims: c.x, data: values(scale.y) });
      assert.ok(err < toleranceFor(c.w), `error against the direct kernel ${err}`);
    } finally {
      for (const t of made) t?.dispose();
    }
  });

test("'winograd-gemm' is refused where it does not apply, in the engine's error form", () => {
  const x = native.zeros([1, 2, 9, 9]), w3 = native.zeros([2, 2, 3, 3]), w5 = native.zeros([2, 2, 5, 5]), w32 = native.zeros([2, 2, 3, 2]);
  try {
    const msg = /^convForward: algorithm 'winograd-gemm' is for float32 stride-1 convolutions with square 3×3 or 7×7 kernels/;
    assert.throws(() => native.convForward(x, w3, null, { stride: [2, 2], algorithm: 'winograd-gemm' }), (e: Error) => e instanceof RangeError && msg.test(e.message));
    assert.throws(() => native.convForward(x, w5, null, { algorithm: 'winograd-gemm' }), (e: Error) => e instanceof RangeError && msg.test(e.message));
    assert.throws(() => native.convForward(x, w32, null, { algorithm: 'winograd-gemm' }), (e: Error) => e instanceof RangeError && msg.test(e.message));
    assert.throws(() => native.convForward(x, w3, null, { dtype: 'bfloat16', algorithm: 'winograd-gemm' }), (e: Error) => e instanceof RangeError && msg.test(e.message));
    assert.throws(() => native.convForward(x, w3, null, { transposed: true, algorithm: 'winograd-gemm' }), (e: Error) => e instanceof RangeError && msg.test(e.message));
  } finally {
    for (const t of [x, w3, w5, w32]) t.dispose();
  }
});

test('a kernel choice measured before a candidate existed is measured again with it', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'fcn-kernels-'));
  const saved = process.env.FCN_HOME;
  process.env.FCN_HOME = home;
  setKernelChoice('measure');
  try {
    const ran: string[] = [];
    const key = `test ${process.pid} ${Date.now()}`;
    chooseKernel(key, ['a', 'b'], (n) => ran.push(n));
    assert.deepEqual([...new Set(ran)].sort(), ['a', 'b']);
    ran.length = 0;
    chooseKernel(key, ['a', 'b'], (n) => ran.push(n));
    assert.equal(ran.length, 0, 'a known choice is not measured again');
    const choice = chooseKernel(key, ['a', 'b', 'c'], (n) => ran.push(n));
    assert.ok(ran.includes('c'), 'the new candidate was measured');
    assert.ok(['a', 'b', 'c'].includes(choice));
  } finally {
    if (saved === undefined) delete process.env.FCN_HOME;
    else process.env.FCN_HOME = saved;
    setKernelChoice('off');
    rmSync(home, { recursive: true, force: true });
  }
});

test('with a release, kernel candidates are timed one after another, each released before the next runs', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'fcn-kernels-'));
  const saved = process.env.FCN_HOME;
  process.env.FCN_HOME = home;
  setKernelChoice('measure');
  try {
    const events: string[] = [];
    const key = `test release ${process.pid} ${Date.now()}`;
    chooseKernel(key, ['a', 'b', 'c'], (n) => {
      if (n === 'c') throw new Error('not on this CPU');
      events.push(`run ${n}`);
    }, (n) => events.push(`release ${n}`));
    // a's first run and three timed ones, then its release; then b's; c refused, released too.
    const one = (n: string) => [...Array(4).fill(`run ${n}`), `release ${n}`];
    assert.deepEqual(events, [...one('a'), ...one('b'), 'release c']);
  } finally {
    if (saved === undefined) delete process.env.FCN_HOME;
    else process.env.FCN_HOME = saved;
    setKernelChoice('off');
    rmSync(home, { recursive: true, force: true });
  }
});
