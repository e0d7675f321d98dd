// The upsampling as a phase convolution (algorithm 'subpixel'): an ordinary convolution with
// stride² times the output channels followed by depth to space must compute the transposed
// convolution itself, checked against the plain-loop reference and oneDNN's transposed kernel,
// with and without bias and ReLU, for FCN's upsampling shapes (4/2 pad 1, 16/8 pad 4) and odd
// sizes and channel counts that exercise every phase and tap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor } from '../../src/engine/binding.js';
import { configureEngine, cpuFeatures } from '../../src/engine/config.js';
import * as ref from './reference.js';

configureEngine({ threads: 2 });
const toTensor = (a: ref.Arr) => native.fromArray(a.dims, Float32Array.from(a.data));
const values = (t: Tensor) => {
  const f = t.dtype === 'float32' ? t : native.reorder(t, { dtype: 'float32' });
  const v = Array.from(f.toArray() as Float32Array);
  if (f !== t) f.dispose();
  return v;
};

const cases = [
  { name: '4/2 pad 1 (the 2× upsamplings)', x: [1, 21, 5, 7], w: [21, 21, 4, 4], stride: 2, pad: 1, bias: false, relu: false },
  { name: '16/8 pad 4 (FCN-8s\' final 8×)', x: [1, 21, 4, 3], w: [21, 21, 16, 16], stride: 8, pad: 4, bias: false, relu: false },
  { name: '3/3 pad 0, 5 → 7 channels, bias and ReLU, 2 images', x: [2, 5, 3, 4], w: [7, 5, 3, 3], stride: 3, pad: 0, bias: true, relu: true },
  { name: '8/4 pad 2, bias and ReLU, 2 images', x: [2, 3, 3, 5], w: [5, 3, 8, 8], stride: 4, pad: 2, bias: true, relu: true },
];

for (const c of cases)
  test(`transposed ${c.name}: 'subpixel' equals the reference and the direct kernel`, () => {
    const x = ref.randomArr(c.x, 11, 1), w = ref.randomArr(c.w, 12, 0.5), b = c.bias ? ref.randomArr([c.w[0]!], 13, 0.3) : null;
    const yRef = ref.conv(x, w, b, { stride: c.stride, pad: c.pad, relu: c.relu, transposed: true });
    const xt = toTensor(x), wt = toTensor(w), bt = b ? toTensor(b) : null;
    const opts = { stride: [c.stride, c.stride] as [number, number], padding: [c.pad, c.pad, c.pad, c.pad] as [number, number, number, number], transposed: true, relu: c.relu };
    try {
      const sub = native.convForward(xt, wt, bt, { ...opts, algorithm: 'subpixel' });
      const direct = native.convForward(xt, wt, bt, { ...opts, algorithm: 'direct' });
      try {
        assert.deepEqual(sub.y.dims, yRef.dims);
        const ys = values(sub.y), yd = values(direct.y);
        assert.ok(ref.relError(ys, yRef.data) < 1e-5, `error against the reference ${ref.relError(ys, yRef.data)}`);
        assert.ok(ref.relError(ys, yd) < 1e-5, `error against the direct kernel ${ref.relError(ys, yd)}`);
        // The phase weights come back as a cache; given back, they are used as they are (no
        // new cache, the same output); a cache of another layout (the direct kernel's) is not.
        assert.ok(sub.weightsCache, 'the phase weights are handed back');
        const again = native.convForward(xt, wt, bt, { ...opts, algorithm: 'subpixel', weightsCache: sub.weightsCache });
        assert.equal(again.weightsCache, null);
        assert.deepEqual(values(again.y), ys);
        again.y.dispose();
        const other = native.convForward(xt, wt, bt, { ...opts, algorithm: 'subpixel', weightsCache: direct.weightsCache ?? wt });
        assert.ok(other.weightsCache && other.weightsCache.dims[0] === c.w[0]! * c.stride ** 2, 'a cache that does not fit is replaced by the phase weights');
        assert.deepEqual(values(other.y), ys);
        for (const t of [other.y, other.weightsCache]) t?.dispose();
        if (cpuFeatures().avx512) {
          const yb = native.convForward(xt, wt, bt, { ...opts, dtype: 'bfloat16', algorithm: 'subpixel' });
          assert.equal(yb.y.dtype, 'bfloat16');
          assert.ok(ref.relError(values(yb.y), yRef.data) < 2e-2, `bfloat16 error ${ref.relError(values(yb.y), yRef.data)}`);
          // Float32 output (the logits): the bfloat16 results widened exactly, in the same pass.
          const yf = native.convForward(xt, wt, bt, { ...opts, dtype: 'bfloat16', algorithm: 'subpixel', output: 'float32', weightsCache: yb.weightsCache });
          assert.equal(yf.y.dtype, 'float32');
          assert.deepEqual(yf.y.dims, yRef.dims);
          assert.deepEqual(values(yf.y), values(yb.y));
          yf.y.dispose();
          // A float32 cache does not fit the bfloat16 primitive: its own comes back.
          const yb2 = native.convForward(xt, wt, bt, { ...opts, dtype: 'bfloat16', algorithm: 'subpixel', weightsCache: sub.weightsCache });
          assert.equal(yb2.weightsCache?.dtype, 'bfloat16');
          assert.deepEqual(values(yb2.y), values(yb.y));
          for (const t of [yb.y, yb.weightsCache, yb2.y, yb2.weightsCache]) t?.dispose();
        }
      } finally {
        for (const t of [sub.y, sub.weightsCache, direct.y, direct.weightsCache]) t?.dispose();
      }
    } finally {
      for (const t of [xt, wt, bt]) t?.dispose();
    }
  });

// A kernel whose output channels read only their own input channel (FCN's bilinear upsamplings)
// takes the depthwise path: the same results, without the dense phase convolution's zeros.
const diagonalCases = [
  { name: '16/8 pad 4, 21 channels (FCN-8s\' final 8×), 2 images', x: [2, 21, 5, 4], w: [21, 21, 16, 16], stride: 8, pad: 4, bias: false, relu: false },
  { name: '4/2 pad 1, bias and ReLU', x: [1, 6, 7, 5], w: [6, 6, 4, 4], stride: 2, pad: 1, bias: true, relu: true },
  { name: '8/4 pad 2, 3 channels', x: [1, 3, 3, 6], w: [3, 3, 8, 8], stride: 4, pad: 2, bias: true, relu: false },
];
for (const c of diagonalCases)
  test(`transposed ${c.name}, channel-diagonal kernel: 'subpixel' equals the reference and the direct kernel`, () => {
    const x = ref.randomArr(c.x, 41, 1), b = c.bias ? ref.randomArr([c.w[0]!], 43, 0.3) : null;
    const dense = ref.randomArr(c.w, 42, 0.5);
    const kk = c.w[2]! * c.w[3]!;
    const w = ref.arr(c.w, dense.data.map((v, k) => (Math.floor(k / kk / c.w[1]!) === Math.floor(k / kk) % c.w[1]! ? v : 0)));
    const yRef = ref.conv(x, w, b, { stride: c.stride, pad: c.pad, relu: c.relu, transposed: true });
    const xt = toTensor(x), wt = toTensor(w), bt = b ? toTensor(b) : null;
    const opts = { stride: [c.stride, c.stride] as [number, number], padding: [c.pad, c.pad, c.pad, c.pad] as [number, number, number, number], transposed: true, relu: c.relu };
    const sub = native.convForward(xt, wt, bt, { ...opts, algorithm: 'subpixel' });
    const direct = native.convForward(xt, wt, bt, { ...opts, algorithm: 'direct' });
    try {
      assert.deepEqual(sub.y.dims, yRef.dims);
      assert.equal(sub.weightsCache, null, 'no phase weights: the kernel is read as it is');
      const ys = values(sub.y);
      assert.ok(ref.relError(ys, yRef.data) < 1e-5, `error against the reference ${ref.relError(ys, yRef.data)}`);
      assert.ok(ref.relError(ys, values(direct.y)) < 1e-5, `error against the direct kernel ${ref.relError(ys, values(direct.y))}`);
    } finally {
      for (const t of [sub.y, sub.weightsCache, direct.y, direct.weightsCache, xt, wt, bt]) t?.dispose();
    }
  });

test("'subpixel' is refused where it does not apply", () => {
  const x = native.zeros([1, 2, 3, 3]), w = native.zeros([2, 2, 3, 3]), wt = native.zeros([2, 2, 5, 5]);
  try {
    assert.throws(() => native.convForward(x, w, null, { padding: [1, 1, 1, 1], algorithm: 'subpixel' }), /transposed convolution only/);
    // kernel 5, stride 2, padding 1: the output is not 2 × the input.
    assert.throws(() => native.convForward(x, wt, null, { stride: [2, 2], padding: [1, 1, 1, 1], transposed: true, algorithm: 'subpixel' }), /output is stride × input/);
    // A float32 output from the direct kernel, or a bfloat16 one from a float32 convolution, is not offered.
    assert.throws(() => native.convForward(x, w, null, { padding: [1, 1, 1, 1], dtype: 'bfloat16', output: 'float32' }), /output 'float32' is for a bfloat16 convolution by algorithm 'subpixel' only/);
    assert.throws(() => native.convForward(x, w, null, { padding: [1, 1, 1, 1], output: 'bfloat16' }), /output 'bfloat16' is for/);
  } finally {
    for (const t of [x, w, wt]) t.dispose();
  }
});
