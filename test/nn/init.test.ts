// Initialisers against independent references: the bilinear upsampling kernel against its
// closed form and against what upsampling must do to a constant image (through the engine),
// and the He / Glorot uniform initialisers against their limits and moments.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { Conv2d } from '../../src/nn/layers.js';
import { bilinearInit, glorotUniform, heUniform } from '../../src/nn/init.js';
import { Rng } from '../../src/data/prng.js';

before(() => configureEngine({ threads: 2, precision: 'float32' }));

/**
 * The FCN bilinear kernel, written from its definition in float64: factor = (k+1)//2,
 * centre = factor−1 for odd k and factor−0.5 for even k, w = (1−|y−c|/f)(1−|x−c|/f).
 */
function bilinearReference(k: number): number[][] {
  const factor = Math.floor((k + 1) / 2);
  const centre = k % 2 === 1 ? factor - 1 : factor - 0.5;
  const tent = (i: number) => 1 - Math.abs(i - centre) / factor;
  return Array.from({ length: k }, (_, y) => Array.from({ length: k }, (_, x) => tent(y) * tent(x)));
}

function transposedLayer(classes: number, k: number, stride: number): Conv2d {
  return new Conv2d(`up${k}`, { inChannels: classes, outChannels: classes, kernel: k, stride, transposed: true });
}

test('the bilinear reference itself: k = 4 and k = 3 by hand', () => {
  const outer = (v: number[]) => v.map((a) => v.map((b) => a * b));
  assert.deepEqual(bilinearReference(4), outer([0.25, 0.75, 0.75, 0.25]));
  assert.deepEqual(bilinearReference(3), outer([0.5, 1, 0.5]));
});

for (const k of [4, 16, 32, 64, 3, 7]) {
  test(`bilinear init, k = ${k}: the closed form on the class i→i diagonal, zero elsewhere`, () => {
    const classes = 3;
    const layer = transposedLayer(classes, k, Math.max(1, Math.floor(k / 2)));
    try {
      bilinearInit(layer.kernel);
      assert.deepEqual(layer.kernel.dims, [classes, classes, k, k]); // O, I, KH, KW
      const values = layer.kernel.value.toArray() as Float32Array;
      const ref = bilinearReference(k);
      let worst = 0;
      for (let o = 0; o < classes; o++)
        for (let i = 0; i < classes; i++)
          for (let y = 0; y < k; y++)
            for (let x = 0; x < k; x++) {
              const v = values[((o * classes + i) * k + y) * k + x];
              const want = o === i ? ref[y][x] : 0;
              worst = Math.max(worst, Math.abs(v - want));
            }
      // Values in [0, 1] rounded to float32: within half an ulp of 1.
      assert.ok(worst <= 6e-8, `worst |kernel − closed form| = ${worst}`);
    } finally {
      for (const p of layer.params()) p.dispose();
    }
  });
}

test('bilinear init refuses a kernel that maps between different numbers of classes', () => {
  const layer = new Conv2d('mixed', { inChannels: 2, outChannels: 3, kernel: 4, stride: 2, transposed: true });
  try {
    assert.throws(() => bilinearInit(layer.kernel), /mixed\.kernel: bilinear init needs a square kernel with as many outputs as inputs, got 3×2×4×4/);
  } finally {
    for (const p of layer.params()) p.dispose();
  }
});

// Upsampling by s with the bilinear kernel k = 2s and Keras 'same' padding (k − s)/2 keeps a
// constant image constant wherever an output pixel gets its full set of contributions: each
// output pixel sums one tap per input pixel over two input pixels per axis, and for this
// kernel those taps add to 1. Each class keeps its own value (no mixing between classes).
for (const [k, s] of [[4, 2], [16, 8], [64, 32]] as const) {
  test(`transposed conv ${k}/${s} with bilinear weights maps a constant image to the same constant away from the borders`, () => {
    const classes = 3, h = 6, w = 5;
    const constants = [1, -2.5, 40];
    const layer = transposedLayer(classes, k, s);
    const x = native.fromArray([1, classes, h, w], Float32Array.from({ length: classes * h * w }, (_, i) => constants[Math.floor(i / (h * w))]));
    let y: ReturnType<Conv2d['forward']> | null = null;
    try {
      bilinearInit(layer.kernel);
      assert.equal(layer.padding, (k - s) / 2);
      y = layer.forward(x, { training: false, precision: 'float32', tape: null, seed: 0 });
      const [n, c, oh, ow] = y.dims;
      assert.deepEqual([n, c, oh, ow], [1, classes, h * s, w * s]);
      const out = y.toArray() as Float32Array;
      // Output row o gets taps from input rows i with 0 ≤ o + pad − s·i < k: rows within
      // s − pad = s/2 of an edge see only one input row (likewise for columns).
      const margin = s / 2;
      let interior = 0, worst = 0;
      for (let ch = 0; ch < classes; ch++)
        for (let r = margin; r < oh - margin; r++)
          for (let q = margin; q < ow - margin; q++) {
            worst = Math.max(worst, Math.abs(out[(ch * oh + r) * ow + q] - constants[ch]));
            interior++;
          }
      assert.ok(interior > 0);
      assert.ok(worst <= 1e-5 * 40, `interior differs from the constant by up to ${worst}`);
      // The corner pixel sees a single input pixel through one tap per axis: tent(c − ...)²,
      // i.e. the kernel's entry at (pad, pad), times the constant.
      const tap = bilinearReference(k)[(k - s) / 2][(k - s) / 2];
      for (let ch = 0; ch < classes; ch++) {
        const corner = out[ch * oh * ow];
        assert.ok(Math.abs(corner - tap * constants[ch]) <= 1e-5 * Math.abs(constants[ch]), `class ${ch}: corner ${corner}, want ${tap * constants[ch]}`);
        assert.ok(Math.abs(corner - constants[ch]) > 0.01 * Math.abs(constants[ch]), 'the corner is a border pixel: not the constant');
      }
    } finally {
      x.dispose();
      y?.dispose();
      layer.clearCaches();
      for (const p of layer.params()) p.dispose();
    }
  });
}

/** Mean, variance and largest magnitude in float64. */
function moments(a: Float32Array): { mean: number; variance: number; maxAbs: number } {
  let sum = 0, sq = 0, maxAbs = 0;
  for (const v of a) {
    sum += v;
    sq += v * v;
    maxAbs = Math.max(maxAbs, Math.abs(v));
  }
  const mean = sum / a.length;
  return { mean, variance: sq / a.length - mean * mean, maxAbs };
}

// Kernel O, I, KH, KW. The second is larger than the initialiser's 2^20-value slice, so a
// slice written twice or left unwritten would show.
const kernels: [string, number, number, number][] = [
  ['3×3, 32→64', 64, 32, 3],
  ['3×3, 512→256 (more than one slice)', 256, 512, 3],
  ['7×7, 16→24', 24, 16, 7],
];

for (const [name, o, i, k] of kernels) {
  for (const kind of ['he', 'glorot'] as const) {
    test(`${kind} uniform, ${name}: inside ±limit, filling it, zero mean, variance limit²/3, seeded`, () => {
      const fanIn = i * k * k, fanOut = o * k * k;
      const limit = kind === 'he' ? Math.sqrt(6 / fanIn) : Math.sqrt(6 / (fanIn + fanOut));
      const init = kind === 'he' ? heUniform : glorotUniform;
      const layers = Array.from({ length: 3 }, (_, j) => new Conv2d(`c${j}`, { inChannels: i, outChannels: o, kernel: k, relu: true }));
      try {
        const [a, b, c] = layers;
        init(a.kernel, new Rng(11));
        init(b.kernel, new Rng(11));
        init(c.kernel, new Rng(12));
        const va = a.kernel.value.toArray() as Float32Array;
        const n = va.length;
        assert.equal(n, o * i * k * k);
        const m = moments(va);
        assert.ok(m.maxAbs <= limit * (1 + 1e-6), `max |w| ${m.maxAbs} > limit ${limit}`);
        assert.ok(m.maxAbs >= 0.99 * limit, `max |w| ${m.maxAbs} is well inside the limit ${limit}: the range is not used`);
        // Standard errors of a uniform's sample mean and variance: limit/√(3n) and
        // (2/√45)·limit²/√n; five of them.
        assert.ok(Math.abs(m.mean) <= (5 * limit) / Math.sqrt(3 * n), `mean ${m.mean}`);
        const wantVariance = (limit * limit) / 3;
        assert.ok(Math.abs(m.variance - wantVariance) <= (5 * 2 * limit * limit) / Math.sqrt(45 * n), `variance ${m.variance}, want ${wantVariance}`);
        // Both halves of a large kernel are drawn, not one slice repeated.
        const half = Math.floor(n / 2);
        let same = 0;
        for (let j = 0; j < 1000; j++) if (va[j] === va[half + j]) same++;
        assert.ok(same < 5, `${same} of 1000 values repeat half a kernel later`);
        assert.deepEqual(b.kernel.value.toArray(), va, 'the same seed gives the same kernel');
        const vc = c.kernel.value.toArray() as Float32Array;
        let equal = 0;
        for (let j = 0; j < n; j++) if (vc[j] === va[j]) equal++;
        assert.ok(equal < n / 1000, 'another seed gives another kernel');
      } finally {
        for (const l of layers) for (const p of l.params()) p.dispose();
      }
    });
  }
}
