// Weight gradients from bfloat16 operands, by oneDNN's kernel and by im2col + matmul: both
// must be the float32 sums of the exact products of the bf16-rounded inputs, not a result
// rounded to bf16 on its way to the float32 master weights. The reference is float64 over the
// same rounded inputs; rounding the gradient to bf16 would cost up to 2^-9 of each element, far
// above the float32 accumulation error the tolerance allows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type Tensor } from '../../src/engine/binding.js';
import { assertBf16Refused, bf16Runs } from '../prereq.js';
import * as ref from './reference.js';

/** float32 → nearest bfloat16 (ties to even), as a number: independent of the engine's conversion. */
function roundBf16(v: number): number {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer);
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

/** dW[o,i,kh,kw] = Σ over pixels of dy[o, oh, ow] · x[i, oh + kh − pad, ow + kw − pad] (stride 1, batch 1). */
function weightGrad(x: ref.Arr, dy: ref.Arr, k: number, pad: number): ref.Arr {
  const [, I, H, W] = x.dims as [number, number, number, number];
  const [, O, OH, OW] = dy.dims as [number, number, number, number];
  const dw = ref.arr([O, I, k, k]);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < I; i++)
      for (let kh = 0; kh < k; kh++)
        for (let kw = 0; kw < k; kw++) {
          let s = 0;
          for (let oh = 0; oh < OH; oh++) {
            const ih = oh + kh - pad;
            if (ih < 0 || ih >= H) continue;
            for (let ow = 0; ow < OW; ow++) {
              const iw = ow + kw - pad;
              if (iw >= 0 && iw < W) s += dy.data[(o * OH + oh) * OW + ow]! * x.data[(i * H + ih) * W + iw]!;
            }
          }
          dw.data[((o * I + i) * k + kh) * k + kw] = s;
        }
  return dw;
}

const cases = [
  { name: '3×3, 24 → 40', x: [1, 24, 9, 7], o: 40, k: 3, pad: 1 },
  { name: '7×7, 16 → 33', x: [1, 16, 6, 6], o: 33, k: 7, pad: 3 },
  { name: '1×1, 64 → 48', x: [1, 64, 5, 4], o: 48, k: 1, pad: 0 },
];

for (const c of cases)
  for (const algorithm of ['direct', 'matmul'] as const)
    test(`bfloat16 weight gradient by ${algorithm} is float32, unrounded (${c.name})`, () => {
      const rounded = (a: ref.Arr) => ref.arr(a.dims, a.data.map(roundBf16));
      const x = rounded(ref.randomArr(c.x, 11)), dy = rounded(ref.randomArr([1, c.o, c.x[2]!, c.x[3]!], 12));
      const xt = native.fromArray(x.dims, Float32Array.from(x.data)), dyt = native.fromArray(dy.dims, Float32Array.from(dy.data));
      const xb = native.reorder(xt, { dtype: 'bfloat16' }), dyb = native.reorder(dyt, { dtype: 'bfloat16' });
      const opts = { padding: [c.pad, c.pad, c.pad, c.pad] as [number, number, number, number], dtype: 'bfloat16' as const, weightsDims: [c.o, c.x[1]!, c.k, c.k], bias: true, algorithm };
      const held: (Tensor | null)[] = [xt, dyt, xb, dyb];
      try {
        if (!bf16Runs()) return assertBf16Refused(() => native.convBackwardWeights(xb, dyb, opts));
        const { dw, db } = native.convBackwardWeights(xb, dyb, opts);
        held.push(dw, db);
        assert.equal(dw.dtype, 'float32');
        assert.equal(dw.layout, 'plain');
        const want = weightGrad(x, dy, c.k, c.pad);
        const e = ref.relError(dw.toArray() as Float32Array, want.data);
        assert.ok(e < 2e-5, `dw error ${e}: more than float32 accumulation`);
        const wantB = Array.from({ length: c.o }, (_, o) => dy.data.slice(o * c.x[2]! * c.x[3]!, (o + 1) * c.x[2]! * c.x[3]!).reduce((s, v) => s + v, 0));
        const eb = ref.relError(db!.toArray() as Float32Array, wantB);
        assert.ok(eb < 2e-5, `db error ${eb}`);
        // The gradient kept in the layout its computation left it in holds the same numbers.
        const { dw: own, db: db2 } = native.convBackwardWeights(xb, dyb, { ...opts, gradLayout: 'any' });
        const back = native.reorder(own);
        held.push(own, db2, back);
        assert.equal(own.dtype, 'float32');
        assert.deepEqual(back.toArray(), dw.toArray());
      } finally {
        for (const t of held) t?.dispose();
      }
    });
