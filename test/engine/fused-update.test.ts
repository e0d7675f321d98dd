// The fused update: Adam and SGD reading a gradient in the layout its kernel left it in, and
// rewriting a kernel's packed copies (the forward form, and the input gradient's: flipped for
// its convolution, O,KH,KW,I for its matrix product; float32 and bfloat16) in the pass that updates the master weights. Masters and states must equal
// the plain update's exactly (the same float32 operations), and every rewritten copy must
// equal a fresh pack of the new master exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor, type Precision, type PackedWeights, type InputGradAlgorithm } from '../../src/engine/binding.js';
import { bf16Available } from '../../src/engine/config.js';
import * as ref from './reference.js';

const values = (t: Tensor) => Array.from(t.toArray() as Float32Array | Uint16Array);
const toTensor = (a: ref.Arr) => native.fromArray(a.dims, Float32Array.from(a.data));
const precisions: Precision[] = bf16Available() ? ['float32', 'bfloat16'] : ['float32'];

// Channel counts that fill no 32-channel tile or oneDNN block exactly; the fourth also has whole
// tiles of a 7×7 kernel beside partial ones.
const cases = [
  { name: '3×3, 40 → 33', x: [1, 40, 6, 5], w: [33, 40, 3, 3], pad: 1 },
  { name: '7×7, 17 → 35', x: [1, 17, 5, 4], w: [35, 17, 7, 7], pad: 3 },
  { name: '1×1, 64 → 48', x: [1, 64, 3, 3], w: [48, 64, 1, 1], pad: 0 },
  { name: '7×7, 40 → 64', x: [1, 40, 5, 4], w: [64, 40, 7, 7], pad: 3 },
  // Whole tiles only, in the 64-channel blocks oneDNN picks for wider layers: written a run at
  // a time from the transposed tile (and the gradient transposed into the master's order).
  { name: '3×3, 64 → 96', x: [1, 64, 5, 6], w: [96, 64, 3, 3], pad: 1 },
  { name: '1×1, 128 → 64', x: [1, 128, 3, 4], w: [64, 128, 1, 1], pad: 0 },
];

const convOpts = (pad: number, dtype: Precision) => ({ stride: [1, 1] as [number, number], padding: [pad, pad, pad, pad] as [number, number, number, number], dtype });

/** The packed copies convForward and convBackwardData make of w for these shapes. */
function packsOf(x: Tensor, w: Tensor, pad: number, dtype: Precision, algorithm: InputGradAlgorithm): { packs: PackedWeights[]; dispose(): void } {
  const f = native.convForward(x, w, null, convOpts(pad, dtype));
  const dy = native.reorder(f.y, { dtype: 'float32' });
  const b = native.convBackwardData(dy, w, x, { ...convOpts(pad, dtype), algorithm });
  const all = [f.y, dy, b.dx];
  const packs: PackedWeights[] = [];
  if (f.weightsCache) packs.push({ tensor: f.weightsCache, flipped: false });
  if (b.weightsCache) packs.push({ tensor: b.weightsCache, flipped: b.weightsFlipped });
  return { packs, dispose: () => [...all, ...packs.map((p) => p.tensor)].forEach((t) => t.dispose()) };
}

for (const c of cases)
  for (const dtype of precisions)
    for (const inputGrad of ['direct', 'matmul'] as const)
      test(`fused update rewrites the packed copies exactly (${c.name}, ${dtype}, input gradient by ${inputGrad})`, () => {
        const x = toTensor(ref.randomArr(c.x, 1));
        const w0 = ref.randomArr(c.w, 2), g0 = ref.randomArr(c.w, 3);
        const plain = { w: toTensor(w0), m: native.zeros(c.w), v: native.zeros(c.w) };
        const fused = { w: toTensor(w0), m: native.zeros(c.w), v: native.zeros(c.w) };
        const g = toTensor(g0);
        const adam = { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
        const held = packsOf(x, fused.w, c.pad, dtype, inputGrad);
        assert.ok(held.packs.length >= 1, 'the convolution made packed copies');
        for (let step = 0; step < 3; step++) {
          native.adamUpdateAll([plain.w], [g], [plain.m], [plain.v], [0.01], adam);
          native.adamUpdateAll([fused.w], [g], [fused.m], [fused.v], [0.01], adam, [held.packs]);
        }
        // The update flushes denormals on its threads only while it runs: JavaScript keeps them.
        const denormal = [Number.MIN_VALUE * 3][0]!;
        assert.ok(denormal * 0.5 > 0 && denormal / 3 === Number.MIN_VALUE);
        assert.deepEqual(values(fused.w), values(plain.w));
        assert.deepEqual(values(fused.m), values(plain.m));
        assert.deepEqual(values(fused.v), values(plain.v));
        // A fresh pack of the updated master, through the same calls.
        const fresh = packsOf(x, plain.w, c.pad, dtype, inputGrad);
        assert.equal(fresh.packs.length, held.packs.length);
        held.packs.forEach((p, k) => {
          const q = fresh.packs[k]!;
          assert.equal(p.tensor.layout, q.tensor.layout);
          assert.equal(p.flipped, q.flipped);
          assert.deepEqual(values(p.tensor), values(q.tensor), `copy ${k} (${p.flipped ? 'flipped' : 'forward'})`);
        });
        held.dispose();
        fresh.dispose();
        for (const t of [x, g, ...Object.values(plain), ...Object.values(fused)]) t.dispose();
      });

for (const c of cases)
  for (const algorithm of ['direct', 'matmul'] as const)
    test(`Adam and SGD read a ${algorithm} weight gradient in its own layout as the plain one (${c.name})`, () => {
      const x = toTensor(ref.randomArr(c.x, 4));
      const f = native.convForward(x, toTensor(ref.randomArr(c.w, 5)), null, convOpts(c.pad, 'float32'));
      const opts = { ...convOpts(c.pad, 'float32'), weightsDims: c.w, bias: false, algorithm };
      const { dw: blocked } = native.convBackwardWeights(x, f.y, { ...opts, gradLayout: 'any' });
      const { dw: plainGrad } = native.convBackwardWeights(x, f.y, opts);
      assert.equal(plainGrad.layout, 'plain');
      // The same computation: the layouts differ, the numbers do not.
      assert.deepEqual(values(blocked), values(plainGrad));
      const w0 = ref.randomArr(c.w, 6);
      const run = (g: Tensor) => {
        const s = { w: toTensor(w0), m: native.zeros(c.w), v: native.zeros(c.w), vel: native.zeros(c.w) };
        const s2 = toTensor(w0);
        native.adamUpdate(s.w, g, s.m, s.v, { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, l2: 0.01 });
        native.sgdUpdate(s2, g, s.vel, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 });
        const out = [values(s.w), values(s.m), values(s.v), values(s2), values(s.vel)];
        for (const t of [...Object.values(s), s2]) t.dispose();
        return out;
      };
      assert.deepEqual(run(blocked), run(plainGrad));
      for (const t of [x, f.y, f.weightsCache!, blocked, plainGrad]) t?.dispose();
    });

test('the fused update refuses packed copies that do not fit the weights', () => {
  const w = native.zeros([8, 4, 3, 3]), g = native.zeros([8, 4, 3, 3]), m = native.zeros([8, 4, 3, 3]), v = native.zeros([8, 4, 3, 3]);
  const adam = { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, l2: 0 };
  assert.throws(() => native.adamUpdate(w, g, m, v, adam, [{ tensor: native.zeros([4, 8, 3, 3]), flipped: false }]), /packed copy 0 is 4x8x3x3, expected 8x4x3x3/);
  assert.throws(() => native.adamUpdate(w, g, m, v, adam, [{ tensor: w, flipped: false }]), /a copy apart from the weights/);
  assert.throws(() => native.adamUpdateAll([w], [g], [m], [v], [0], adam, [null, null]), /packs must be an array as long as the weights/);
  const b = native.zeros([8]);
  assert.throws(() => native.sgdUpdate(b, native.zeros([8]), native.zeros([8]), { lr: 1, momentum: 0, weightDecay: 0 }, [{ tensor: w, flipped: false }]), /only kernels/);
  for (const t of [w, g, m, v, b]) t.dispose();
});

// The optimiser keeps a master in its gradient's blocked layout (Param.adoptLayout): the update
// then streams master, state and gradient in that order, and writes the copies from the tile it
// just updated. Everything must equal the update of a plain master exactly.
for (const c of cases)
  for (const dtype of precisions)
    test(`a master in its gradient's blocked layout updates as a plain one, copies too (${c.name}, ${dtype})`, () => {
      const x = toTensor(ref.randomArr(c.x, 7));
      const f = native.convForward(x, toTensor(ref.randomArr(c.w, 8)), null, convOpts(c.pad, 'float32'));
      const { dw } = native.convBackwardWeights(x, f.y, { ...convOpts(c.pad, 'float32'), weightsDims: c.w, bias: false, algorithm: 'direct', gradLayout: 'any' });
      // Where this CPU's direct kernel leaves it plain (7×7 under AVX2), the forward's blocked layout.
      const g = dw.layout === 'plain' && f.weightsCache ? native.reorder(dw, { like: f.weightsCache }) : dw;
      assert.notEqual(g.layout, 'plain', 'the gradient is blocked');
      const w0 = ref.randomArr(c.w, 9);
      const like = (t: Tensor) => {
        const u = native.reorder(t, { like: g });
        t.dispose();
        return u;
      };
      const run = (blocked: boolean) => {
        const put = (t: Tensor) => (blocked ? like(t) : t);
        const s = { w: put(toTensor(w0)), m: put(native.zeros(c.w)), v: put(native.zeros(c.w)), w2: put(toTensor(w0)), vel: put(native.zeros(c.w)) };
        const first = toTensor(w0);
        const held = packsOf(x, first, c.pad, dtype, 'direct'), held2 = packsOf(x, first, c.pad, dtype, 'direct');
        first.dispose();
        for (let step = 0; step < 3; step++) {
          native.adamUpdateAll([s.w], [g], [s.m], [s.v], [0.01], { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }, [held.packs]);
          native.sgdUpdate(s.w2, g, s.vel, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }, held2.packs);
        }
        assert.equal(s.w.layout, blocked ? g.layout : 'plain');
        const out = [...Object.values(s).map(values), ...[...held.packs, ...held2.packs].map((p) => values(p.tensor))];
        for (const t of Object.values(s)) t.dispose();
        held.dispose();
        held2.dispose();
        return out;
      };
      const plain = run(false), blocked = run(true);
      assert.equal(blocked.length, plain.length);
      plain.forEach((a, k) => assert.deepEqual(blocked[k], a, `array ${k}`));
      for (const t of [x, f.y, f.weightsCache!, g, dw]) if (!t.disposed) t.dispose();
    });

test('the update refuses a blocked master whose gradient is in another layout', () => {
  const x = toTensor(ref.randomArr([1, 16, 5, 5], 10));
  const f = native.convForward(x, toTensor(ref.randomArr([32, 16, 3, 3], 11)), null, convOpts(1, 'float32'));
  const { dw: g } = native.convBackwardWeights(x, f.y, { ...convOpts(1, 'float32'), weightsDims: [32, 16, 3, 3], bias: false, algorithm: 'direct', gradLayout: 'any' });
  const w = native.reorder(native.zeros([32, 16, 3, 3]), { like: g });
  const plainGrad = native.zeros([32, 16, 3, 3]), m = native.zeros([32, 16, 3, 3]), v = native.zeros([32, 16, 3, 3]);
  const adam = { alpha: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, l2: 0 };
  assert.throws(() => native.adamUpdate(w, plainGrad, m, v, adam), /weights must be plain, or blocked as their gradient/);
  assert.throws(() => native.adamUpdate(w, g, m, v, adam), /m does not match the weights/);
  for (const t of [x, f.y, f.weightsCache!, g, w, plainGrad, m, v]) t?.dispose();
});

test("zeros in another tensor's layout: an optimiser's state beside a blocked master", () => {
  const x = toTensor(ref.randomArr([1, 16, 5, 5], 12));
  const f = native.convForward(x, toTensor(ref.randomArr([32, 16, 3, 3], 13)), null, convOpts(1, 'float32'));
  const { dw: g } = native.convBackwardWeights(x, f.y, { ...convOpts(1, 'float32'), weightsDims: [32, 16, 3, 3], bias: false, algorithm: 'direct', gradLayout: 'any' });
  const z = native.zeros([32, 16, 3, 3], 'float32', false, g);
  assert.equal(z.layout, g.layout);
  assert.ok(values(z).every((v) => v === 0));
  assert.equal(native.zeros([32, 16, 3, 3], 'float32', false, null).layout, 'plain');
  assert.throws(() => native.zeros([32, 16, 3, 4], 'float32', false, g), /zeros: shapes differ/);
  assert.throws(() => native.zeros([32, 16, 3, 3], 'float32', false, {} as Tensor), /like must be a Tensor/);
  for (const t of [x, f.y, f.weightsCache!, g, z]) t?.dispose();
});
