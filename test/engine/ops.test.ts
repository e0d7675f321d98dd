// Every engine op against a naive float64 reference: forward values, and analytic
// gradients against central differences of the reference (the finite-difference check).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor } from '../../src/engine/binding.js';
import { bf16Available, cpuFeatures } from '../../src/engine/config.js';
import * as ref from './reference.js';
import { assertBf16Refused, bf16Runs } from '../prereq.js';

const FWD_TOL = 1e-5; // float32 forward vs float64 reference, relative to the largest value
const GRAD_TOL = 1e-3; // float32 analytic gradient vs float64 central differences

const toTensor = (a: ref.Arr) => native.fromArray(a.dims, Float32Array.from(a.data));
const values = (t: Tensor) => Array.from(t.toArray() as Float32Array);
/** A spread of indices to check (all when small). */
const sample = (n: number, k = 40) => (n <= k ? [...Array(n).keys()] : Array.from({ length: k }, (_, i) => Math.floor((i * n) / k)));

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  stride: number;
  pad: number;
  relu: boolean;
  bias: boolean;
  transposed: boolean;
}

const convCases: ConvCase[] = [
  { name: '3×3 same, bias + ReLU', x: [2, 3, 7, 6], w: [4, 3, 3, 3], stride: 1, pad: 1, relu: true, bias: true, transposed: false },
  { name: '7×7 same (conv6)', x: [1, 5, 4, 3], w: [6, 5, 7, 7], stride: 1, pad: 3, relu: true, bias: true, transposed: false },
  { name: '1×1 score, no ReLU', x: [2, 8, 3, 5], w: [3, 8, 1, 1], stride: 1, pad: 0, relu: false, bias: true, transposed: false },
  // Channel counts that oneDNN stores in padded blocks (its blocked layouts, and the input
  // gradient computed as a forward convolution with transposed, flipped weights).
  { name: '3×3 same, 20 → 33 channels', x: [1, 20, 6, 5], w: [33, 20, 3, 3], stride: 1, pad: 1, relu: true, bias: true, transposed: false },
  { name: '7×7 same, 17 → 35 channels', x: [1, 17, 5, 4], w: [35, 17, 7, 7], stride: 1, pad: 3, relu: true, bias: true, transposed: false },
  { name: '1×1, 40 → 21 channels', x: [2, 40, 3, 3], w: [21, 40, 1, 1], stride: 1, pad: 0, relu: false, bias: true, transposed: false },
  { name: 'transposed 4/2 pad 1', x: [1, 3, 3, 4], w: [3, 3, 4, 4], stride: 2, pad: 1, relu: false, bias: false, transposed: true },
  { name: 'transposed 16/8 pad 4', x: [1, 2, 2, 3], w: [2, 2, 16, 16], stride: 8, pad: 4, relu: false, bias: false, transposed: true },
];

// bfloat16 compute: inputs and weights rounded to 8-bit mantissas (relative error 2⁻⁹ each),
// fp32 accumulation, bf16 outputs. Errors relative to the largest value stay near 1%; the
// tolerances are loose by that much, not tuned to pass (fp32 uses 1e-5 and 1e-3).
const BF16_FWD_TOL = 2e-2;
const BF16_GRAD_TOL = 3e-2;
/** The values as float32, whatever the tensor's dtype. */
const f32values = (t: Tensor) => {
  if (t.dtype === 'float32') return values(t);
  const f = native.reorder(t, { dtype: 'float32' });
  const v = values(f);
  f.dispose();
  return v;
};

const precisions = [
  { dtype: 'float32' as const, suffix: ': forward and gradients', fwdTol: FWD_TOL, gradTol: GRAD_TOL },
  { dtype: 'bfloat16' as const, suffix: ', bfloat16: forward and gradients within bf16 tolerance', fwdTol: BF16_FWD_TOL, gradTol: BF16_GRAD_TOL },
];

for (const pr of precisions)
  for (const c of convCases) {
    test(`conv ${c.name}${pr.suffix}`, () => {
      const x = ref.randomArr(c.x, 1, 1), w = ref.randomArr(c.w, 2, 0.5), b = c.bias ? ref.randomArr([c.w[0]], 3, 0.3) : null;
      const p = { stride: c.stride, pad: c.pad, relu: c.relu, transposed: c.transposed };
      const yRef = ref.conv(x, w, b, p);
      const xt = toTensor(x), wt = toTensor(w), bt = b ? toTensor(b) : null;
      const opts = { stride: [c.stride, c.stride] as [number, number], padding: [c.pad, c.pad, c.pad, c.pad] as [number, number, number, number], transposed: c.transposed, dtype: pr.dtype };
      if (pr.dtype === 'bfloat16' && !bf16Runs()) {
        assertBf16Refused(() => native.convForward(xt, wt, bt, { ...opts, relu: c.relu }));
        const dy = toTensor(yRef);
        assertBf16Refused(() => native.convBackwardWeights(xt, dy, { ...opts, weightsDims: c.w, bias: c.bias }));
        for (const t of [xt, wt, bt, dy]) t?.dispose();
        return;
      }
      const { y, weightsCache } = native.convForward(xt, wt, bt, { ...opts, relu: c.relu });
      assert.equal(y.dtype, pr.dtype);
      assert.deepEqual(y.dims, yRef.dims);
      const fe = ref.relError(f32values(y), yRef.data);
      assert.ok(fe < pr.fwdTol, `forward error ${fe}`);
      if (pr.dtype === 'bfloat16') assert.ok(fe > 0, 'bf16 compute actually rounds (not silently fp32)');

      // L = Σ r ⊙ y, so dL/dy = r.
      const r = ref.randomArr(yRef.dims, 4);
      const loss = (xx: ref.Arr, ww: ref.Arr, bb: ref.Arr | null) => ref.dot(ref.conv(xx, ww, bb, p), r);
      const dy = toTensor(r);
      const dpre = c.relu ? native.reluBackward(dy, y) : dy;
      const { dx } = native.convBackwardData(dpre, wt, xt, opts);
      const { dw, db } = native.convBackwardWeights(xt, dpre, { ...opts, weightsDims: c.w, bias: c.bias });
      assert.equal(dw.dtype, 'float32', 'weight gradients reach the fp32 master weights as float32');
      const ix = sample(x.data.length), iw = sample(w.data.length);
      const gx = f32values(dx), gw = values(dw);
      const nx = ref.numericGrad((a) => loss(a, w, b), x, ix), nw = ref.numericGrad((a) => loss(x, a, b), w, iw);
      const ex = ref.relError(ix.map((i) => gx[i]), nx), ew = ref.relError(iw.map((i) => gw[i]), nw);
      assert.ok(ex < pr.gradTol, `dx error ${ex}`);
      assert.ok(ew < pr.gradTol, `dw error ${ew}`);
      if (b) {
        const ib = sample(b.data.length), gb = values(db!);
        const nb = ref.numericGrad((a) => loss(x, w, a), b, ib);
        const eb = ref.relError(ib.map((i) => gb[i]), nb);
        assert.ok(eb < pr.gradTol, `db error ${eb}`);
      }
      for (const t of [xt, wt, bt, y, weightsCache, dy, dpre, dx, dw, db]) t?.dispose();
    });
  }

test('max pool, bfloat16: forward exact on bf16 values, gradient routed to the max', () => {
  const x = ref.randomArr([2, 3, 7, 5], 5);
  const xt = toTensor(x);
  const xb = native.reorder(xt, { dtype: 'bfloat16' });
  if (!bf16Runs()) {
    assertBf16Refused(() => native.maxPoolForward(xb, { kernel: 2, training: true }));
    for (const t of [xt, xb]) t.dispose();
    return;
  }
  const xr = ref.arr(x.dims, f32values(xb)); // the bf16-rounded input
  const yRef = ref.maxPool(xr, 2, false);
  const { y, workspace } = native.maxPoolForward(xb, { kernel: 2, training: true });
  assert.equal(y.dtype, 'bfloat16');
  assert.deepEqual(f32values(y), Array.from(yRef.data, Math.fround), 'max of bf16 values is exact');
  const r = ref.randomArr(yRef.dims, 6);
  const dy = native.reorder(toTensor(r), { dtype: 'bfloat16' });
  const dx = native.maxPoolBackward(dy, workspace!, xb, { kernel: 2 });
  const ix = sample(x.data.length, 70), gx = f32values(dx);
  const nx = ref.numericGrad((a) => ref.dot(ref.maxPool(a, 2, false), r), xr, ix);
  assert.ok(ref.relError(ix.map((i) => gx[i]), nx) < BF16_GRAD_TOL);
  for (const t of [xt, xb, y, workspace, dy, dx]) t?.dispose();
});

test('add and dropout in bfloat16 keep the dtype and match fp32 within bf16 rounding', () => {
  const a = ref.randomArr([1, 21, 6, 6], 21), b = ref.randomArr([1, 21, 6, 6], 22);
  const ab = native.reorder(toTensor(a), { dtype: 'bfloat16' }), bb = native.reorder(toTensor(b), { dtype: 'bfloat16' });
  if (!bf16Runs()) {
    assertBf16Refused(() => native.add(ab, bb));
    for (const t of [ab, bb]) t.dispose();
    return;
  }
  const s = native.add(ab, bb);
  assert.equal(s.dtype, 'bfloat16');
  assert.ok(ref.relError(f32values(s), a.data.map((v, i) => v + b.data[i])) < BF16_FWD_TOL);
  const { y, mask } = native.dropoutForward(ab, { rate: 0.25, seed: 3 });
  assert.equal(y.dtype, 'bfloat16');
  const m = mask.toArray() as Uint8Array, yv = f32values(y), av = f32values(ab);
  yv.forEach((v, i) => assert.ok(Math.abs(v - (m[i] ? av[i] / 0.75 : 0)) <= 1e-2 * Math.abs(av[i] / 0.75) + 1e-6));
  for (const t of [ab, bb, s, y, mask]) t.dispose();
});

for (const ceil of [false, true]) {
  test(`max pool 2×2 (${ceil ? 'ceil' : 'floor'}) forward and gradient on odd sizes`, () => {
    const x = ref.randomArr([2, 3, 7, 5], 5);
    const yRef = ref.maxPool(x, 2, ceil);
    const xt = toTensor(x);
    const { y, workspace } = native.maxPoolForward(xt, { kernel: 2, ceil, training: true });
    assert.deepEqual(y.dims, yRef.dims);
    assert.deepEqual(values(y), Array.from(yRef.data, Math.fround), 'max pooling is exact');
    const r = ref.randomArr(yRef.dims, 6);
    const dy = toTensor(r);
    const dx = native.maxPoolBackward(dy, workspace!, xt, { kernel: 2, ceil });
    const ix = sample(x.data.length, 70), gx = values(dx);
    const nx = ref.numericGrad((a) => ref.dot(ref.maxPool(a, 2, ceil), r), x, ix);
    assert.ok(ref.relError(ix.map((i) => gx[i]), nx) < GRAD_TOL);
    for (const t of [xt, y, workspace, dy, dx]) t?.dispose();
  });
}

test('relu forward and backward', () => {
  const x = ref.randomArr([1, 4, 3, 5], 7);
  const xt = toTensor(x);
  const y = native.reluForward(xt);
  // + 0 turns the −0 of a negative input times zero into 0.
  assert.deepEqual(values(y).map((v) => v + 0), Array.from(x.data, (v) => Math.fround(Math.max(0, v))));
  const r = ref.randomArr(x.dims, 8);
  const dy = toTensor(r);
  const dx = native.reluBackward(dy, y);
  assert.deepEqual(values(dx).map((v) => v + 0), Array.from(x.data, (v, i) => (v > 0 ? Math.fround(r.data[i]) : 0)));
  for (const t of [xt, y, dy, dx]) t.dispose();
});

test('add works across layouts and rejects mismatched shapes', () => {
  const a = ref.randomArr([1, 20, 4, 4], 9), b = ref.randomArr([1, 20, 4, 4], 10);
  const at = toTensor(a), bt = toTensor(b);
  // Put a into a blocked layout through a convolution's preferred output layout.
  const w = native.fromArray([20, 20, 1, 1], Float32Array.from({ length: 400 }, (_, i) => (i % 21 === 0 ? 1 : 0)));
  const { y: ablocked, weightsCache } = native.convForward(at, w, null, {});
  const s = native.add(ablocked, bt);
  assert.ok(ref.relError(values(s), a.data.map((v, i) => v + b.data[i])) < 1e-6);
  const other = native.zeros([1, 20, 4, 5]);
  assert.throws(() => native.add(at, other), /add: shapes differ/);
  for (const t of [at, bt, w, ablocked, weightsCache, s, other]) t?.dispose();
});

test('dropout: inverted scaling, seeded mask, matching backward', () => {
  const x = ref.randomArr([2, 16, 8, 8], 11);
  const xt = toTensor(x);
  const rate = 0.3;
  const a = native.dropoutForward(xt, { rate, seed: 42 });
  const b = native.dropoutForward(xt, { rate, seed: 42 });
  const c = native.dropoutForward(xt, { rate, seed: 43 });
  const mask = a.mask.toArray() as Uint8Array;
  assert.deepEqual(mask, b.mask.toArray(), 'same seed, same mask');
  assert.notDeepEqual(mask, c.mask.toArray(), 'another seed, another mask');
  const kept = mask.reduce((s, m) => s + m, 0) / mask.length;
  assert.ok(Math.abs(kept - (1 - rate)) < 0.05, `kept share ${kept}`);
  const y = values(a.y);
  y.forEach((v, i) => assert.ok(Math.abs(v - (mask[i] ? Math.fround(x.data[i]) / (1 - rate) : 0)) < 1e-5));
  // L = Σ r ⊙ y is linear in x: its gradient is r·mask/(1−p) exactly.
  const r = ref.randomArr(x.dims, 12);
  const dx = native.dropoutBackward(toTensor(r), a.mask, { rate });
  values(dx).forEach((v, i) => assert.ok(Math.abs(v - (mask[i] ? Math.fround(r.data[i]) / (1 - rate) : 0)) < 1e-5));
  assert.throws(() => native.dropoutForward(xt, { rate: 1, seed: 0 }), /rate must be in/);
});

test('dropout draws per image: a batch\'s images k… alone (firstImage k) get the masks they get in the whole batch, in any layout', () => {
  const whole = ref.randomArr([4, 16, 5, 5], 31);
  const wt = toTensor(whole);
  const all = native.dropoutForward(wt, { rate: 0.4, seed: 9 });
  const per = 16 * 5 * 5, masks = all.mask.toArray() as Uint8Array;
  const part = toTensor({ dims: [2, 16, 5, 5], data: whole.data.slice(2 * per) });
  // The share in a blocked layout, as a primitive may leave it: masks follow logical positions.
  const blocked = native.convForward(part, native.fromArray([16, 16, 1, 1], Float32Array.from({ length: 256 }, (_, i) => (i % 17 === 0 ? 1 : 0))), null, {}).y;
  for (const share of [part, blocked]) {
    const r = native.dropoutForward(share, { rate: 0.4, seed: 9, firstImage: 2 });
    assert.deepEqual(r.mask.toArray(), masks.slice(2 * per), `layout ${share.layout}`);
    assert.equal(r.y.layout, 'plain');
    r.y.dispose();
    r.mask.dispose();
  }
  // Images differ from each other (a mask per image, not one repeated).
  assert.notDeepEqual(masks.slice(0, per), masks.slice(per, 2 * per));
  for (const t of [wt, all.y, all.mask, part, blocked]) t.dispose();
});

test('view: a plain tensor\'s own memory, written through; dispose detaches it', () => {
  const t = native.fromArray([2, 3], Float32Array.of(1, 2, 3, 4, 5, 6));
  const v = native.view(t) as Float32Array;
  assert.deepEqual(Array.from(v), [1, 2, 3, 4, 5, 6]);
  v.set([7, 8], 4);
  assert.deepEqual(Array.from(t.toArray()), [1, 2, 3, 4, 7, 8]);
  t.dispose();
  assert.equal(v.length, 0, 'the view no longer reaches the freed buffer');
});

test('view of a blocked tensor: its whole buffer in layout order; a padded layout refused; reorder to a disposed tensor\'s layout', (t) => {
  const x = toTensor(ref.randomArr([1, 16, 4, 4], 3));
  const y = native.convForward(x, toTensor(ref.randomArr([16, 16, 1, 1], 4)), null, {}).y;
  if (y.layout === 'plain') return t.skip('this CPU keeps 16 channels plain');
  const v = native.view(y) as Float32Array;
  const plain = y.toArray() as Float32Array;
  assert.equal(v.length, plain.length);
  assert.deepEqual([...v].sort(), [...plain].sort(), 'the same elements, in the layout\'s order');
  assert.notDeepEqual(Array.from(v), Array.from(plain), 'not the plain order');
  // Doubling through the view doubles the tensor: the view is its memory.
  v.set(v.map((e) => 2 * e));
  assert.deepEqual(Array.from(y.toArray()), Array.from(plain, (e) => 2 * e));
  // A second tensor in y's layout, after y is gone: only the layout of `like` is read.
  const layout = y.layout;
  y.dispose();
  const z = native.reorder(toTensor(ref.randomArr([1, 16, 4, 4], 5)), { like: y });
  assert.equal(z.layout, layout);
  // 21 output channels of a weight gradient blocked by 8 or 16 carry padding: a view of it
  // would not add up element by element.
  const r = native.convBackwardWeights(x, toTensor(ref.randomArr([1, 21, 4, 4], 6)), { weightsDims: [21, 16, 1, 1], bias: false, gradLayout: 'any', algorithm: 'direct' });
  if (r.dw.nbytes > 4 * 21 * 16) assert.throws(() => native.view(r.dw), { message: /^view: the tensor's layout is padded/ });
  for (const u of [x, z, r.dw]) u.dispose();
});

test('cropPad crops, pads, and its backward is cropPad with negated offsets', () => {
  const x = ref.randomArr([1, 2, 5, 6], 13);
  const xt = toTensor(x);
  const y = native.cropPad(xt, { top: 1, left: -2, height: 7, width: 4 });
  assert.deepEqual(values(y), Array.from(ref.cropPad(x, 1, -2, 7, 4).data, Math.fround));
  const r = ref.randomArr([1, 2, 7, 4], 14);
  const dx = native.cropPad(toTensor(r), { top: -1, left: 2, height: 5, width: 6 });
  const ix = sample(x.data.length, 60), gx = values(dx);
  const nx = ref.numericGrad((a) => ref.dot(ref.cropPad(a, 1, -2, 7, 4), r), x, ix);
  assert.ok(ref.relError(ix.map((i) => gx[i]), nx) < GRAD_TOL);
});

test('cropPad: windows past both edges or beside the map, and a same-size crop that only widens a blocked bfloat16 map', () => {
  const x = ref.randomArr([1, 3, 5, 6], 16);
  const xt = toTensor(x);
  for (const [top, left, height, width] of [[-1, -3, 8, 12], [2, 7, 3, 4], [0, -9, 5, 6], [-2, 1, 2, 3]] as const) {
    const y = native.cropPad(xt, { top, left, height, width });
    assert.deepEqual(values(y), Array.from(ref.cropPad(x, top, left, height, width).data, Math.fround), `window ${[top, left, height, width]}`);
    y.dispose();
  }
  // A bfloat16 map in a convolution's blocked layout, cropped to itself: the same values, float32 and plain.
  const f = native.convForward(toTensor(ref.randomArr([1, 16, 5, 6], 17)), toTensor(ref.randomArr([32, 16, 3, 3], 18)), null, { padding: [1, 1, 1, 1], dtype: bf16Available() ? 'bfloat16' : 'float32' });
  const same = native.cropPad(f.y, { height: 5, width: 6 });
  assert.equal(same.dtype, 'float32');
  assert.equal(same.layout, 'plain');
  assert.deepEqual(values(same), values(native.reorder(f.y, { dtype: 'float32' })));
  for (const t of [xt, f.y, f.weightsCache, same]) t?.dispose();
});

for (const reduction of ['mean', 'sum'] as const) {
  test(`softmax cross-entropy (${reduction}) ignores 255: loss and gradient`, () => {
    const x = ref.randomArr([2, 5, 3, 4], 15, 3);
    const labels = Uint8Array.from({ length: 24 }, (_, i) => (i % 5 === 3 ? 255 : (i * 7) % 5));
    const xt = toTensor(x), lt = native.fromArray([2, 3, 4], labels);
    const { loss, valid, grad } = native.softmaxCrossEntropy(xt, lt, { reduction });
    assert.equal(valid, labels.filter((l) => l !== 255).length);
    const lossRef = ref.softmaxCrossEntropy(x, labels, reduction);
    assert.ok(Math.abs(loss - lossRef) < 1e-5 * Math.abs(lossRef));
    const ix = sample(x.data.length, 120), g = values(grad);
    const nx = ref.numericGrad((a) => ref.softmaxCrossEntropy(a, labels, reduction), x, ix);
    assert.ok(ref.relError(ix.map((i) => g[i]), nx) < GRAD_TOL);
  });
}

// Logits ±150 apart give exponentials far below float32's normal range (flushed to 0 there).
for (const spread of [4, 150])
  test(`softmax cross-entropy over images of several runs of pixels, batch 2, logits ±${spread}: loss and exact gradient`, () => {
    const [n, c, h, w] = [2, 21, 20, 30]; // 600 pixels per image: three runs, the last partial
    const x = ref.randomArr([n, c, h, w], 16, spread);
    const labels = Uint8Array.from({ length: n * h * w }, (_, i) => (i % 11 === 5 ? 255 : (i * 13) % c));
    const xt = toTensor(x), lt = native.fromArray([n, h, w], labels);
    const { loss, valid, grad } = native.softmaxCrossEntropy(xt, lt, { reduction: 'mean' });
    // The loss flushes denormals on its threads only while it runs: JavaScript keeps them.
    const denormal = [Number.MIN_VALUE * 3][0]!;
    assert.ok(denormal * 0.5 > 0 && denormal / 3 === Number.MIN_VALUE);
    const lossRef = ref.softmaxCrossEntropy(x, labels, 'mean');
    assert.ok(Math.abs(loss - lossRef) < 1e-6 * Math.abs(lossRef), `loss ${loss} vs ${lossRef}`);
    // dL/dx = (softmax − onehot) / valid, in float64; ignored pixels exactly 0.
    const g = values(grad), want = new Array<number>(g.length).fill(0);
    for (let b = 0; b < n; b++)
      for (let p = 0; p < h * w; p++) {
        const y = labels[b * h * w + p];
        if (y === 255) continue;
        const at = (k: number) => (b * c + k) * h * w + p;
        let m = -Infinity;
        for (let k = 0; k < c; k++) m = Math.max(m, x.data[at(k)]);
        let sum = 0;
        for (let k = 0; k < c; k++) sum += Math.exp(x.data[at(k)] - m);
        for (let k = 0; k < c; k++) want[at(k)] = (Math.exp(x.data[at(k)] - m) / sum - (k === y ? 1 : 0)) / valid;
      }
    assert.ok(ref.relError(g, want) < 1e-5, `gradient error ${ref.relError(g, want)}`);
    for (let b = 0; b < n; b++)
      for (let p = 0; p < h * w; p++) if (labels[b * h * w + p] === 255) for (let k = 0; k < c; k++) assert.equal(g[(b * c + k) * h * w + p], 0);
    for (const t of [xt, lt, grad]) t.dispose();
  });

// A bfloat16 network's logits come as its last upsampling left them: the loss reads them there
// and leaves the gradient in the same layout and type (no float32 plain copy either way).
for (const dtype of ['float32', 'bfloat16'] as const)
  test(`softmax cross-entropy on ${dtype} logits in a convolution's layout (21 channels): the plain path's loss, the gradient in the logits' layout and type`, () => {
    const [n, c, h, w] = [2, 21, 20, 30];
    const x = toTensor(ref.randomArr([n, c, h, w], 19, 4));
    const labels = native.fromArray([n, h, w], Uint8Array.from({ length: n * h * w }, (_, i) => (i % 11 === 5 ? 255 : (i * 13) % c)));
    // The identity as a 1×1 convolution: the logits in the layout its kernel writes (on
    // AVX-512 channels last; with AVX2 kernels blocks of 8, the last one padded).
    const eye = native.fromArray([c, c, 1, 1], Float32Array.from({ length: c * c }, (_, i) => (i % (c + 1) === 0 ? 1 : 0)));
    if (dtype === 'bfloat16' && !bf16Runs()) {
      assertBf16Refused(() => native.convForward(x, eye, null, { dtype }));
      return void [x, labels, eye].forEach((t) => t.dispose());
    }
    const f = native.convForward(x, eye, null, { dtype });
    const plain = native.reorder(f.y, { dtype: 'float32' });
    try {
      assert.equal(f.y.dtype, dtype);
      const want = native.softmaxCrossEntropy(plain, labels, { reduction: 'mean' });
      const got = native.softmaxCrossEntropy(f.y, labels, { reduction: 'mean' });
      assert.equal(got.valid, want.valid);
      assert.ok(Math.abs(got.loss - want.loss) <= 1e-6 * Math.abs(want.loss), `loss ${got.loss} vs ${want.loss}`);
      assert.equal(got.grad.dtype, dtype);
      assert.equal(got.grad.layout, f.y.layout);
      const g = values(native.reorder(got.grad, { dtype: 'float32' })), gw = values(want.grad);
      // bfloat16 keeps 8 bits of each gradient's mantissa.
      assert.ok(ref.relError(g, gw) <= (dtype === 'float32' ? 0 : 4e-3), `gradient error ${ref.relError(g, gw)}`);
      for (const t of [want.grad, got.grad]) t.dispose();
    } finally {
      for (const t of [x, labels, eye, f.y, f.weightsCache, plain]) t?.dispose();
    }
  });

test('softmax cross-entropy rejects labels that are not classes', () => {
  const xt = native.zeros([1, 3, 2, 2]);
  const lt = native.fromArray([1, 2, 2], Uint8Array.from([0, 1, 7, 255]));
  assert.throws(() => native.softmaxCrossEntropy(xt, lt), /label 7 at pixel 2 is not a class/);
});

// Over ≥ 4096 pixels float32 weight gradients are a matrix product of dy and im2col(x),
// built in chunks of pixels: the first case needs two chunks, the second has batch 2 and 7×7.
for (const c of [
  { x: [1, 256, 64, 64], w: [3, 256, 3, 3], pad: 1 },
  { x: [2, 8, 48, 48], w: [6, 8, 7, 7], pad: 3 },
]) {
  test(`conv weight gradient over ${c.x.join('×')} (${c.w[2]}×${c.w[3]}) matches a float64 sum`, () => {
    const [n, ci, h, w] = c.x, [co, , k] = c.w, p = c.pad;
    const xs = Float32Array.from({ length: n * ci * h * w }, (_, i) => Math.sin(i * 0.61) + 0.1);
    const dys = Float32Array.from({ length: n * co * h * w }, (_, i) => Math.cos(i * 0.37));
    const xt = native.fromArray(c.x, xs), dyt = native.fromArray([n, co, h, w], dys);
    const { dw, db } = native.convBackwardWeights(xt, dyt, { stride: [1, 1], padding: [p, p, p, p], weightsDims: c.w, bias: true });
    const got = dw.toArray() as Float32Array, gotB = db!.toArray() as Float32Array;
    const want = new Float64Array(co * ci * k * k), wantB = new Float64Array(co);
    for (let b = 0; b < n; b++)
      for (let o = 0; o < co; o++) {
        const g = dys.subarray((b * co + o) * h * w, (b * co + o + 1) * h * w);
        for (const v of g) wantB[o] += v;
        for (let i = 0; i < ci; i++) {
          const xi = xs.subarray((b * ci + i) * h * w, (b * ci + i + 1) * h * w);
          for (let kh = 0; kh < k; kh++)
            for (let kw = 0; kw < k; kw++) {
              let sum = 0;
              for (let y = Math.max(0, p - kh); y < Math.min(h, h + p - kh); y++)
                for (let x = Math.max(0, p - kw); x < Math.min(w, w + p - kw); x++) sum += xi[(y + kh - p) * w + x + kw - p] * g[y * w + x];
              want[((o * ci + i) * k + kh) * k + kw] += sum;
            }
        }
      }
    assert.ok(ref.relError(Array.from(got), Array.from(want)) < 1e-5, `dw error ${ref.relError(Array.from(got), Array.from(want))}`);
    assert.ok(ref.relError(Array.from(gotB), Array.from(wantB)) < 1e-5, `db error ${ref.relError(Array.from(gotB), Array.from(wantB))}`);
    for (const t of [xt, dyt, dw, db]) t?.dispose();
  });
}

test('argmax over images larger than one run of pixels, batch 2', () => {
  const [n, c, h, w] = [2, 5, 40, 53]; // 2120 pixels per image: three runs, the last partial
  const data = Float32Array.from({ length: n * c * h * w }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
  const t = native.fromArray([n, c, h, w], data);
  const got = native.argmax(t);
  const labels = got.toArray() as Uint8Array;
  for (let b = 0; b < n; b++)
    for (let p = 0; p < h * w; p++) {
      let best = 0;
      for (let k = 1; k < c; k++) if (data[(b * c + k) * h * w + p] > data[(b * c + best) * h * w + p]) best = k;
      assert.equal(labels[b * h * w + p], best, `image ${b} pixel ${p}`);
    }
  t.dispose();
  got.dispose();
});

test('argmax picks the first largest channel', () => {
  const x = ref.arr([1, 3, 1, 4], [0, 5, 1, 2, /**/ 3, 5, 0, 2, /**/ 1, 0, 9, 2]);
  assert.deepEqual(Array.from(native.argmax(toTensor(x)).toArray()), [1, 0, 2, 0]);
});

test('Adam and SGD updates follow their formulas', () => {
  const w0 = ref.randomArr([3, 4], 16), g0 = ref.randomArr([3, 4], 17);
  const w = toTensor(w0), g = toTensor(g0), m = native.zeros([3, 4]), v = native.zeros([3, 4]);
  const alpha = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-7, l2 = 0.05;
  native.adamUpdate(w, g, m, v, { alpha, beta1: b1, beta2: b2, epsilon: eps, l2 });
  const wa = values(w);
  w0.data.forEach((wi, i) => {
    const gi = g0.data[i] + 2 * l2 * wi;
    const mi = (1 - b1) * gi, vi = (1 - b2) * gi * gi;
    assert.ok(Math.abs(wa[i] - (wi - (alpha * mi) / (Math.sqrt(vi) + eps))) < 1e-5);
  });
  const w2 = toTensor(w0), vel = native.zeros([3, 4]);
  native.sgdUpdate(w2, g, vel, { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
  native.sgdUpdate(w2, g, vel, { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
  const ws = values(w2);
  w0.data.forEach((wi, i) => {
    const v1 = -0.1 * (Math.fround(g0.data[i]) + 0.01 * wi);
    const w1 = wi + v1;
    const v2 = 0.9 * v1 - 0.1 * (Math.fround(g0.data[i]) + 0.01 * w1);
    assert.ok(Math.abs(ws[i] - (w1 + v2)) < 1e-5);
  });
});

test('adamUpdateAll equals adamUpdate on each parameter', () => {
  const shapes = [[5, 3, 3, 3], [5], [7, 5, 1, 1], [1000]];
  const opts = { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
  const l2 = [0.01, 0, 0.02, 0];
  const make = () => shapes.map((d, i) => ({ w: toTensor(ref.randomArr(d, 30 + i)), g: toTensor(ref.randomArr(d, 40 + i)), m: native.zeros(d), v: native.zeros(d) }));
  const a = make(), b = make();
  for (let step = 0; step < 3; step++) {
    a.forEach((p, i) => native.adamUpdate(p.w, p.g, p.m, p.v, { ...opts, l2: l2[i] }));
    native.adamUpdateAll(b.map((p) => p.w), b.map((p) => p.g), b.map((p) => p.m), b.map((p) => p.v), l2, opts);
  }
  a.forEach((p, i) => {
    assert.deepEqual(values(b[i].w), values(p.w));
    assert.deepEqual(values(b[i].m), values(p.m));
    assert.deepEqual(values(b[i].v), values(p.v));
  });
  assert.throws(() => native.adamUpdateAll([a[0].w], [a[1].g], [a[0].m], [a[0].v], [0], opts), /grad does not match/);
  for (const p of [...a, ...b]) for (const t of Object.values(p)) t.dispose();
});

// oneDNN 2.x has float32 Winograd kernels (jit_fp32_wino_2x3) for AVX-512 only: where its ISA
// has AVX-512 the algorithm must run, elsewhere (AVX2, or ONEDNN_MAX_CPU_ISA=AVX2) it must be
// refused in one clear error, never either at random.
const winogradHere = cpuFeatures().avx512;
const winogradCases: [number[], number[]][] = [
  [[1, 16, 12, 10], [32, 16, 3, 3]],
  [[2, 64, 20, 18], [48, 64, 3, 3]],
  [[1, 3, 30, 31], [16, 3, 3, 3]],
];
// Measured against the float64 reference on AVX-512 (Zen 5): Winograd 1.1e-7–4.3e-7 of the
// largest value, direct 1.2e-7–7.6e-7; so the bound direct meets (FWD_TOL) holds for both.
const WINOGRAD_TOL = FWD_TOL;

test(winogradHere
  ? `convForward with Winograd's algorithm (ISA ${cpuFeatures().isa}) equals the float64 reference and the direct algorithm`
  : `convForward with Winograd's algorithm is refused on ISA ${cpuFeatures().isa} (no AVX-512): a RangeError saying so`, () => {
  for (const [xDims, wDims] of winogradCases) {
    const xa = ref.randomArr(xDims, 51), wa = ref.randomArr(wDims, 52, 0.3), ba = ref.randomArr([wDims[0]], 53);
    const x = toTensor(xa), w = toTensor(wa), b = toTensor(ba);
    const opts = { padding: [1, 1, 1, 1] as [number, number, number, number], relu: true };
    const what = `x ${xDims.join('x')}, w ${wDims.join('x')}`;
    if (!winogradHere) {
      assert.throws(() => native.convForward(x, w, b, { ...opts, algorithm: 'winograd' }), (e: Error) => e instanceof RangeError
        && e.message === `convForward: Winograd convolution is not available on this CPU (for x ${xDims.join('x')} and weights ${wDims.join('x')}): use algorithm 'direct'`, what);
    } else {
      const exact = ref.conv(xa, wa, ba, { stride: 1, pad: 1, relu: true }).data;
      const direct = native.convForward(x, w, b, opts);
      const winograd = native.convForward(x, w, b, { ...opts, algorithm: 'winograd' });
      const e = ref.relError(values(winograd.y), exact);
      assert.ok(e < WINOGRAD_TOL, `${what}: Winograd vs float64 ${e}`);
      assert.ok(ref.relError(values(direct.y), exact) < FWD_TOL, `${what}: direct vs float64`);
      const d = ref.relError(values(winograd.y), values(direct.y));
      assert.ok(d < 2 * WINOGRAD_TOL, `${what}: Winograd vs direct ${d}`);
      for (const t of [direct.y, direct.weightsCache, winograd.y, winograd.weightsCache]) t?.dispose();
    }
    for (const t of [x, w, b]) t.dispose();
  }
});

test('bad arguments give clear errors, not crashes', () => {
  const x = native.zeros([1, 3, 4, 4]);
  assert.throws(() => native.convForward(x, native.zeros([2, 4, 3, 3]), null, {}), /input has 3 channels but the weights expect 4/);
  assert.throws(() => native.convForward({} as Tensor, x, null, {}), /x must be a Tensor/);
  assert.throws(() => native.fromArray([2, 2], new Float32Array(3)), /data has 3 elements but dims 2x2 need 4/);
  const d = native.zeros([2]);
  d.dispose();
  assert.throws(() => native.reluForward(d), /x has been disposed/);
  assert.throws(() => native.maxPoolForward(native.zeros([1, 1, 1, 1]), {}), /smaller than the window/);
});
