// Input gradients of stride-1 convolutions as a matrix product and col2im (algorithm 'matmul'),
// against a float64 reference of the definition: float32 operands give float32 sums; bfloat16
// operands give the float32 sums of the exact products of the bf16-rounded inputs, rounded once
// to bf16 at the end. The shapes cover conv6's 7×7, batches whose pixels fall into several
// product chunks (the first ending inside a row of the second image), and 1×1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor } from '../../src/engine/binding.js';
import { cpuFeatures } from '../../src/engine/config.js';
import { assertBf16Refused, bf16Runs } from '../prereq.js';
import * as ref from './reference.js';

/** float32 → nearest bfloat16 (ties to even), as a number: independent of the engine's conversion. */
function roundBf16(v: number): number {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer);
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

/** dx[n,i,ih,iw] = Σ over o, kh, kw of dy[n, o, ih + pad − kh, iw + pad − kw] · w[o, i, kh, kw] (stride 1). */
function inputGrad(dy: ref.Arr, w: ref.Arr, x: number[], pad: number): Float64Array {
  const [N, I, H, W] = x as [number, number, number, number];
  const [O, , KH, KW] = w.dims as [number, number, number, number];
  const [, , OH, OW] = dy.dims as [number, number, number, number];
  const dx = new Float64Array(N * I * H * W);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          const g = dy.data[((n * O + o) * OH + oh) * OW + ow]!;
          for (let kh = 0; kh < KH; kh++) {
            const ih = oh + kh - pad;
            if (ih < 0 || ih >= H) continue;
            for (let kw = 0; kw < KW; kw++) {
              const iw = ow + kw - pad;
              if (iw < 0 || iw >= W) continue;
              for (let i = 0; i < I; i++) dx[((n * I + i) * H + ih) * W + iw] += g * w.data[((o * I + i) * KH + kh) * KW + kw]!;
            }
          }
        }
  return dx;
}

const cases = [
  { name: '7×7, 16 → 40', x: [1, 16, 6, 6], o: 40, k: 7, pad: 3 },
  // 64 input channels: the product's own blocked layout of the weights (one chunk).
  { name: '7×7, 64 → 40', x: [1, 64, 5, 6], o: 40, k: 7, pad: 3 },
  { name: '7×7 batch 2, 8 → 12, no padding', x: [2, 8, 9, 10], o: 12, k: 7, pad: 0 },
  // 4608 columns a pixel: chunks of 1820 pixels, the first ending inside the second image's 6th row.
  { name: '3×3 batch 2, 512 → 4, two chunks', x: [2, 512, 40, 40], o: 4, k: 3, pad: 1 },
  { name: '1×1, 64 → 48', x: [1, 64, 5, 4], o: 48, k: 1, pad: 0 },
];

for (const c of cases)
  for (const dtype of ['float32', 'bfloat16'] as const)
    test(`${dtype} input gradient by matmul and col2im matches float64 (${c.name})`, () => {
      const bf16 = dtype === 'bfloat16';
      const rounded = (a: ref.Arr) => (bf16 ? ref.arr(a.dims, a.data.map(roundBf16)) : a);
      const [n, , h, wd] = c.x as [number, number, number, number];
      const oh = h + 2 * c.pad - c.k + 1, ow = wd + 2 * c.pad - c.k + 1;
      const dy = rounded(ref.randomArr([n, c.o, oh, ow], 21)), w = rounded(ref.randomArr([c.o, c.x[1]!, c.k, c.k], 22, 0.1));
      const dyt = native.fromArray(dy.dims, Float32Array.from(dy.data)), wt = native.fromArray(w.dims, Float32Array.from(w.data));
      const xt = native.zeros(c.x);
      const held: (Tensor | null)[] = [dyt, wt, xt];
      try {
        const dyIn = bf16 && bf16Runs() ? native.reorder(dyt, { dtype }) : dyt;
        if (dyIn !== dyt) held.push(dyIn);
        const opts = { padding: [c.pad, c.pad, c.pad, c.pad] as [number, number, number, number], dtype, algorithm: 'matmul' as const };
        if (bf16 && !bf16Runs()) return assertBf16Refused(() => native.convBackwardData(dyIn, wt, xt, opts));
        const r = native.convBackwardData(dyIn, wt, xt, opts);
        held.push(r.dx, r.weightsCache);
        assert.equal(r.weightsFlipped, false);
        assert.equal(r.dx.dtype, dtype);
        assert.deepEqual(r.dx.dims, c.x);
        const want = inputGrad(dy, w, c.x, c.pad);
        const got = native.reorder(r.dx, { dtype: 'float32' });
        held.push(got);
        // float32: accumulation error only; bfloat16: one rounding of the float32 sum (2^-9 of it).
        const e = ref.relError(got.toArray() as Float32Array, want);
        assert.ok(e < (bf16 ? 4e-3 : 2e-5), `dx error ${e}`);
        // The copy of the weights it made serves the next call as is.
        const again = native.convBackwardData(dyIn, wt, xt, { ...opts, weightsCache: r.weightsCache });
        held.push(again.dx, again.weightsCache);
        assert.equal(again.weightsCache, null);
        const back = native.reorder(again.dx, { dtype: 'float32' });
        held.push(back);
        assert.deepEqual(back.toArray(), got.toArray());
      } finally {
        for (const t of held) t?.dispose();
      }
    });

test('input gradient by matmul is for stride-1 convolutions only', () => {
  const dy = native.zeros([1, 4, 3, 3]), w = native.zeros([4, 2, 3, 3]), x = native.zeros([1, 2, 6, 6]);
  try {
    assert.throws(() => native.convBackwardData(dy, w, x, { stride: [2, 2], padding: [1, 1, 1, 1], algorithm: 'matmul' }), /algorithm 'matmul' is for stride-1 convolutions only/);
  } finally {
    for (const t of [dy, w, x]) t.dispose();
  }
});

// The float32 3×3 input gradient on Winograd's algorithm over the flipped weights, oneDNN's
// (AVX-512 only: refused with the clear message elsewhere) and the engine's own, against the
// same float64 reference; odd sizes leave partial Winograd tiles at the edges.
for (const algorithm of ['winograd', 'winograd-gemm'] as const)
  for (const c of [
    { name: '3×3, 16 → 24, 13×11', x: [1, 16, 13, 11], o: 24 },
    { name: '3×3 batch 2, 64 → 32, 9×10', x: [2, 64, 9, 10], o: 32 },
  ])
    test(`float32 input gradient by ${algorithm} over the flipped weights matches float64 (${c.name})`, () => {
      const [n, , h, wd] = c.x as [number, number, number, number];
      const dy = ref.randomArr([n, c.o, h, wd], 31), w = ref.randomArr([c.o, c.x[1]!, 3, 3], 32, 0.1);
      const dyt = native.fromArray(dy.dims, Float32Array.from(dy.data)), wt = native.fromArray(w.dims, Float32Array.from(w.data));
      const xt = native.zeros(c.x);
      const held: (Tensor | null)[] = [dyt, wt, xt];
      try {
        const opts = { padding: [1, 1, 1, 1] as [number, number, number, number], algorithm };
        if (algorithm === 'winograd' && !cpuFeatures().avx512)
          return assert.throws(() => native.convBackwardData(dyt, wt, xt, opts), /Winograd convolution is not available on this CPU/);
        const r = native.convBackwardData(dyt, wt, xt, opts);
        held.push(r.dx, r.weightsCache);
        assert.equal(r.weightsFlipped, true);
        assert.deepEqual(r.dx.dims, c.x);
        // Winograd's transforms round more than the direct sums: within 1e-5 of the largest, not 2e-5 of each.
        const want = inputGrad(dy, w, c.x, 1), got = r.dx.toArray() as Float32Array;
        let diff = 0, top = 0;
        for (let i = 0; i < want.length; i++) {
          diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
          top = Math.max(top, Math.abs(want[i]!));
        }
        assert.ok(diff <= 1e-5 * top, `max |dx − float64| ${diff} > 1e-5 × ${top}`);
        const again = native.convBackwardData(dyt, wt, xt, { ...opts, weightsCache: r.weightsCache });
        held.push(again.dx, again.weightsCache);
        assert.equal(again.weightsCache, null, 'the transformed weights it made serve the next call');
        assert.deepEqual(again.dx.toArray(), got);
      } finally {
        for (const t of held) t?.dispose();
      }
    });

test('Winograd input gradients are for float32 stride-1 convolutions only', () => {
  const dy = native.zeros([1, 4, 3, 3]), w = native.zeros([4, 2, 3, 3]), x = native.zeros([1, 2, 6, 6]);
  try {
    for (const algorithm of ['winograd', 'winograd-gemm'] as const)
      assert.throws(() => native.convBackwardData(dy, w, x, { stride: [2, 2], padding: [1, 1, 1, 1], algorithm }), new RegExp(`algorithm '${algorithm}' is for float32 stride-1`));
  } finally {
    for (const t of [dy, w, x]) t.dispose();
  }
});
