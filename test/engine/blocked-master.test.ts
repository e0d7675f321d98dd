// A kernel's master kept in its gradient's blocked layout (the optimiser keeps it there between
// steps, see Param) must serve every pass as the plain master does: each forward algorithm
// (direct, oneDNN's and the engine's Winograd, the upsampling's phase convolution) and each
// input-gradient algorithm, in float32 and bfloat16, bit for bit, since the copies made from it
// hold the same values. Layouts with padded blocks (6 or 21 output channels) included: oneDNN
// does not reorder between every pair of those, so a copy is made through the plain layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type ConvOptions, type Tensor, type Precision, type InputGradAlgorithm } from '../../src/engine/binding.js';
import { bf16Available, configureEngine } from '../../src/engine/config.js';
import * as ref from './reference.js';

configureEngine({ threads: 2 });
const toTensor = (a: ref.Arr) => native.fromArray(a.dims, Float32Array.from(a.data));
const values = (t: Tensor) => Array.from(native.reorder(t, { dtype: 'float32' }).toArray() as Float32Array);
const precisions: Precision[] = bf16Available() ? ['float32', 'bfloat16'] : ['float32'];
type Pad = [number, number, number, number];
type ForwardAlgorithm = NonNullable<ConvOptions['algorithm']>;

const cases = [
  { name: '3×3, 64 → 96', x: [1, 64, 6, 5], w: [96, 64, 3, 3], pad: 1 },
  { name: '7×7, 40 → 64', x: [1, 40, 9, 8], w: [64, 40, 7, 7], pad: 3 },
  { name: '1×1, 40 → 21 (padded blocks)', x: [1, 40, 4, 5], w: [21, 40, 1, 1], pad: 0 },
  { name: '3×3, 16 → 6 (padded blocks)', x: [1, 16, 5, 5], w: [6, 16, 3, 3], pad: 1 },
];

/** w in the blocked layout its direct weight gradient comes in here (or, where that is plain, its forward copy's). */
function blockedLike(x: Tensor, w: Tensor, pad: number): Tensor {
  const opts = { stride: [1, 1] as [number, number], padding: [pad, pad, pad, pad] as Pad };
  const f = native.convForward(x, w, null, opts);
  const { dw } = native.convBackwardWeights(x, f.y, { ...opts, weightsDims: w.dims, bias: false, algorithm: 'direct', gradLayout: 'any' });
  const like = dw.layout !== 'plain' ? dw : f.weightsCache;
  assert.ok(like && like.layout !== 'plain', 'a blocked float32 layout of the kernel');
  const out = native.reorder(w, { like });
  for (const t of [f.y, f.weightsCache, dw]) t?.dispose();
  return out;
}

/** Runs `pass` with the plain and the blocked master; both must give the same, or both refuse. */
function same(what: string, pass: (w: Tensor) => Tensor[], plain: Tensor, blocked: Tensor): void {
  let a: Tensor[];
  try {
    a = pass(plain);
  } catch {
    assert.throws(() => pass(blocked), `${what}: refused with a plain master, so with a blocked one`);
    return;
  }
  const b = pass(blocked);
  a.forEach((t, k) => assert.deepEqual(values(b[k]!), values(t), `${what}: output ${k}`));
  for (const t of [...a, ...b]) t.dispose();
}

for (const c of cases)
  for (const dtype of precisions)
    test(`a blocked master serves every forward and input-gradient algorithm as a plain one (${c.name}, ${dtype})`, () => {
      const x = toTensor(ref.randomArr(c.x, 21)), plain = toTensor(ref.randomArr(c.w, 22, 0.2)), b = toTensor(ref.randomArr([c.w[0]!], 23, 0.1));
      const blocked = blockedLike(x, plain, c.pad);
      const opts = { stride: [1, 1] as [number, number], padding: [c.pad, c.pad, c.pad, c.pad] as Pad, dtype };
      for (const algorithm of ['direct', 'winograd', 'winograd-gemm'] as ForwardAlgorithm[])
        same(`forward, ${algorithm}`, (w) => {
          const r = native.convForward(x, w, b, { ...opts, relu: true, algorithm });
          r.weightsCache?.dispose();
          return [r.y];
        }, plain, blocked);
      const dy = toTensor(ref.randomArr([1, c.w[0]!, c.x[2]!, c.x[3]!], 24));
      for (const algorithm of ['direct', 'matmul', 'winograd', 'winograd-gemm'] as InputGradAlgorithm[])
        same(`input gradient, ${algorithm}`, (w) => {
          const r = native.convBackwardData(dy, w, x, { ...opts, algorithm });
          r.weightsCache?.dispose();
          return [r.dx];
        }, plain, blocked);
      for (const t of [x, plain, b, blocked, dy]) t.dispose();
    });

test("a blocked master serves the upsampling's phase convolution and the transposed kernel", () => {
  const x = toTensor(ref.randomArr([1, 21, 5, 6], 25)), plain = toTensor(ref.randomArr([21, 21, 4, 4], 26, 0.3));
  const opts = { stride: [2, 2] as [number, number], padding: [1, 1, 1, 1] as Pad, transposed: true };
  const direct = native.convForward(x, plain, null, { ...opts, algorithm: 'direct' });
  assert.ok(direct.weightsCache && direct.weightsCache.layout !== 'plain', 'the transposed kernel packs a blocked copy');
  const blocked = native.reorder(plain, { like: direct.weightsCache });
  for (const algorithm of ['direct', 'subpixel'] as ForwardAlgorithm[])
    same(algorithm, (w) => {
      const r = native.convForward(x, w, null, { ...opts, algorithm });
      r.weightsCache?.dispose();
      return [r.y];
    }, plain, blocked);
  for (const t of [x, plain, blocked, direct.y, direct.weightsCache]) t?.dispose();
});
