// The optimisers over several steps against float64 references written here from their
// definitions: Adam as Keras (bias correction folded into the step size, ε outside the
// square root, L2 as 2λw added to the gradient of conv kernels only) and SGD with momentum
// as Caffe (biases at twice the rate and without decay). Frozen parameters and parameters
// without a gradient stay as they are.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { Param, PreparedWeights } from '../../src/nn/param.js';
import { Rng } from '../../src/data/prng.js';
import { Adam, Sgd, type Optimizer } from '../../src/train/optim.js';

before(() => configureEngine({ threads: 2, precision: 'float32' }));

const STEPS = 6;

interface Spec {
  name: string;
  dims: number[];
  role: 'kernel' | 'bias';
  transposed: boolean;
  trainable: boolean;
  /** False: no gradient is ever set (a layer the loss does not reach). */
  hasGrad: boolean;
}

const SPECS: Spec[] = [
  { name: 'conv.kernel', dims: [6, 4, 3, 3], role: 'kernel', transposed: false, trainable: true, hasGrad: true },
  { name: 'conv.bias', dims: [6], role: 'bias', transposed: false, trainable: true, hasGrad: true },
  // Trainable here on purpose: an upsampling kernel carries no L2 (Keras regularises only
  // the conv kernels it was asked to).
  { name: 'up.kernel', dims: [3, 3, 4, 4], role: 'kernel', transposed: true, trainable: true, hasGrad: true },
  { name: 'frozen.kernel', dims: [2, 2, 1, 1], role: 'kernel', transposed: false, trainable: false, hasGrad: true },
  { name: 'unreached.kernel', dims: [2, 3, 1, 1], role: 'kernel', transposed: false, trainable: true, hasGrad: false },
];

const size = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** Start values and a gradient per step, each element's magnitude kept away from zero. */
function problem(seed: number): { start: Float64Array[]; grads: Float64Array[][] } {
  const rng = new Rng(seed);
  const away = () => (rng.next() < 0.5 ? -1 : 1) * rng.uniform(0.05, 1);
  const start = SPECS.map((s) => Float64Array.from({ length: size(s.dims) }, away));
  const grads = Array.from({ length: STEPS }, () => SPECS.map((s) => Float64Array.from({ length: size(s.dims) }, away)));
  return { start, grads };
}

/** Runs the optimiser for every step of the problem; returns the final values and the state. */
function runOptimizer(opt: Optimizer, p: ReturnType<typeof problem>): { values: Float32Array[]; state: Map<string, Float32Array> } {
  const params = SPECS.map((s, k) => {
    const param = new Param(s.name, native.fromArray(s.dims, Float32Array.from(p.start[k])), s.role, s.transposed);
    param.trainable = s.trainable;
    return param;
  });
  try {
    for (let t = 0; t < STEPS; t++) {
      params.forEach((param, k) => SPECS[k].hasGrad && param.setGrad(native.fromArray(SPECS[k].dims, Float32Array.from(p.grads[t][k]))));
      opt.step(params);
    }
    const state = new Map([...opt.stateArrays()].map(([name, t]) => [name, t.toArray() as Float32Array]));
    return { values: params.map((param) => param.value.toArray() as Float32Array), state };
  } finally {
    for (const param of params) param.dispose();
    opt.dispose();
  }
}

function worstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

test('Adam over 6 steps matches a float64 Keras Adam (bias correction at every t, L2 on conv kernels only)', () => {
  const lr = 0.01, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7, l2 = 0.05;
  const p = problem(3);
  const { values, state } = runOptimizer(new Adam({ lr, l2 }), p);

  // Reference, float64.
  const w = p.start.map((a) => Float64Array.from(a));
  const m = SPECS.map((s) => new Float64Array(size(s.dims)));
  const v = SPECS.map((s) => new Float64Array(size(s.dims)));
  for (let t = 1; t <= STEPS; t++) {
    const lrT = (lr * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t);
    SPECS.forEach((s, k) => {
      if (!s.trainable || !s.hasGrad) return;
      const regularized = s.role === 'kernel' && !s.transposed;
      for (let i = 0; i < w[k].length; i++) {
        const g = p.grads[t - 1][k][i] + (regularized ? 2 * l2 * w[k][i] : 0);
        m[k][i] = beta1 * m[k][i] + (1 - beta1) * g;
        v[k][i] = beta2 * v[k][i] + (1 - beta2) * g * g;
        w[k][i] -= (lrT * m[k][i]) / (Math.sqrt(v[k][i]) + epsilon);
      }
    });
  }

  SPECS.forEach((s, k) => {
    const moved = worstDiff(values[k], p.start[k]);
    if (!s.trainable || !s.hasGrad) {
      // Exactly as given (to float32).
      assert.deepEqual(values[k], Float32Array.from(p.start[k]), `${s.name} changed`);
      return;
    }
    // Each step moves a weight by up to about lr: six of them, well above the tolerance.
    assert.ok(moved > 0.02, `${s.name} moved only ${moved}`);
    const d = worstDiff(values[k], w[k]);
    assert.ok(d <= 2e-6, `${s.name}: |w − reference| up to ${d}`);
    assert.ok(worstDiff(state.get(`m.${s.name}`)!, m[k]) <= 1e-6, `${s.name}: first moment`);
    assert.ok(worstDiff(state.get(`v.${s.name}`)!, v[k]) <= 1e-7, `${s.name}: second moment`);
  });
});

test('the Adam reference is sensitive to what it checks: without bias correction or without L2 it is far off', () => {
  // Guards the tolerance above: the simplifications a wrong implementation might make move
  // the result by far more than 2e-6.
  const lr = 0.01, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7, l2 = 0.05;
  const p = problem(3);
  const { values } = runOptimizer(new Adam({ lr, l2 }), p);
  const variant = (correct: boolean, withL2: boolean) => {
    const w = Float64Array.from(p.start[0]);
    const m = new Float64Array(w.length), v = new Float64Array(w.length);
    for (let t = 1; t <= STEPS; t++) {
      const lrT = correct ? (lr * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t) : lr;
      for (let i = 0; i < w.length; i++) {
        const g = p.grads[t - 1][0][i] + (withL2 ? 2 * l2 * w[i] : 0);
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        w[i] -= (lrT * m[i]) / (Math.sqrt(v[i]) + epsilon);
      }
    }
    return w;
  };
  assert.ok(worstDiff(values[0], variant(true, true)) <= 2e-6);
  assert.ok(worstDiff(values[0], variant(false, true)) > 1e-3);
  assert.ok(worstDiff(values[0], variant(true, false)) > 1e-4);
});

test('SGD with momentum over 6 steps matches a float64 Caffe SGD (bias: twice the rate, no decay)', () => {
  const lr = 0.02, momentum = 0.9, weightDecay = 0.01;
  const p = problem(4);
  const { values, state } = runOptimizer(new Sgd({ lr, momentum, weightDecay }), p);

  const w = p.start.map((a) => Float64Array.from(a));
  const vel = SPECS.map((s) => new Float64Array(size(s.dims)));
  for (let t = 1; t <= STEPS; t++) {
    SPECS.forEach((s, k) => {
      if (!s.trainable || !s.hasGrad) return;
      const bias = s.role === 'bias';
      const rate = bias ? 2 * lr : lr, decay = bias ? 0 : weightDecay;
      for (let i = 0; i < w[k].length; i++) {
        vel[k][i] = momentum * vel[k][i] - rate * (p.grads[t - 1][k][i] + decay * w[k][i]);
        w[k][i] += vel[k][i];
      }
    });
  }

  SPECS.forEach((s, k) => {
    if (!s.trainable || !s.hasGrad) {
      assert.deepEqual(values[k], Float32Array.from(p.start[k]), `${s.name} changed`);
      return;
    }
    assert.ok(worstDiff(values[k], p.start[k]) > 0.02, `${s.name} barely moved`);
    assert.ok(worstDiff(values[k], w[k]) <= 1e-6, `${s.name}: |w − reference| up to ${worstDiff(values[k], w[k])}`);
    assert.ok(worstDiff(state.get(`velocity.${s.name}`)!, vel[k]) <= 1e-6, `${s.name}: velocity`);
  });
});

test('optimiser state saved and restored mid-way continues exactly as without the break', () => {
  const p = problem(5);
  const straight = runOptimizer(new Adam({ lr: 0.01, l2: 0.05 }), p);
  // The first half, save, a new optimiser loading it, the second half.
  const params = SPECS.map((s, k) => {
    const param = new Param(s.name, native.fromArray(s.dims, Float32Array.from(p.start[k])), s.role, s.transposed);
    param.trainable = s.trainable;
    return param;
  });
  const first = new Adam({ lr: 0.01, l2: 0.05 }), second = new Adam({ lr: 0.01, l2: 0.05 });
  try {
    const stepWith = (opt: Optimizer, t: number) => {
      params.forEach((param, k) => SPECS[k].hasGrad && param.setGrad(native.fromArray(SPECS[k].dims, Float32Array.from(p.grads[t][k]))));
      opt.step(params);
    };
    for (let t = 0; t < STEPS / 2; t++) stepWith(first, t);
    second.loadState(first.stateArrays(), first.stateScalars());
    assert.equal(second.steps, STEPS / 2);
    for (let t = STEPS / 2; t < STEPS; t++) stepWith(second, t);
    params.forEach((param, k) => assert.deepEqual(param.value.toArray(), straight.values[k], `${SPECS[k].name}`));
  } finally {
    for (const param of params) param.dispose();
    first.dispose();
    second.dispose();
  }
});

// A weight-gradient kernel's blocked layout: the optimiser keeps the master (and its state) in
// it, so that the update reads all of them in one order. Nothing a user reads may change: the
// value reads plain and equal to the plain-gradient run's, with its version and copies kept.
for (const make of [() => new Adam({ lr: 0.01, l2: 0.05 }), () => new Sgd({ lr: 0.01, momentum: 0.9, weightDecay: 5e-4 })])
  test(`${make().kind}: a kernel's master kept in its gradient's blocked layout reads as the plain run's`, () => {
    const dims = [48, 40, 3, 3];
    const x = native.fromArray([1, 40, 6, 5], Float32Array.from({ length: 40 * 30 }, (_, i) => Math.sin(i)));
    const conv = { stride: [1, 1] as [number, number], padding: [1, 1, 1, 1] as [number, number, number, number], dtype: 'float32' as const };
    const f = native.convForward(x, native.fromArray(dims, Float32Array.from({ length: size(dims) }, (_, i) => Math.cos(i))), null, conv);
    const grads = [0, 1, 2].map((k) => {
      const dy = native.scale(f.y, 1 + k);
      const g = native.convBackwardWeights(x, dy, { ...conv, weightsDims: dims, bias: false, algorithm: 'direct', gradLayout: 'any' }).dw;
      dy.dispose();
      return g;
    });
    assert.notEqual(grads[0]!.layout, 'plain');
    const start = Float32Array.from({ length: size(dims) }, (_, i) => 0.1 * Math.sin(3 * i));
    const blocked = new Param('conv.kernel', native.fromArray(dims, start), 'kernel', false);
    const plain = new Param('conv.kernel', native.fromArray(dims, start), 'kernel', false);
    const held = new Param('conv.kernel', native.fromArray(dims, start), 'kernel', false);
    // A copy the update cannot rewrite (Winograd's) is made from the master each step: it stays plain.
    const winograd = new PreparedWeights(held);
    const opts = [make(), make(), make()];
    try {
      for (const g of grads) {
        blocked.setGrad(native.reorder(g, { like: g }));
        held.setGrad(native.reorder(g, { like: g }));
        plain.setGrad(native.reorder(g));
        winograd.update(native.zeros([8]), false, false);
        opts[0]!.step([blocked]);
        opts[1]!.step([plain]);
        opts[2]!.step([held]);
        assert.equal(blocked.master.layout, g.layout, 'the master is kept in the gradient\'s layout');
        assert.equal(held.master.layout, 'plain');
        for (const t of opts[0]!.stateArrays().values()) assert.equal(t.layout, g.layout, 'and so is its state');
      }
      const version = blocked.version;
      assert.deepEqual(blocked.value.toArray(), plain.value.toArray());
      assert.deepEqual(held.value.toArray(), plain.value.toArray());
      assert.equal(blocked.master.layout, 'plain', 'reading the value puts the master back in the plain layout');
      assert.equal(blocked.version, version, 'with the same values: no new version');
      const state = (o: Optimizer) => [...o.stateArrays().values()].map((t) => t.toArray());
      assert.deepEqual(state(opts[0]!), state(opts[1]!));
      // The next step takes the gradient's layout again, and still equals the plain run.
      blocked.setGrad(native.reorder(grads[0]!, { like: grads[0]! }));
      plain.setGrad(native.reorder(grads[0]!));
      opts[0]!.step([blocked]);
      opts[1]!.step([plain]);
      assert.equal(blocked.master.layout, grads[0]!.layout);
      assert.deepEqual(blocked.value.toArray(), plain.value.toArray());
    } finally {
      winograd.clear();
      for (const t of [x, f.y, f.weightsCache, ...grads]) t?.dispose();
      for (const p of [blocked, plain, held]) p.dispose();
      for (const o of opts) o.dispose();
    }
  });
