// The int8 inference ops against exact references: convForwardInt8 (integer sums, then scale,
// bias and ReLU in float64), the activation mode this CPU's kernels call for (8-bit with VNNI,
// 7-bit without), uint8 max pooling, quantizing and dequantizing reorders, absMax, the int8
// dtype itself, and the errors of each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor } from '../../src/engine/binding.js';
import { cpuFeatures, int8SevenBitActivations } from '../../src/engine/config.js';
import { activationLevels } from '../../src/nn/activation-scales.js';
import * as ref from './reference.js';
import { int8Sums, randomInts } from './kernel-probe.js';

const FWD_TOL = 1e-5; // float32 output vs the exact value, relative to the largest one

const numel = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

interface Int8ConvParams {
  stride: number;
  /** top, left, bottom, right */
  padding: [number, number, number, number];
}

/** acc[n,o,i,j] = Σ x·w, exactly (integers far below 2^53). */
function integerConv(x: number[], xDims: number[], w: number[], wDims: number[], p: Int8ConvParams): ref.Arr {
  const [N, C, H, W] = xDims;
  const [O, I, KH, KW] = wDims;
  assert.equal(I, C);
  const [pt, pl, pb, pr] = p.padding, s = p.stride;
  const OH = Math.floor((H + pt + pb - KH) / s) + 1, OW = Math.floor((W + pl + pr - KW) / s) + 1;
  const acc = ref.arr([N, O, OH, OW]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oi = 0; oi < OH; oi++)
        for (let oj = 0; oj < OW; oj++) {
          let sum = 0;
          for (let c = 0; c < C; c++)
            for (let ki = 0; ki < KH; ki++) {
              const i = oi * s - pt + ki;
              if (i < 0 || i >= H) continue;
              for (let kj = 0; kj < KW; kj++) {
                const j = oj * s - pl + kj;
                if (j < 0 || j >= W) continue;
                sum += x[((n * C + c) * H + i) * W + j] * w[((o * I + c) * KH + ki) * KW + kj];
              }
            }
          acc.data[((n * O + o) * OH + oi) * OW + oj] = sum;
        }
  return acc;
}

/** The contract: y = relu?(scales[o] · (acc + bias[o])), in float64. */
function scaled(acc: ref.Arr, scales: Float32Array, bias: number[] | null, relu: boolean): ref.Arr {
  const [N, O, OH, OW] = acc.dims;
  const y = ref.arr(acc.dims);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let k = 0; k < OH * OW; k++) {
        const at = (n * O + o) * OH * OW + k;
        const v = scales[o] * (acc.data[at] + (bias ? Math.fround(bias[o]) : 0));
        y.data[at] = relu ? Math.max(0, v) : v;
      }
  return y;
}

const saturateU8 = (v: number) => Math.min(255, Math.max(0, Math.round(v)));

/** |got − round(want)| ≤ 1 everywhere (float32 rounding can move a value across a .5). */
function assertUint8Near(got: Uint8Array, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length);
  let off = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - saturateU8(want[i]));
    assert.ok(d <= 1, `${what}: element ${i} is ${got[i]}, expected ${saturateU8(want[i])} (${want[i]})`);
    if (d) off++;
  }
  assert.ok(off <= Math.max(2, got.length / 100), `${what}: ${off} of ${got.length} values off by one`);
}

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  stride: number;
  padding: [number, number, number, number];
  /** Value ranges: every x ≤ 127 or every |w| ≤ 64 keeps the sums exact on every CPU. */
  xMax: number;
  wMax: number;
}

const cases: ConvCase[] = [
  { name: '3×3 pad 1, 16 → 20', x: [2, 16, 9, 7], w: [20, 16, 3, 3], stride: 1, padding: [1, 1, 1, 1], xMax: 255, wMax: 64 },
  { name: '3×3 pad 1, 3 → 8 (an image\'s channels)', x: [1, 3, 10, 9], w: [8, 3, 3, 3], stride: 1, padding: [1, 1, 1, 1], xMax: 255, wMax: 64 },
  { name: '3×3 pad 1, 13 → 11, full-range weights', x: [1, 13, 6, 8], w: [11, 13, 3, 3], stride: 1, padding: [1, 1, 1, 1], xMax: 127, wMax: 127 },
  { name: '7×7 pad 0, 13 → 11', x: [1, 13, 9, 8], w: [11, 13, 7, 7], stride: 1, padding: [0, 0, 0, 0], xMax: 255, wMax: 64 },
  { name: '7×7 pad 3, 8 → 12', x: [1, 8, 6, 5], w: [12, 8, 7, 7], stride: 1, padding: [3, 3, 3, 3], xMax: 127, wMax: 127 },
  { name: '1×1, 40 → 21', x: [2, 40, 3, 4], w: [21, 40, 1, 1], stride: 1, padding: [0, 0, 0, 0], xMax: 255, wMax: 64 },
  { name: '3×3 stride 2, uneven padding, 24 → 5', x: [1, 24, 9, 8], w: [5, 24, 3, 3], stride: 2, padding: [1, 0, 2, 1], xMax: 255, wMax: 64 },
];

/** Scales that put the largest |acc| of each channel near 300: uint8 outputs saturate somewhere. */
function scalesFor(acc: ref.Arr): Float32Array {
  const [N, O, OH, OW] = acc.dims;
  const scales = new Float32Array(O);
  for (let o = 0; o < O; o++) {
    let m = 1;
    for (let n = 0; n < N; n++) for (let k = 0; k < OH * OW; k++) m = Math.max(m, Math.abs(acc.data[(n * O + o) * OH * OW + k]));
    scales[o] = 300 / m;
  }
  return scales;
}

for (const c of cases) {
  test(`convForwardInt8 ${c.name}: every bias/ReLU/output combination matches the exact sums`, () => {
    const xv = randomInts(numel(c.x), 11, 0, c.xMax), wv = randomInts(numel(c.w), 12, -c.wMax, c.wMax);
    const p = { stride: c.stride, padding: c.padding };
    const acc = integerConv(xv, c.x, wv, c.w, p);
    const scales = scalesFor(acc);
    // Bias in accumulator units, up to a third of the channel's range either way.
    const biasv = Array.from(scales, (s, o) => ((o % 5) - 2) * (100 / s) * 0.33 + 0.25);
    const xt = native.fromArray(c.x, Uint8Array.from(xv));
    const wt = native.fromArray(c.w, Int8Array.from(wv));
    const bt = native.fromArray([c.w[0]], Float32Array.from(biasv));
    assert.equal(wt.dtype, 'int8');
    let cache: Tensor | null = null;
    for (const bias of [false, true])
      for (const relu of [false, true])
        for (const output of ['uint8', 'float32'] as const) {
          const what = `${bias ? 'bias' : 'no bias'}, ${relu ? 'ReLU' : 'no ReLU'}, ${output}`;
          const r = native.convForwardInt8(xt, wt, bias ? bt : null, { stride: [c.stride, c.stride], padding: c.padding, relu, scales, output, weightsCache: cache });
          if (r.weightsCache) {
            cache?.dispose();
            cache = r.weightsCache;
          }
          const want = scaled(acc, scales, bias ? biasv : null, relu);
          assert.deepEqual(r.y.dims, want.dims, what);
          assert.equal(r.y.dtype, output, what);
          if (output === 'float32') {
            const e = ref.relError(r.y.toArray() as Float32Array, want.data);
            assert.ok(e < FWD_TOL, `${what}: error ${e}`);
          } else {
            const got = r.y.toArray() as Uint8Array;
            assertUint8Near(got, want.data, what);
            assert.ok(got.includes(255) && (relu || bias ? got.includes(0) : true), `${what}: the case reaches saturation`);
          }
          r.y.dispose();
        }
    assert.ok(cache, 'the first call hands back the prepared weights');
    // With the prepared copy given, none is made again.
    const again = native.convForwardInt8(xt, wt, bt, { stride: [c.stride, c.stride], padding: c.padding, scales, output: 'float32', weightsCache: cache });
    assert.equal(again.weightsCache, null);
    assert.ok(ref.relError(again.y.toArray() as Float32Array, scaled(acc, scales, biasv, false).data) < FWD_TOL);
    for (const t of [xt, wt, bt, cache, again.y]) t?.dispose();
  });
}

const cpu = cpuFeatures();
const sevenBit = int8SevenBitActivations(cpu);

// A signed input (the first layer's image, quantized to int8): exact sums with VNNI; without
// it oneDNN adds 128 to x and halves the weights to avoid saturating, so the sums are exactly
// those of the weights rounded to even (measured under ONEDNN_MAX_CPU_ISA=AVX2).
for (const c of [
  { name: '3×3 pad 1, 3 → 64 (block1_conv1)', x: [1, 3, 12, 10], w: [64, 3, 3, 3] },
  { name: '3×3 pad 1, 16 → 20, 2 images', x: [2, 16, 7, 9], w: [20, 16, 3, 3] },
])
  test(`convForwardInt8 with an int8 input, ${c.name}: ${sevenBit ? 'the exact sums of the weights rounded to even' : 'the exact sums'}, uint8 and float32 out`, () => {
    const xv = randomInts(numel(c.x), 21, -128, 127), wv = randomInts(numel(c.w), 22, -127, 127);
    const p = { stride: 1, padding: [1, 1, 1, 1] as [number, number, number, number] };
    // Without VNNI the sums are those of the weights rounded to even (halved, rounded to nearest
    // even, doubled back by the output scale).
    const halved = (w: number) => 2 * (Math.abs(w / 2 - Math.trunc(w / 2)) === 0.5 ? 2 * Math.round(w / 4) : Math.round(w / 2));
    const acc = integerConv(xv, c.x, sevenBit ? wv.map(halved) : wv, c.w, p);
    const scales = scalesFor(acc);
    const biasv = Array.from(scales, (s, o) => ((o % 3) - 1) * (50 / s));
    const xt = native.fromArray(c.x, Int8Array.from(xv)), wt = native.fromArray(c.w, Int8Array.from(wv)), bt = native.fromArray([c.w[0]!], Float32Array.from(biasv));
    assert.equal(xt.dtype, 'int8');
    try {
      const opts = { stride: [1, 1] as [number, number], padding: p.padding, relu: true, scales };
      const f = native.convForwardInt8(xt, wt, bt, { ...opts, output: 'float32' });
      const u = native.convForwardInt8(xt, wt, bt, { ...opts, output: 'uint8', weightsCache: f.weightsCache });
      const want = scaled(acc, scales, biasv, true);
      const e = ref.relError(f.y.toArray() as Float32Array, want.data);
      assert.ok(e < FWD_TOL, `float32 output: error ${e}`);
      assertUint8Near(u.y.toArray() as Uint8Array, want.data, 'uint8 output');
      for (const t of [f.y, f.weightsCache, u.y, u.weightsCache]) t?.dispose();
    } finally {
      for (const t of [xt, wt, bt]) t.dispose();
    }
  });

test(`int8 mode on ISA ${cpu.isa}: ${sevenBit ? '7-bit activations (no VNNI: full-range sums saturate, 7-bit ones are exact)' : '8-bit activations (VNNI: full-range sums are exact)'}`, () => {
  // The mode is the description's, not whatever the kernel happens to do: VNNI or not.
  assert.equal(sevenBit, !cpu.vnni);
  assert.equal(activationLevels(), sevenBit ? 127 : 255);
  const full = int8Sums(255);
  assert.ok(full.want.every((v) => Math.abs(v) < 2 ** 24), 'every sum fits float32 exactly');
  const inexact = full.want.reduce((n, v, i) => n + (full.got[i] === v ? 0 : 1), 0);
  if (sevenBit) {
    // What the 7-bit mode exists for: vpmaddubsw clips pairs of 255·127 to 32767.
    assert.ok(inexact > 0, `ISA ${cpu.isa} is described without VNNI, yet all ${full.want.length} full-range sums are exact`);
  } else {
    for (let i = 0; i < full.want.length; i++) assert.equal(full.got[i], full.want[i], `sum ${i} of full-range u8 × s8 inputs on ISA ${cpu.isa}`);
  }
  // 7-bit inputs with full-range weights (pairs ≤ 127·128·2 = 32512) are exact on every kernel.
  const seven = int8Sums(127);
  for (let i = 0; i < seven.want.length; i++) assert.equal(seven.got[i], seven.want[i], `sum ${i} of 7-bit u8 × s8 inputs on ISA ${cpu.isa}`);
});

test('convForwardInt8: the bias joins the sum before the scale (not added after it)', () => {
  // One input pixel, one weight: acc = 10·3 = 30; scale 0.5, bias 4 → 0.5·(30 + 4) = 17 (not 19).
  const x = native.fromArray([1, 1, 1, 1], Uint8Array.from([10]));
  const w = native.fromArray([1, 1, 1, 1], Int8Array.from([3]));
  const b = native.fromArray([1], Float32Array.from([4]));
  const { y, weightsCache } = native.convForwardInt8(x, w, b, { scales: Float32Array.from([0.5]), output: 'float32' });
  assert.deepEqual(Array.from(y.toArray()), [17]);
  for (const t of [x, w, b, y, weightsCache]) t?.dispose();
});

test('convForwardInt8: clip bounds the ReLU (7-bit outputs), and clip and ReLU primitives are told apart', () => {
  // x·1 scaled by 1, bias −3: ReLU gives max(v − 3, 0); clip 127 also caps it at 127.
  const x = native.fromArray([1, 1, 1, 6], Uint8Array.from([0, 2, 50, 130, 200, 255]));
  const w = native.fromArray([1, 1, 1, 1], Int8Array.from([1]));
  const b = native.fromArray([1], Float32Array.from([-3]));
  const run = (clip?: number) => {
    const { y, weightsCache } = native.convForwardInt8(x, w, b, { relu: true, ...(clip !== undefined ? { clip } : {}), scales: Float32Array.from([1]), output: 'uint8' });
    const v = Array.from(y.toArray());
    for (const t of [y, weightsCache]) t?.dispose();
    return v;
  };
  assert.deepEqual(run(), [0, 0, 47, 127, 197, 252]);
  assert.deepEqual(run(127), [0, 0, 47, 127, 127, 127]);
  assert.deepEqual(run(), [0, 0, 47, 127, 197, 252]);
  assert.throws(() => native.convForwardInt8(x, w, b, { clip: 127, scales: Float32Array.from([1]), output: 'uint8' }), /^RangeError: convForwardInt8: clip bounds the ReLU: it needs relu: true/);
  assert.throws(() => native.convForwardInt8(x, w, b, { relu: true, clip: -1, scales: Float32Array.from([1]), output: 'uint8' }), /^RangeError: convForwardInt8: clip must be a positive finite number/);
  for (const t of [x, w, b]) t.dispose();
});

test('convForwardInt8: distinct scales get distinct primitives (the cache key holds them)', () => {
  const x = native.fromArray([1, 2, 2, 2], Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
  const w = native.fromArray([2, 2, 1, 1], Int8Array.from([1, 0, 0, 1]));
  const run = (s: number[]) => {
    const { y, weightsCache } = native.convForwardInt8(x, w, null, { scales: Float32Array.from(s), output: 'float32' });
    const v = Array.from(y.toArray());
    y.dispose();
    weightsCache?.dispose();
    return v;
  };
  assert.deepEqual(run([1, 1]), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(run([2, 0.5]), [2, 4, 6, 8, 2.5, 3, 3.5, 4]);
  assert.deepEqual(run([1, 1]), [1, 2, 3, 4, 5, 6, 7, 8]);
  x.dispose();
  w.dispose();
});

test('int8 conv → uint8 max pool → int8 conv, in the layouts the primitives chose, equals the reference', () => {
  const xDims = [1, 19, 12, 10];
  const w1Dims = [24, 19, 3, 3], w2Dims = [13, 24, 3, 3];
  const xv = randomInts(numel(xDims), 21, 0, 255);
  const w1v = randomInts(numel(w1Dims), 22, -64, 64), w2v = randomInts(numel(w2Dims), 23, -64, 64);
  const b1v = Array.from({ length: 24 }, (_, o) => (o - 12) * 37.5), b2v = Array.from({ length: 13 }, (_, o) => (o - 6) * 51.25);
  const pad: [number, number, number, number] = [1, 1, 1, 1];
  const acc1 = integerConv(xv, xDims, w1v, w1Dims, { stride: 1, padding: pad });
  const s1 = scalesFor(acc1);
  const xt = native.fromArray(xDims, Uint8Array.from(xv));
  const w1 = native.fromArray(w1Dims, Int8Array.from(w1v)), w2 = native.fromArray(w2Dims, Int8Array.from(w2v));
  const b1 = native.fromArray([24], Float32Array.from(b1v)), b2 = native.fromArray([13], Float32Array.from(b2v));
  const c1 = native.convForwardInt8(xt, w1, b1, { padding: pad, relu: true, scales: s1, output: 'uint8' });
  assert.notEqual(c1.y.layout, 'plain', 'the first conv chose its own layout');
  const y1 = c1.y.toArray() as Uint8Array;
  assertUint8Near(y1, scaled(acc1, s1, b1v, true).data, 'conv 1');

  // Pooling keeps the conv's layout and dtype, and is exact on the values it got.
  const pool = native.maxPoolForward(c1.y, { kernel: 2 });
  assert.equal(pool.workspace, null);
  assert.equal(pool.y.dtype, 'uint8');
  assert.notEqual(pool.y.layout, 'plain', 'pooled in the conv\'s layout');
  const pooledRef = ref.maxPool(ref.arr(c1.y.dims, y1), 2, false);
  assert.deepEqual(Array.from(pool.y.toArray()), Array.from(pooledRef.data));

  // The second conv reads the pooled tensor in its layout; its reference starts from the
  // values the engine pooled (the first conv's rounding is checked above).
  const pooled = Array.from(pooledRef.data);
  const acc2 = integerConv(pooled, pooledRef.dims, w2v, w2Dims, { stride: 1, padding: pad });
  const s2 = scalesFor(acc2);
  const c2 = native.convForwardInt8(pool.y, w2, b2, { padding: pad, relu: false, scales: s2, output: 'float32' });
  const e = ref.relError(c2.y.toArray() as Float32Array, scaled(acc2, s2, b2v, false).data);
  assert.ok(e < FWD_TOL, `conv 2 error ${e}`);
  // The same input handed over plain gives the same result.
  const plainPooled = native.reorder(pool.y);
  assert.equal(plainPooled.layout, 'plain');
  const c3 = native.convForwardInt8(plainPooled, w2, b2, { padding: pad, scales: s2, output: 'float32', weightsCache: c2.weightsCache });
  assert.deepEqual(Array.from(c3.y.toArray()), Array.from(c2.y.toArray()));
  for (const t of [xt, w1, w2, b1, b2, c1.y, c1.weightsCache, pool.y, c2.y, c2.weightsCache, plainPooled, c3.y, c3.weightsCache]) t?.dispose();
});

test('reorder with a scale quantizes (round to nearest even, saturating) and dequantizes', () => {
  const v = Float32Array.from([0.25, 0.75, 1.25, -0.25, -1, 127.75, 63.75, 1000, -1000, 0.1]);
  const f = native.fromArray([10], v);
  const u8 = native.reorder(f, { dtype: 'uint8', scale: 2 });
  assert.equal(u8.dtype, 'uint8');
  // 0.5 → 0, 1.5 → 2, 2.5 → 2 (ties to even); below 0 → 0; above 255 → 255.
  assert.deepEqual(Array.from(u8.toArray()), [0, 2, 2, 0, 0, 255, 128, 255, 0, 0]);
  const s8 = native.reorder(f, { dtype: 'int8', scale: 2 });
  assert.equal(s8.dtype, 'int8');
  assert.ok(s8.toArray() instanceof Int8Array);
  assert.deepEqual(Array.from(s8.toArray()), [0, 2, 2, 0, -2, 127, 127, 127, -128, 0]);

  // Round trip: q/s quantized with s gives q back exactly; dequantized with 1/s, q/s again.
  const s = 255 / 6.5;
  const q = randomInts(2 * 7 * 5 * 3, 31, 0, 255);
  const x = native.fromArray([2, 7, 5, 3], Float32Array.from(q, (k) => k / s));
  const xq = native.reorder(x, { dtype: 'uint8', scale: s });
  assert.deepEqual(Array.from(xq.toArray()), q);
  const back = native.reorder(xq, { dtype: 'float32', scale: 1 / s });
  assert.ok(ref.relError(back.toArray() as Float32Array, q.map((k) => k / s)) < 1e-6);

  // Into and out of a blocked layout (like a uint8 tensor an int8 conv wrote).
  const w = native.fromArray([7, 7, 1, 1], Int8Array.from({ length: 49 }, (_, i) => (i % 8 === 0 ? 1 : 0)));
  const blocked = native.convForwardInt8(xq, w, null, { scales: new Float32Array(7).fill(1), output: 'uint8' });
  assert.notEqual(blocked.y.layout, 'plain');
  assert.deepEqual(Array.from(blocked.y.toArray()), q, 'identity weights');
  const xqBlocked = native.reorder(x, { dtype: 'uint8', scale: s, like: blocked.y });
  assert.equal(xqBlocked.layout.replace(/:\d+:/, ':'), blocked.y.layout.replace(/:\d+:/, ':'));
  assert.deepEqual(Array.from(xqBlocked.toArray()), q);
  const deq = native.reorder(blocked.y, { dtype: 'float32', scale: 1 / s, like: blocked.y });
  assert.equal(deq.dtype, 'float32');
  assert.ok(ref.relError(deq.toArray() as Float32Array, q.map((k) => k / s)) < 1e-6);
  for (const t of [f, u8, s8, x, xq, back, w, blocked.y, blocked.weightsCache, xqBlocked, deq]) t?.dispose();
});

test('absMax over plain, blocked, bfloat16 and NaN-holding tensors', () => {
  const v = Float32Array.from({ length: 2 * 20 * 3 * 5 }, (_, i) => Math.sin(i * 0.7) * (i % 13));
  const want = v.reduce((m, a) => Math.max(m, Math.abs(a)), 0);
  const t = native.fromArray([2, 20, 3, 5], v);
  assert.equal(native.absMax(t), want);
  // The largest magnitude negative.
  const neg = native.fromArray([3], Float32Array.from([1, -7.5, 2]));
  assert.equal(native.absMax(neg), 7.5);
  // A blocked layout with padded channels (20 in blocks of 8: 4 zeros per pixel).
  const w = native.fromArray([20, 20, 1, 1], Float32Array.from({ length: 400 }, (_, i) => (i % 21 === 0 ? -1 : 0)));
  const { y, weightsCache } = native.convForward(t, w, null, {});
  assert.notEqual(y.layout, 'plain');
  assert.equal(native.absMax(y), want);
  const bf = native.reorder(t, { dtype: 'bfloat16' });
  const bfWant = (native.reorder(bf, { dtype: 'float32' }).toArray() as Float32Array).reduce((m, a) => Math.max(m, Math.abs(a)), 0);
  assert.equal(native.absMax(bf), bfWant);
  const zeros = native.zeros([4, 4]);
  assert.equal(native.absMax(zeros), 0);
  const nan = native.fromArray([3], Float32Array.from([1, NaN, 2]));
  assert.ok(Number.isNaN(native.absMax(nan)));
  for (const a of [t, neg, w, y, weightsCache, bf, zeros, nan]) a?.dispose();
});

test('int8 tensors: fromArray, zeros, writeArray, toArray', () => {
  const a = native.fromArray([2, 3], Int8Array.from([-128, -1, 0, 1, 127, 5]));
  assert.equal(a.dtype, 'int8');
  assert.equal(a.nbytes, 6);
  const got = a.toArray();
  assert.ok(got instanceof Int8Array);
  assert.deepEqual(Array.from(got), [-128, -1, 0, 1, 127, 5]);
  const z = native.zeros([2, 3], 'int8');
  assert.equal(z.dtype, 'int8');
  native.writeArray(z, Int8Array.from([-7, 9]), 3);
  assert.deepEqual(Array.from(z.toArray()), [0, 0, 0, -7, 9, 0]);
  assert.throws(() => native.writeArray(z, Uint8Array.from([1])), (e: Error) => e instanceof TypeError && /^writeArray: the tensor is int8 but the data uint8/.test(e.message));
  const f = native.reorder(a, { dtype: 'float32' });
  assert.deepEqual(Array.from(f.toArray()), [-128, -1, 0, 1, 127, 5]);
  for (const t of [a, z, f]) t.dispose();
});

test('int8 ops refuse what does not fit, naming the op and the argument', () => {
  const x = native.fromArray([1, 4, 5, 5], new Uint8Array(100).fill(3));
  const w = native.fromArray([6, 4, 3, 3], new Int8Array(216).fill(1));
  const b = native.zeros([6]);
  const scales = new Float32Array(6).fill(0.5);
  const ok = { padding: [1, 1, 1, 1] as [number, number, number, number], scales, output: 'uint8' as const };
  const xf = native.zeros([1, 4, 5, 5]);
  const wu = native.zeros([6, 4, 3, 3], 'uint8');
  const R = RangeError, T = TypeError;
  const cases: [() => unknown, typeof TypeError | typeof RangeError, RegExp][] = [
    // sizes and shapes
    [() => native.convForwardInt8(native.zeros([1, 4, 2, 2], 'uint8'), w, null, { ...ok, padding: [0, 0, 0, 0] }), R, /^convForwardInt8: input 1x4x2x2 is too small for kernel 6x4x3x3/],
    [() => native.convForwardInt8(x, native.zeros([6, 5, 3, 3], 'int8'), null, ok), R, /^convForwardInt8: input has 4 channels but the weights expect 5/],
    [() => native.convForwardInt8(native.zeros([4, 5, 5], 'uint8'), w, null, ok), R, /^convForwardInt8: x must be N,C,H,W \(rank 4\), got 4x5x5/],
    [() => native.convForwardInt8(x, w, native.zeros([5]), ok), R, /^convForwardInt8: bias is 5, expected 6/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: new Float32Array(5).fill(1) }), R, /^convForwardInt8: scales has 5 values but the weights have 6 output channels/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: new Float32Array(0) }), R, /^convForwardInt8: scales has 0 values/],
    [() => native.convForwardInt8(x, w, null, { ...ok, stride: [0, 1] }), R, /^convForwardInt8: stride must be ≥ 1, got \[0, 1\]/],
    // values
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: Float32Array.from([1, 1, 0, 1, 1, 1]) }), R, /^convForwardInt8: scales\[2\] must be a finite number > 0, got 0/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: Float32Array.from([1, 1, 1, -1, 1, 1]) }), R, /scales\[3\] must be a finite number > 0, got -1/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: Float32Array.from([1, NaN, 1, 1, 1, 1]) }), R, /scales\[1\] must be a finite number > 0, got NaN/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: Float32Array.from([1, 1, 1, 1, 1, Infinity]) }), R, /scales\[5\]/],
    [() => native.convForwardInt8(x, w, null, { ...ok, output: 'int8' as never }), R, /^convForwardInt8: output must be one of 'uint8', 'float32', got 'int8'/],
    // kinds and dtypes
    [() => native.convForwardInt8(x, w, null, { ...ok, output: undefined as never }), T, /^convForwardInt8: output must be given/],
    [() => native.convForwardInt8(x, w, null, { ...ok, output: 8 as never }), T, /output must be a string/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: undefined as never }), T, /^convForwardInt8: scales must be given/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: [1, 1, 1, 1, 1, 1] as never }), T, /scales must be a Float32Array, got an array/],
    [() => native.convForwardInt8(x, w, null, { ...ok, scales: new Float64Array(6).fill(1) as never }), T, /scales must be a Float32Array, got a typed array/],
    [() => native.convForwardInt8(xf, w, null, ok), T, /^convForwardInt8: x must be uint8 or int8, got float32/],
    [() => native.convForwardInt8(x, wu, null, ok), T, /^convForwardInt8: weights must be int8, got uint8/],
    [() => native.convForwardInt8(x, w, native.zeros([6], 'int32'), ok), T, /^convForwardInt8: bias must be float32, got int32/],
    [() => native.convForwardInt8(x, w, null, { ...ok, relu: 1 as never }), T, /relu must be a boolean/],
    [() => native.convForwardInt8(x, w, null, { ...ok, weightsCache: {} as never }), T, /weightsCache must be a Tensor/],
    // pooling and the rest
    [() => native.maxPoolForward(x, { training: true }), T, /^maxPoolForward: x is uint8, which max pooling takes for inference only/],
    [() => native.maxPoolForward(native.zeros([1, 4, 4, 4], 'int8'), {}), T, /^maxPoolForward: x must be float32, bfloat16 or uint8, got int8/],
    [() => native.absMax(x), T, /^absMax: tensor must be float32 or bfloat16, got uint8/],
    [() => native.reorder(xf, { dtype: 'uint8', scale: 0 }), R, /^reorder: scale must be a finite nonzero number, got 0/],
    [() => native.reorder(xf, { dtype: 'uint8', scale: NaN }), R, /^reorder: scale must be a finite number, got NaN/],
    [() => native.reorder(xf, { dtype: 'uint8', scale: 1e300 }), R, /^reorder: scale must be within float32's range, got 1e\+300/],
    [() => native.reorder(xf, { dtype: 'uint8', scale: '2' as never }), T, /^reorder: scale must be a number/],
    [() => native.zeros([2], 'int4' as never), R, /^zeros: unknown dtype 'int4' \(float32, bfloat16, uint8, int8, int32\)/],
    [() => native.fromArray([2], new Int16Array(2) as never), T, /^fromArray: data must be a Float32Array, Uint16Array \(bfloat16\), Uint8Array, Int8Array or Int32Array/],
  ];
  for (const [fn, kind, pattern] of cases) assert.throws(fn, (e: Error) => e.constructor === kind && pattern.test(e.message), String(pattern));
  // Weights in a layout of their own (a prepared copy) are not taken as the weights.
  const prepared = native.convForwardInt8(x, w, null, ok);
  assert.ok(prepared.weightsCache);
  assert.throws(() => native.convForwardInt8(x, prepared.weightsCache!, null, ok), /^TypeError: convForwardInt8: the weights must be in the plain layout/);
  for (const t of [x, w, b, xf, wu, prepared.y, prepared.weightsCache]) t?.dispose();
});
