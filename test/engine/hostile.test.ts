// The addon cannot be crashed from JS: every export, given hostile arguments (wrong kinds,
// wrong ranks, zero, negative and huge sizes, mismatched shapes, disposed tensors, getters
// that change things mid-call), throws an Error whose message starts with the export's name —
// a TypeError for a wrong kind or type, a RangeError for a bad value or size — and the process
// lives on to compute correct results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native, NATIVE_EXPORTS, type Tensor } from '../../src/engine/binding.js';
import * as ref from './reference.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

type ErrorClass = typeof TypeError | typeof RangeError | typeof Error;

/** Asserts that fn throws an `kind` (exactly) whose message starts with `op: ` (and matches `pattern`). */
function rejects(op: string, fn: () => unknown, kind: ErrorClass, pattern?: RegExp): void {
  let thrown: unknown = null;
  let result: unknown;
  try {
    result = fn();
  } catch (e) {
    thrown = e;
  }
  if (thrown === null) {
    disposeResult(result);
    assert.fail(`${op}: expected a ${kind.name}, but the call returned`);
  }
  assert.ok(thrown instanceof Error, `${op}: threw a non-Error ${String(thrown)}`);
  assert.equal(thrown.constructor, kind, `${op}: expected a ${kind.name}, got ${thrown.constructor.name}: ${thrown.message}`);
  assert.ok(thrown.message.startsWith(`${op}: `), `message does not start with '${op}: ': ${thrown.message}`);
  if (pattern) assert.match(thrown.message, pattern);
}

/** Disposes every tensor in an op's result (a tensor, or an object of tensors). */
function disposeResult(r: unknown): void {
  if (r instanceof native.Tensor) (r as Tensor).dispose();
  else if (r && typeof r === 'object') for (const v of Object.values(r)) if (v instanceof native.Tensor) (v as Tensor).dispose();
}

const f32 = (dims: number[], fill = (i: number) => Math.sin(i)) => native.fromArray(dims, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => fill(i)));

// Valid arguments for every export (each call below must succeed); the sweeps replace one
// argument at a time by something hostile.
const x = f32([1, 3, 8, 8]);
const w = f32([4, 3, 3, 3]);
const b = f32([4]);
const dy = f32([1, 4, 8, 8]);
const labels = native.fromArray([1, 8, 8], Uint8Array.from({ length: 64 }, (_, i) => i % 3));
const pooled = native.maxPoolForward(x, { training: true });
const dyPool = f32([1, 3, 4, 4]);
const drop = native.dropoutForward(x, { rate: 0.5, seed: 1 });
// Adam's second moment v is a mean of squares: non-negative, or the update is NaN.
const p = f32([5]), g = f32([5]), m = f32([5]), v = f32([5], (i) => Math.sin(i) ** 2);
const adam = { alpha: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
const threads = native.info().threads;
const conv = { padding: [1, 1, 1, 1] as [number, number, number, number] };
const xq = native.fromArray([1, 3, 8, 8], Uint8Array.from({ length: 192 }, (_, i) => (i * 7) % 256));
const wq = native.fromArray([4, 3, 3, 3], Int8Array.from({ length: 108 }, (_, i) => ((i * 5) % 129) - 64));
const convInt8 = { ...conv, relu: true, scales: new Float32Array(4).fill(0.01), output: 'uint8' as const };

// Argument kinds: what counts as a wrong kind for each.
type Kind = 'tensor' | 'tensor?' | 'options' | 'dims' | 'typed' | 'number' | 'offset' | 'bool?' | 'dtype?' | 'ints' | 'array';
interface Export {
  args: () => unknown[];
  kinds: Kind[];
}
const exportsUnderTest: Record<string, Export> = {
  fromArray: { args: () => [[2, 2], new Float32Array(4)], kinds: ['dims', 'typed'] },
  writeArray: { args: () => [p, new Float32Array(2), 1], kinds: ['tensor', 'typed', 'offset'] },
  view: { args: () => [p], kinds: ['tensor'] },
  zeros: { args: () => [[2, 2], 'float32'], kinds: ['dims', 'dtype?'] },
  reorder: { args: () => [x, { dtype: 'float32' }], kinds: ['tensor', 'options'] },
  permute: { args: () => [x, [0, 2, 1, 3]], kinds: ['tensor', 'ints'] },
  poolStats: { args: () => [], kinds: [] },
  poolTrim: { args: () => [false], kinds: ['bool?'] },
  setCacheLimits: { args: () => [{}], kinds: ['options'] },
  convForward: { args: () => [x, w, b, conv], kinds: ['tensor', 'tensor', 'tensor?', 'options'] },
  convBackwardData: { args: () => [dy, w, x, conv], kinds: ['tensor', 'tensor', 'tensor', 'options'] },
  convBackwardWeights: { args: () => [x, dy, { ...conv, weightsDims: [4, 3, 3, 3], bias: true }], kinds: ['tensor', 'tensor', 'options'] },
  convForwardInt8: { args: () => [xq, wq, b, convInt8], kinds: ['tensor', 'tensor', 'tensor?', 'options'] },
  maxPoolForward: { args: () => [x, { training: true }], kinds: ['tensor', 'options'] },
  maxPoolBackward: { args: () => [dyPool, pooled.workspace, x, {}], kinds: ['tensor', 'tensor', 'tensor', 'options'] },
  reluForward: { args: () => [x], kinds: ['tensor'] },
  reluBackward: { args: () => [x, x], kinds: ['tensor', 'tensor'] },
  add: { args: () => [x, x], kinds: ['tensor', 'tensor'] },
  scale: { args: () => [x, 2], kinds: ['tensor', 'number'] },
  dropoutForward: { args: () => [x, { rate: 0.5, seed: 1 }], kinds: ['tensor', 'options'] },
  dropoutBackward: { args: () => [x, drop.mask, { rate: 0.5 }], kinds: ['tensor', 'tensor', 'options'] },
  cropPad: { args: () => [x, { top: -1, left: 2, height: 5, width: 9 }], kinds: ['tensor', 'options'] },
  argmax: { args: () => [x], kinds: ['tensor'] },
  softmaxCrossEntropy: { args: () => [x, labels, {}], kinds: ['tensor', 'tensor', 'options'] },
  adamUpdate: { args: () => [p, g, m, v, { ...adam, l2: 0 }], kinds: ['tensor', 'tensor', 'tensor', 'tensor', 'options'] },
  adamUpdateAll: { args: () => [[p], [g], [m], [v], [0], adam], kinds: ['array', 'array', 'array', 'array', 'array', 'options'] },
  sgdUpdate: { args: () => [p, g, v, { lr: 0.1, momentum: 0.9, weightDecay: 0 }], kinds: ['tensor', 'tensor', 'tensor', 'options'] },
  sumSquares: { args: () => [p], kinds: ['tensor'] },
  absMax: { args: () => [x], kinds: ['tensor'] },
  setThreads: { args: () => [threads], kinds: ['number'] },
  info: { args: () => [], kinds: [] },
};

function disposedTensor(): Tensor {
  const t = native.zeros([1, 3, 8, 8]);
  t.dispose();
  return t;
}

// Values of the wrong kind for each argument kind (absent values only where the argument is required).
const common = (): unknown[] => [0, NaN, 'x', true, Symbol('s'), 10n, () => 0, new Proxy({}, {})];
const wrongKinds: Record<Kind, () => unknown[]> = {
  tensor: () => [undefined, null, {}, [], new Float32Array(4), Object.create(x), { dims: [1, 3, 8, 8], dtype: 'float32', nbytes: 768 }, disposedTensor(), ...common()],
  'tensor?': () => [{}, [], Object.create(x), disposedTensor(), ...common()],
  options: () => [5, 'x', true, Symbol('s'), 10n, [], () => 0],
  dims: () => [undefined, null, {}, 'x', 4, [2, 'a'], [2, null], new Float32Array([2, 2])],
  typed: () => [undefined, null, {}, [1, 2, 3, 4], new Float64Array(4), new Int16Array(4), new Uint32Array(4), new ArrayBuffer(16), x, 'x'],
  number: () => [undefined, null, '2', {}, [2], x, true, 10n],
  offset: () => [null, '1', {}, true, 10n],
  'bool?': () => [1, 'yes', {}, []],
  'dtype?': () => [null, 1, {}, true],
  ints: () => [undefined, null, 'x', {}, [0, 'a', 1, 2], [0, null, 1, 2]],
  array: () => [undefined, null, {}, 'x', p, 5],
};

test('the list of exports under test is the addon\'s', () => {
  assert.deepEqual(Object.keys(exportsUnderTest).sort(), NATIVE_EXPORTS.filter((e) => e !== 'Tensor').sort());
});

/** `r` as a tensor of these dims and dtype. */
function tensorOf(r: unknown, dims: number[], dtype: string, what: string): Tensor {
  assert.ok(r instanceof native.Tensor, `${what}: a Tensor, got ${String(r)}`);
  assert.deepEqual([r.dims, r.dtype], [dims, dtype], what);
  return r;
}
/** A tensor's values (−0 as 0: a sign of zero is no result). */
const values = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>, (u) => u + 0);
const asArr = (t: Tensor) => ref.arr(t.dims, values(t));
/** Within float32 rounding of a float64 reference (relative to its largest magnitude). */
function near(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tolerance = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const e = ref.relError(actual, expected);
  assert.ok(e <= tolerance, `${what}: relative error ${e}`);
}
/** A call that returns nothing and changes `t`'s values (to finite ones), returning them. */
function updates(call: () => unknown, t: Tensor, what: string): number[] {
  const before = values(t);
  assert.equal(call(), undefined, what);
  const after = values(t);
  assert.notDeepEqual(after, before, `${what} changed nothing`);
  assert.ok(after.every(Number.isFinite), `${what}: ${after}`);
  return after;
}
const relu = (a: number[]) => a.map((u) => Math.max(0, u));
const isCount = (n: unknown) => Number.isInteger(n) && (n as number) >= 0;

// What each export's valid call in the sweeps gives: the sweeps' rejections mean something only
// if the same call with these arguments does its job.
const expectations: Record<string, (call: () => unknown) => void> = {
  fromArray: (call) => assert.deepEqual(values(tensorOf(call(), [2, 2], 'float32', 'fromArray')), [0, 0, 0, 0]),
  writeArray: (call) => {
    const before = values(p);
    assert.equal(call(), undefined);
    assert.deepEqual(values(p), [before[0], 0, 0, before[3], before[4]]);
  },
  zeros: (call) => assert.deepEqual(values(tensorOf(call(), [2, 2], 'float32', 'zeros')), [0, 0, 0, 0]),
  view: (call) => {
    const v = call() as Float32Array, old = v[0]!;
    assert.deepEqual(Array.from(v), values(p));
    v[0] = old + 1;
    assert.equal(values(p)[0], old + 1, 'a write through the view is the tensor\'s');
    v[0] = old;
  },
  reorder: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'reorder')), values(x)),
  permute: (call) => {
    const y = values(tensorOf(call(), [1, 8, 3, 8], 'float32', 'permute')), xs = values(x);
    for (let c = 0; c < 3; c++) for (let h = 0; h < 8; h++) for (let w2 = 0; w2 < 8; w2++) assert.equal(y[(h * 3 + c) * 8 + w2], xs[(c * 8 + h) * 8 + w2]);
  },
  poolStats: (call) => {
    const s = call() as Record<string, unknown>;
    assert.deepEqual(Object.keys(s).sort(), ['liveBuffers', 'liveBytes', 'pooledBuffers', 'pooledBytes', 'primitives']);
    assert.ok(Object.values(s).every(isCount) && (s.liveBuffers as number) > 0, JSON.stringify(s));
  },
  poolTrim: (call) => {
    assert.equal(call(), undefined);
    assert.equal(native.poolStats().pooledBytes, 0, 'no idle buffer left');
  },
  setCacheLimits: (call) => {
    const limits = call() as Record<string, unknown>;
    assert.deepEqual(Object.keys(limits).sort(), ['poolBytes', 'primitives']);
    assert.ok((limits.poolBytes as number) > 0 && (limits.primitives as number) > 0, JSON.stringify(limits));
    assert.deepEqual(native.setCacheLimits({}), limits, 'an empty call changes nothing');
  },
  convForward: (call) => {
    const r = call() as { y: Tensor; weightsCache: Tensor };
    near(values(tensorOf(r.y, [1, 4, 8, 8], 'float32', 'convForward')), ref.conv(asArr(x), asArr(w), asArr(b), { stride: 1, pad: 1 }).data, 'convForward');
    tensorOf(r.weightsCache, [4, 3, 3, 3], 'float32', 'convForward weightsCache');
  },
  convBackwardData: (call) => {
    // dx·x' = dy·conv(x') for the linear map x' ↦ conv(x'): check it at x' = x.
    const r = call() as { dx: Tensor };
    const dx = asArr(tensorOf(r.dx, [1, 3, 8, 8], 'float32', 'convBackwardData'));
    const lhs = ref.dot(dx, asArr(x)), rhs = ref.dot(ref.conv(asArr(x), asArr(w), null, { stride: 1, pad: 1 }), asArr(dy));
    assert.ok(Math.abs(lhs - rhs) <= 1e-5 * Math.abs(rhs), `⟨dx, x⟩ ${lhs} vs ⟨dy, conv(x)⟩ ${rhs}`);
  },
  convBackwardWeights: (call) => {
    const r = call() as { dw: Tensor; db: Tensor };
    const dw = asArr(tensorOf(r.dw, [4, 3, 3, 3], 'float32', 'convBackwardWeights dw'));
    const lhs = ref.dot(dw, asArr(w)), rhs = ref.dot(ref.conv(asArr(x), asArr(w), null, { stride: 1, pad: 1 }), asArr(dy));
    assert.ok(Math.abs(lhs - rhs) <= 1e-5 * Math.abs(rhs), `⟨dw, w⟩ ${lhs} vs ⟨dy, conv(x; w)⟩ ${rhs}`);
    const dys = values(dy);
    near(values(tensorOf(r.db, [4], 'float32', 'convBackwardWeights db')), [0, 1, 2, 3].map((o) => dys.slice(o * 64, (o + 1) * 64).reduce((a, u) => a + u, 0)), 'db');
  },
  convForwardInt8: (call) => {
    // relu(0.01 · (Σ u8·s8 + bias)), the sum exact in int32, rounded to uint8 (saturating).
    const r = call() as { y: Tensor; weightsCache: Tensor };
    const y = values(tensorOf(r.y, [1, 4, 8, 8], 'uint8', 'convForwardInt8'));
    const want = Array.from(ref.conv(asArr(xq), asArr(wq), asArr(b), { stride: 1, pad: 1 }).data, (u) => Math.min(255, Math.max(0, 0.01 * u)));
    const off = y.findIndex((u, i) => Math.abs(u - want[i]!) > 0.5 + 1e-3);
    assert.equal(off, -1, `int8 convolution at ${off}: ${y[off]} for ${want[off]}`);
    assert.ok(y.some((u) => u > 0) && y.some((u) => u === 0), 'some outputs positive, some clipped by the ReLU');
    tensorOf(r.weightsCache, [4, 3, 3, 3], 'int8', 'convForwardInt8 weightsCache');
  },
  maxPoolForward: (call) => {
    const r = call() as { y: Tensor; workspace: Tensor };
    assert.deepEqual(values(tensorOf(r.y, [1, 3, 4, 4], 'float32', 'maxPoolForward')), Array.from(Float32Array.from(ref.maxPool(asArr(x), 2, false).data)));
    tensorOf(r.workspace, [1, 3, 4, 4], 'uint8', 'maxPoolForward workspace');
  },
  maxPoolBackward: (call) => {
    // Each window's gradient goes to its maximum, nowhere else.
    const dx = values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'maxPoolBackward')), xs = values(x), g2 = values(dyPool);
    const y = ref.maxPool(asArr(x), 2, false).data;
    const want = xs.map((u, i) => {
      const c = Math.floor(i / 64), h = Math.floor((i % 64) / 8), w2 = i % 8, o = (c * 4 + (h >> 1)) * 4 + (w2 >> 1);
      return u === Math.fround(y[o]!) ? g2[o]! : 0;
    });
    assert.deepEqual(dx, want);
  },
  reluForward: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'reluForward')), relu(values(x))),
  reluBackward: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'reluBackward')), relu(values(x))),
  add: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'add')), values(x).map((u) => 2 * u)),
  scale: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'scale')), values(x).map((u) => 2 * u)),
  dropoutForward: (call) => {
    const r = call() as { y: Tensor; mask: Tensor };
    const mask = values(tensorOf(r.mask, [1, 3, 8, 8], 'uint8', 'dropoutForward mask'));
    assert.ok(mask.every((k) => k === 0 || k === 1) && mask.some((k) => k === 0) && mask.some((k) => k === 1), `mask ${mask}`);
    assert.deepEqual(values(tensorOf(r.y, [1, 3, 8, 8], 'float32', 'dropoutForward')), values(x).map((u, i) => (mask[i] ? 2 * u : 0)));
  },
  dropoutBackward: (call) => {
    const mask = values(drop.mask);
    assert.deepEqual(values(tensorOf(call(), [1, 3, 8, 8], 'float32', 'dropoutBackward')), values(x).map((u, i) => (mask[i] ? 2 * u : 0)));
  },
  cropPad: (call) => assert.deepEqual(values(tensorOf(call(), [1, 3, 5, 9], 'float32', 'cropPad')), Array.from(ref.cropPad(asArr(x), -1, 2, 5, 9).data)),
  argmax: (call) => {
    const xs = values(x);
    const want = Array.from({ length: 64 }, (_, i) => [0, 1, 2].reduce((best, c) => (xs[c * 64 + i]! > xs[best * 64 + i]! ? c : best), 0));
    assert.deepEqual(values(tensorOf(call(), [1, 8, 8], 'uint8', 'argmax')), want);
  },
  softmaxCrossEntropy: (call) => {
    const r = call() as { loss: number; valid: number; grad: Tensor };
    assert.equal(r.valid, 64);
    near([r.loss], [ref.softmaxCrossEntropy(asArr(x), Uint8Array.from(values(labels)), 'mean')], 'loss');
    tensorOf(r.grad, [1, 3, 8, 8], 'float32', 'softmaxCrossEntropy grad');
  },
  adamUpdate: (call) => void updates(call, p, 'adamUpdate'),
  adamUpdateAll: (call) => void updates(call, p, 'adamUpdateAll'),
  sgdUpdate: (call) => void updates(call, p, 'sgdUpdate'),
  sumSquares: (call) => near([call() as number], [values(p).reduce((a, u) => a + u * u, 0)], 'sumSquares'),
  absMax: (call) => assert.equal(call(), Math.max(...values(x).map(Math.abs))),
  setThreads: (call) => {
    assert.equal(call(), undefined);
    assert.equal(native.info().threads, threads);
  },
  info: (call) => {
    const i = call() as Record<string, unknown>;
    assert.deepEqual(Object.keys(i).sort(), ['cpuRuntime', 'isa', 'onednnVersion', 'threads']);
    assert.match(String(i.onednnVersion), /^\d+\.\d+/);
    assert.ok(typeof i.isa === 'string' && i.isa.length > 0 && i.threads === threads);
  },
};

test('every export does its job with the sweeps\' valid arguments', () => {
  assert.deepEqual(Object.keys(expectations).sort(), Object.keys(exportsUnderTest).sort());
  for (const [op, e] of Object.entries(exportsUnderTest)) {
    const fn = (native as unknown as Record<string, (...a: unknown[]) => unknown>)[op];
    let result: unknown;
    try {
      expectations[op]!(() => (result = fn(...e.args())));
    } finally {
      disposeResult(result);
    }
  }
});

test('every export rejects arguments of the wrong kind with a TypeError naming it', () => {
  for (const [op, e] of Object.entries(exportsUnderTest)) {
    const fn = (native as unknown as Record<string, (...a: unknown[]) => unknown>)[op];
    e.kinds.forEach((kind, i) => {
      for (const bad of wrongKinds[kind]()) {
        const args = e.args();
        args[i] = bad;
        rejects(op, () => fn(...args), TypeError);
      }
    });
    // Required arguments left out altogether.
    if (e.kinds.length > 0 && !['tensor?', 'options', 'bool?', 'dtype?', 'offset'].includes(e.kinds[0])) rejects(op, () => fn(), TypeError);
  }
});

test('disposed tensors are refused by name', () => {
  rejects('reluForward', () => native.reluForward(disposedTensor()), TypeError, /x has been disposed/);
  rejects('convForward', () => native.convForward(x, w, null, { weightsCache: disposedTensor() }), TypeError, /weightsCache has been disposed/);
  rejects('adamUpdateAll', () => native.adamUpdateAll([p, p], [g, disposedTensor()], [m, m], [v, v], [0, 0], adam), TypeError, /parameter 1: grad has been disposed/);
  rejects('toArray', () => disposedTensor().toArray(), TypeError, /has been disposed/);
});

test('tensors, sizes and shapes that do not fit are refused with a RangeError naming the op', () => {
  const R = RangeError, T = TypeError;
  const i32 = native.zeros([1, 3, 8, 8], 'int32');
  const cases: [string, () => unknown, ErrorClass, RegExp?][] = [
    // sizes
    ['fromArray', () => native.fromArray([0], new Float32Array(0)), R, /dims must be ≥ 1, got \[0\]/],
    ['fromArray', () => native.fromArray([-2, 2], new Float32Array(4)), R],
    ['fromArray', () => native.fromArray([1.5], new Float32Array(1)), R, /integers/],
    ['fromArray', () => native.fromArray([], new Float32Array(0)), R, /1 to 5 sizes/],
    ['fromArray', () => native.fromArray([1, 1, 1, 1, 1, 1], new Float32Array(1)), R, /1 to 5 sizes/],
    ['fromArray', () => native.fromArray([2 ** 53], new Float32Array(1)), R],
    ['fromArray', () => native.fromArray([2 ** 30, 2 ** 30, 2 ** 30], new Float32Array(1)), R, /more than 2\^40 elements/],
    ['fromArray', () => native.fromArray([2, 2], new Float32Array(3)), R, /data has 3 elements but dims 2x2 need 4/],
    ['zeros', () => native.zeros([2 ** 20, 2 ** 20]), R, /out of memory/], // 4 TB: the allocation fails
    ['zeros', () => native.zeros([2, 2], 'float64' as never), R, /unknown dtype 'float64'/],
    ['writeArray', () => native.writeArray(p, new Float32Array(2), -1), R],
    ['writeArray', () => native.writeArray(p, new Float32Array(2), 4), R, /do not fit/],
    ['writeArray', () => native.writeArray(p, new Float32Array(2), 2 ** 60), R],
    ['writeArray', () => native.writeArray(p, new Int32Array(2)), T, /float32 but the data int32/],
    ['reorder', () => native.reorder(x, { like: p }), R, /shapes differ/],
    ['reorder', () => native.reorder(x, { dtype: 'float16' as never }), R],
    ['reorder', () => native.reorder(x, { dtype: 'uint8', scale: 0 }), R, /scale must be a finite nonzero number/],
    ['reorder', () => native.reorder(x, { dtype: 'uint8', scale: -Infinity }), R, /scale must be a finite number/],
    ['reorder', () => native.reorder(x, { dtype: 'uint8', scale: 2 ** 200 }), R, /float32's range/],
    ['reorder', () => native.reorder(x, { dtype: 'uint8', scale: 2 ** -200 }), R, /float32's range/],
    ['reorder', () => native.reorder(x, { scale: x as never }), T, /scale must be a number/],
    ['permute', () => native.permute(x, [0, 0, 1, 2]), R, /each of the tensor's 4 axes once/],
    ['permute', () => native.permute(x, [0, 1, 2]), R, /each of the tensor's 4 axes once/],
    ['permute', () => native.permute(x, [0, 1, 2, 4]), R, /each of the tensor's 4 axes once/],
    ['permute', () => native.permute(x, [0, 1, 2, -3]), R],
    ['permute', () => native.permute(x, [0, 1, 2, 3.5]), R],
    // convolution geometry
    ['convForward', () => native.convForward(x, w, null, { stride: [0, 1] }), R, /stride must be ≥ 1, got \[0, 1\]/],
    ['convForward', () => native.convForward(x, w, null, { stride: [1, -1] }), R],
    ['convForward', () => native.convForward(x, w, null, { stride: [2 ** 40, 1] }), R],
    ['convForward', () => native.convForward(x, w, null, { stride: [1] as never }), R, /stride must have 2 values/],
    ['convForward', () => native.convForward(x, w, null, { padding: [-1, 0, 0, 0] }), R, /padding must be ≥ 0/],
    ['convForward', () => native.convForward(x, w, null, { padding: [1, 1] as never }), R, /padding must have 4 values/],
    ['convForward', () => native.convForward(x, w, null, { padding: [NaN, 0, 0, 0] }), R],
    ['convForward', () => native.convForward(x, w, null, { padding: [2 ** 30, 2 ** 30, 0, 0] }), R, /more than 2\^40 elements/],
    ['convForward', () => native.convForward(x, f32([4, 3, 9, 9]), null, {}), R, /too small for kernel/],
    ['convForward', () => native.convForward(x, f32([4, 3, 9, 3]), null, { stride: [3, 3] }), R, /too small/],
    ['convForward', () => native.convForward(x, native.zeros([2, 4, 3, 3]), null, {}), R, /input has 3 channels but the weights expect 4/],
    ['convForward', () => native.convForward(f32([3, 8, 8]), w, null, {}), R, /x must be N,C,H,W \(rank 4\), got 3x8x8/],
    ['convForward', () => native.convForward(x, f32([4, 27]), null, {}), R, /weights must be O,I,KH,KW/],
    ['convForward', () => native.convForward(x, w, f32([5]), conv), R, /bias is 5, expected 4/],
    ['convForward', () => native.convForward(x, w, f32([2, 2]), conv), R, /bias is 2x2/],
    ['convForward', () => native.convForward(x, w, null, { stride: [2 ** 31 - 1, 1], transposed: true, padding: [0, 0, 0, 0] }), R],
    ['convForward', () => native.convForward(x, w, null, { dtype: 'float16' as never }), R, /dtype must be one of 'float32', 'bfloat16'/],
    ['convForward', () => native.convForward(x, w, null, { dtype: 16 as never }), T],
    ['convForward', () => native.convForward(x, w, null, { relu: 1 as never }), T, /relu must be a boolean/],
    ['convForward', () => native.convForward(i32, w, null, conv), T, /x must be float32 or bfloat16, got int32/],
    ['convForward', () => native.convForward(x, w, null, { algorithm: 'fft' as never }), R, /algorithm must be one of 'direct', 'winograd', 'winograd-gemm', 'subpixel', got 'fft'/],
    ['convForward', () => native.convForward(x, w, null, { algorithm: 3 as never }), T, /algorithm must be a string/],
    ['convForward', () => native.convForward(x, w, null, { algorithm: 'winograd', transposed: true }), R, /'winograd' is for float32 convolution only/],
    ['convForward', () => native.convForward(x, w, null, { algorithm: 'winograd', dtype: 'bfloat16' }), R, /'winograd' is for float32 convolution only/],
    // int8 convolution
    ['convForwardInt8', () => native.convForwardInt8(x, wq, null, convInt8), T, /x must be uint8 or int8, got float32/],
    ['convForwardInt8', () => native.convForwardInt8(xq, w, null, convInt8), T, /weights must be int8, got float32/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, i32, convInt8), T, /bias must be float32/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, f32([5]), convInt8), R, /bias is 5, expected 4/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: new Float32Array(3).fill(1) }), R, /scales has 3 values but the weights have 4 output channels/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: new Float32Array(2 ** 20) }), R, /scales\[0\] must be a finite number > 0/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: Float32Array.from([1, 1, 1, -0]) }), R, /scales\[3\]/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: new Float32Array(new SharedArrayBuffer(16)).fill(1), output: 'int32' as never }), R, /output must be one of 'uint8', 'float32'/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: new Uint8Array(4) as never }), T, /scales must be a Float32Array/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, scales: null as never }), T, /scales must be given/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, output: null as never }), T, /output must be given/],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, stride: [2 ** 40, 1] }), R],
    ['convForwardInt8', () => native.convForwardInt8(xq, wq, null, { ...convInt8, padding: [2 ** 30, 2 ** 30, 0, 0] }), R, /more than 2\^40 elements/],
    ['convForwardInt8', () => native.convForwardInt8(xq, native.zeros([4, 3, 9, 9], 'int8'), null, { ...convInt8, padding: [0, 0, 0, 0] }), R, /too small for kernel/],
    ['convForwardInt8', () => native.convForwardInt8(xq, native.zeros([4, 5, 3, 3], 'int8'), null, convInt8), R, /input has 3 channels but the weights expect 5/],
    ['convForwardInt8', () => native.convForwardInt8(native.zeros([3, 8, 8], 'uint8'), wq, null, convInt8), R, /x must be N,C,H,W/],
    ['convForwardInt8', () => native.convForwardInt8(xq, native.zeros([4, 27], 'int8'), null, convInt8), R, /weights must be O,I,KH,KW/],
    ['convBackwardData', () => native.convBackwardData(f32([1, 4, 7, 8]), w, x, conv), R, /dy is 1x4x7x8, expected 1x4x8x8/],
    ['convBackwardData', () => native.convBackwardData(dy, w, x, { ...conv, stride: [0, 0] }), R, /stride/],
    ['convBackwardWeights', () => native.convBackwardWeights(x, dy, { ...conv, weightsDims: [0, 3, 3, 3], bias: true }), R, /weightsDims must be ≥ 1/],
    ['convBackwardWeights', () => native.convBackwardWeights(x, dy, { ...conv, weightsDims: [4, 3, 3], bias: true }), R, /weightsDims must have 4 values/],
    ['convBackwardWeights', () => native.convBackwardWeights(x, dy, { ...conv, bias: true } as never), T, /weightsDims must be given/],
    ['convBackwardWeights', () => native.convBackwardWeights(x, dy, { ...conv, weightsDims: [4, 5, 3, 3], bias: true }), R, /channels/],
    ['convBackwardWeights', () => native.convBackwardWeights(x, f32([1, 4, 8, 9]), { ...conv, weightsDims: [4, 3, 3, 3], bias: true }), R, /dy is/],
    // pooling
    ['maxPoolForward', () => native.maxPoolForward(x, { kernel: 0 }), R, /kernel must be an integer ≥ 1, got 0/],
    ['maxPoolForward', () => native.maxPoolForward(x, { stride: -1 }), R],
    ['maxPoolForward', () => native.maxPoolForward(x, { kernel: 9 }), R, /smaller than the window/],
    ['maxPoolForward', () => native.maxPoolForward(x, { kernel: 2 ** 40 }), R],
    ['maxPoolForward', () => native.maxPoolForward(f32([8, 8]), {}), R, /rank 4/],
    ['maxPoolForward', () => native.maxPoolForward(x, { ceil: 'yes' as never }), T],
    ['maxPoolForward', () => native.maxPoolForward(i32, {}), T],
    ['maxPoolForward', () => native.maxPoolForward(xq, { training: true }), T, /uint8, which max pooling takes for inference only/],
    ['maxPoolForward', () => native.maxPoolForward(native.zeros([1, 1, 4, 4], 'int8'), {}), T, /x must be float32, bfloat16 or uint8, got int8/],
    ['maxPoolBackward', () => native.maxPoolBackward(dyPool, pooled.workspace!, xq, {}), T, /uint8/],
    ['maxPoolBackward', () => native.maxPoolBackward(f32([1, 3, 5, 4]), pooled.workspace!, x, {}), R, /dy is 1x3x5x4, expected 1x3x4x4/],
    ['maxPoolBackward', () => native.maxPoolBackward(dyPool, dyPool, x, {}), R, /workspace does not belong/],
    // element-wise
    ['add', () => native.add(x, f32([1, 3, 8, 7])), R, /shapes differ/],
    ['add', () => native.add(i32, i32), T],
    ['reluBackward', () => native.reluBackward(dy, x), R, /dy is 1x4x8x8 but y is 1x3x8x8/],
    ['scale', () => native.scale(x, NaN), R, /finite/],
    ['scale', () => native.scale(x, Infinity), R, /finite/],
    ['dropoutForward', () => native.dropoutForward(x, { rate: 1, seed: 0 }), R, /rate must be in \[0, 1\)/],
    ['dropoutForward', () => native.dropoutForward(x, { rate: -0.1, seed: 0 }), R],
    ['dropoutForward', () => native.dropoutForward(x, { rate: 0.5, seed: -1 }), R, /seed/],
    ['dropoutForward', () => native.dropoutForward(x, { rate: 0.5, seed: 0.5 }), R, /seed/],
    ['dropoutBackward', () => native.dropoutBackward(x, x, { rate: 0.5 }), T, /mask must be uint8/],
    ['dropoutBackward', () => native.dropoutBackward(dy, drop.mask, { rate: 0.5 }), R, /dy is 1x4x8x8 but the mask 1x3x8x8/],
    ['cropPad', () => native.cropPad(x, { height: 0 }), R, /height/],
    ['cropPad', () => native.cropPad(x, { width: -3 }), R, /width/],
    ['cropPad', () => native.cropPad(x, { top: 0.5 }), R, /top/],
    ['cropPad', () => native.cropPad(x, { left: 2 ** 60 }), R, /left/],
    ['cropPad', () => native.cropPad(x, { height: 2 ** 20, width: 2 ** 20 }), R, /more than 2\^40 elements/],
    ['cropPad', () => native.cropPad(x, { value: NaN }), R, /value/],
    ['cropPad', () => native.cropPad(f32([3, 8, 8]), {}), R, /rank 4/],
    ['argmax', () => native.argmax(native.zeros([1, 300, 1, 1])), R, /at most 256/],
    ['argmax', () => native.argmax(f32([8, 8])), R, /rank 4/],
    ['argmax', () => native.argmax(labels), R],
    // loss
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, native.fromArray([1, 8, 8], new Uint8Array(64).fill(3))), R, /label 3 at pixel 0 is not a class \(0..2\) nor the ignore label 255/],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, f32([1, 8, 8])), T, /labels must be uint8/],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, native.zeros([1, 8, 7], 'uint8')), R, /labels is 1x8x7, expected 1x8x8/],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, labels, { ignore: 256 }), R, /ignore/],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, labels, { reduction: 'max' as never }), R, /reduction must be one of 'mean', 'sum'/],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(x, labels, { reduction: 1 as never }), T],
    ['softmaxCrossEntropy', () => native.softmaxCrossEntropy(f32([64]), labels), R, /rank 4/],
    // optimisers
    ['adamUpdate', () => native.adamUpdate(p, f32([6]), m, v, { ...adam, l2: 0 }), R, /grad does not match the weights/],
    ['adamUpdate', () => native.adamUpdate(native.zeros([5], 'int32'), g, m, v, { ...adam, l2: 0 }), T, /weights must be float32/],
    ['adamUpdate', () => native.adamUpdate(p, g, m, v, { ...adam, alpha: NaN, l2: 0 }), R, /alpha/],
    ['adamUpdate', () => native.adamUpdate(p, g, m, v, { ...adam, beta1: '0.9' as never, l2: 0 }), T, /beta1/],
    ['adamUpdateAll', () => native.adamUpdateAll([p], [g, g], [m], [v], [0], adam), R, /same length/],
    ['adamUpdateAll', () => native.adamUpdateAll([p], [g], [m], [v], ['0' as never], adam), T, /l2\[0\]/],
    ['adamUpdateAll', () => native.adamUpdateAll([p, 5 as never], [g, g], [m, m], [v, v], [0, 0], adam), T, /parameter 1: weights must be a Tensor/],
    ['adamUpdateAll', () => { const huge = () => new Array(2 ** 32 - 1); return native.adamUpdateAll(huge(), huge(), huge(), huge(), huge(), adam); }, T, /l2\[0\]/],
    ['sgdUpdate', () => native.sgdUpdate(p, g, f32([2, 3]), { lr: 0.1, momentum: 0.9, weightDecay: 0 }), R, /velocity does not match/],
    ['sgdUpdate', () => native.sgdUpdate(p, g, v, { lr: Infinity, momentum: 0.9, weightDecay: 0 }), R, /lr/],
    ['sumSquares', () => native.sumSquares(native.zeros([3], 'uint8')), T],
    ['absMax', () => native.absMax(native.zeros([3], 'int8')), T, /tensor must be float32 or bfloat16, got int8/],
    ['absMax', () => native.absMax(i32), T],
    // engine settings
    ['setThreads', () => native.setThreads(0), R, /count must be an integer ≥ 1, got 0/],
    ['setThreads', () => native.setThreads(1e6), R],
    ['setThreads', () => native.setThreads(1.5), R],
    ['setCacheLimits', () => native.setCacheLimits({ poolBytes: -1 }), R, /poolBytes/],
    ['setCacheLimits', () => native.setCacheLimits({ primitives: 'many' as never }), T, /primitives/],
    ['poolTrim', () => native.poolTrim('yes' as never), T],
  ];
  for (const [op, fn, kind, pattern] of cases) rejects(op, fn, kind, pattern);
  assert.equal(native.info().threads, threads, 'rejected calls changed nothing');
  i32.dispose();
});

test('Tensor objects cannot be made or faked from JS', () => {
  rejects('Tensor', () => new (native.Tensor as unknown as new () => Tensor)(), TypeError, /cannot be constructed directly/);
  class Sub extends (native.Tensor as unknown as new () => object) {}
  rejects('Tensor', () => new Sub(), TypeError);
  // instanceof can be made to lie; the addon does not ask it.
  Object.defineProperty(native.Tensor, Symbol.hasInstance, { value: () => true, configurable: true });
  try {
    rejects('reluForward', () => native.reluForward({} as Tensor), TypeError, /x must be a Tensor, got an object/);
    rejects('add', () => native.add(Object.create(x), x), TypeError, /a must be a Tensor/);
  } finally {
    delete (native.Tensor as unknown as Record<symbol, unknown>)[Symbol.hasInstance];
  }
  // Methods and accessors called on something else are refused before the addon runs.
  assert.throws(() => (native.Tensor.prototype as Tensor).toArray.call({}), TypeError);
  assert.throws(() => Object.getOwnPropertyDescriptor(native.Tensor.prototype, 'dims')!.get!.call(Object.create(x)), Error);
});

test('getters that run during a call cannot pull memory from under it', () => {
  const t = f32([1, 2, 3, 4], (i) => i);
  const before = native.poolStats().liveBuffers;
  // A getter on perm disposes t, frees idle buffers and empties the primitive cache while
  // permute holds t: the call completes on t's values, and t's buffer goes when it returns.
  const perm = [0, 1, 3, 2];
  Object.defineProperty(perm, 3, {
    get() {
      t.dispose();
      native.poolTrim(true);
      return 2;
    },
  });
  const out = native.permute(t, perm);
  assert.equal(t.disposed, true);
  assert.deepEqual(out.dims, [1, 2, 4, 3]);
  assert.deepEqual(Array.from(out.toArray()).slice(0, 4), [0, 4, 8, 1]);
  assert.equal(native.poolStats().liveBuffers, before, 't released after the call, out allocated');
  out.dispose();

  // Tensors of earlier parameters disposed by the getter of a later one.
  const ws = [f32([3]), f32([3])];
  const W = [...ws];
  Object.defineProperty(W, 1, { get: () => (ws[0].dispose(), ws[1]) });
  const gs = [f32([3]), f32([3])], ms = [native.zeros([3]), native.zeros([3])], vs = [native.zeros([3]), native.zeros([3])];
  native.adamUpdateAll(W, gs, ms, vs, [0, 0], adam);
  assert.equal(ws[0].disposed, true);
  assert.notDeepEqual(Array.from(ms[1].toArray()), [0, 0, 0], 'the update ran');
  for (const a of [ws, gs, ms, vs]) for (const s of a) s.dispose();

  // Options are read before tensors: a tensor disposed by an option getter is refused.
  const y = f32([1, 3, 8, 8]);
  rejects('convForward', () => native.convForward(y, w, null, { get stride() { y.dispose(); return [1, 1] as [number, number]; } }), TypeError, /x has been disposed/);
  const yq = native.fromArray([1, 3, 8, 8], new Uint8Array(192));
  rejects('convForwardInt8', () => native.convForwardInt8(yq, wq, null, { ...convInt8, get scales() { yq.dispose(); return new Float32Array(4).fill(1); } }), TypeError, /x has been disposed/);
  // Scales are copied when read: a getter that zeroes them afterwards changes nothing.
  const scales = new Float32Array(4).fill(1);
  const zq = native.fromArray([1, 3, 8, 8], new Uint8Array(192).fill(1));
  const late = native.convForwardInt8(zq, wq, null, { ...convInt8, scales, get weightsCache() { scales.fill(NaN); return null; } });
  const early = native.convForwardInt8(zq, wq, null, { ...convInt8, scales: new Float32Array(4).fill(1) });
  assert.deepEqual(late.y.toArray(), early.y.toArray());
  for (const t of [zq, late.y, late.weightsCache, early.y, early.weightsCache]) t?.dispose();
  // A getter that throws: its error comes through as it is.
  assert.throws(() => native.convForward(x, w, null, { get padding(): [number, number, number, number] { throw new SyntaxError('from the getter'); } }), SyntaxError);
  // Nested calls from a getter name their own op.
  const nested = { get height() { native.sumSquares(p); return 0; } };
  rejects('cropPad', () => native.cropPad(x, nested), RangeError, /height must be an integer ≥ 1, got 0/);
  assert.throws(
    () => native.convForward(x, w, null, { get stride(): [number, number] { native.reluForward(null as never); return [1, 1]; } }),
    (e: Error) => e instanceof TypeError && /^reluForward: x must be a Tensor/.test(e.message),
  );
});

test('after every rejection the engine still computes correctly and has leaked nothing', async () => {
  gc();
  await tick();
  gc();
  await tick();
  const live = native.poolStats().liveBuffers;
  const a = f32([1, 2, 3, 3], (i) => i - 9), c = native.reluForward(a);
  assert.deepEqual(Array.from(c.toArray()), Array.from({ length: 18 }, (_, i) => Math.max(0, i - 9)));
  a.dispose();
  c.dispose();
  assert.equal(native.poolStats().liveBuffers, live);
  // What the sweeps used, disposed: nothing the rejected calls made remains (after a collection).
  for (const t of [x, w, b, dy, labels, pooled.y, pooled.workspace!, dyPool, drop.y, drop.mask, p, g, m, v, xq, wq]) t.dispose();
  gc();
  await tick();
  gc();
  await tick();
  assert.equal(native.poolStats().liveBuffers, 0);
});
