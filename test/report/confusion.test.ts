import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ConfusionMatrix, formatMetricsTable, type Metrics } from '../../src/report/confusion.js';

const referenceScript = fileURLToPath(new URL('../reference/score.py', import.meta.url));

/** Runs the paper's score.py (in NumPy) on several matrices at once, under our metrics' names. */
function referenceMetrics(hists: number[][][]): Record<string, unknown>[] {
  const output = execFileSync('python3', [referenceScript, '--hists'], { input: JSON.stringify(hists), encoding: 'utf8' });
  const names: Record<string, string> = { overallAccuracy: 'pixelAccuracy', meanIU: 'meanIoU', fwavacc: 'frequencyWeightedIoU', perClassIU: 'perClassIoU' };
  return (JSON.parse(output) as Record<string, unknown>[]).map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [names[k] ?? k, v])));
}

/** Mulberry32: a small seeded generator so failures reproduce. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function matrixFrom(hist: number[][]): ConfusionMatrix {
  return ConfusionMatrix.fromJSON({ numClasses: hist.length, hist });
}

const tolerance = 1e-12;

/** Compares one metric: the reference writes NaN as null. */
function assertClose(actual: number, expected: unknown, what: string): void {
  if (expected === null) {
    assert.ok(Number.isNaN(actual), `${what}: expected NaN, got ${actual}`);
  } else {
    assert.equal(typeof expected, 'number');
    assert.ok(Math.abs(actual - (expected as number)) <= tolerance, `${what}: ${actual} vs reference ${expected}`);
  }
}

function assertMetricsEqualReference(actual: Metrics, expected: Record<string, unknown>, label: string): void {
  for (const key of ['pixelAccuracy', 'meanAccuracy', 'meanIoU', 'frequencyWeightedIoU', 'pixels'] as const) {
    assertClose(actual[key], expected[key], `${label} ${key}`);
  }
  for (const key of ['perClassIoU', 'perClassAccuracy'] as const) {
    const reference = expected[key] as unknown[];
    assert.equal(actual[key].length, reference.length, `${label} ${key} length`);
    actual[key].forEach((v, k) => assertClose(v, reference[k], `${label} ${key}[${k}]`));
  }
}

test('hand-computed case with classes absent from truth, from prediction, and from both', () => {
  // Rows = truth, columns = prediction.
  //   class 0: 3 right, 1 taken for class 1, 1 for class 2      row sum 5
  //   class 1: 2 taken for class 0, 4 right                      row sum 6
  //   class 2: never in the truth, predicted once                row sum 0, column sum 1
  //   class 3: one pixel, predicted as class 1 (never predicted) row sum 1, column sum 0
  //   class 4: in neither                                        0/0 everywhere
  // Column sums 5, 6, 1, 0, 0; total 12; diagonal 3, 4, 0, 0, 0.
  const hist = [
    [3, 1, 1, 0, 0],
    [2, 4, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0],
  ];
  const m = matrixFrom(hist).compute();
  // pixel acc = (3 + 4) / 12
  assert.ok(Math.abs(m.pixelAccuracy - 7 / 12) < 1e-15);
  // per-class acc = 3/5, 4/6, NaN (0/0), 0/1, NaN → mean over three = (3/5 + 2/3 + 0) / 3 = 19/45
  assert.deepEqual(m.perClassAccuracy.map((v) => Number.isNaN(v)), [false, false, true, false, true]);
  assert.ok(Math.abs(m.meanAccuracy - 19 / 45) < 1e-15);
  // IU: 3/(5+5−3) = 3/7, 4/(6+6−4) = 1/2, 0/(0+1−0) = 0, 0/(1+0−0) = 0, 0/0 = NaN
  // mean IU over four = (3/7 + 1/2) / 4 = 13/56 (class 2, predicted but absent, counts as 0)
  assert.ok(Math.abs(m.perClassIoU[0] - 3 / 7) < 1e-15);
  assert.equal(m.perClassIoU[1], 0.5);
  assert.equal(m.perClassIoU[2], 0);
  assert.equal(m.perClassIoU[3], 0);
  assert.ok(Number.isNaN(m.perClassIoU[4]));
  assert.ok(Math.abs(m.meanIoU - 13 / 56) < 1e-15);
  // freq = 5/12, 6/12, 0, 1/12, 0; fwIU = 5/12·3/7 + 6/12·1/2 + 1/12·0 = 5/28 + 7/28 = 3/7
  assert.ok(Math.abs(m.frequencyWeightedIoU - 3 / 7) < 1e-15);
  assert.equal(m.pixels, 12);
  // And the NumPy transcription agrees with the hand computation.
  assertMetricsEqualReference(m, referenceMetrics([hist])[0], 'hand case');
});

test('equals the NumPy transcription on random matrices with absent classes', () => {
  const random = seededRandom(20240611);
  const hists: number[][][] = [];
  const sizes = [1, 2, 3, 5, 8, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 40];
  for (const [i, n] of sizes.entries()) {
    // Scales from a handful of pixels to ~1e12 (beyond Uint32, still exact in float64).
    const scale = [3, 100, 1e5, 1e9, 1e12][i % 5];
    const hist = Array.from({ length: n }, () => Array.from({ length: n }, () => (random() < 0.3 ? 0 : Math.floor(random() * scale))));
    // Classes absent from truth (zero rows), from prediction (zero columns), and both.
    for (let k = 0; k < n; k++) {
      const r = random();
      if (r < 0.15) hist[k].fill(0);
      else if (r < 0.3) for (const row of hist) row[k] = 0;
      else if (r < 0.4) { hist[k].fill(0); for (const row of hist) row[k] = 0; }
    }
    hists.push(hist);
  }
  hists.push([[0, 0], [0, 0]]); // no pixels at all: everything undefined
  hists.push([[5, 0], [0, 0]]); // a single class, all right
  hists.push([[0, 7], [0, 0]]); // truth class 0 always predicted as 1
  const reference = referenceMetrics(hists);
  const sawAbsentTruth = hists.some((h) => h.some((row) => row.every((v) => v === 0)));
  const sawAbsentPrediction = hists.some((h) => h.some((_, k) => h.every((row) => row[k] === 0) && h[k].some((v) => v > 0)));
  assert.ok(sawAbsentTruth && sawAbsentPrediction, 'the random cases must cover absent classes');
  hists.forEach((hist, i) => assertMetricsEqualReference(matrixFrom(hist).compute(), reference[i], `matrix ${i} (${hist.length} classes)`));
});

/** Counts (truth, prediction) pairs the obvious way, for comparison with `update`. */
function naiveCounts(truth: Uint8Array, pred: Uint8Array, n: number): number[][] {
  const hist = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < truth.length; i++) {
    if (truth[i] === 255 || truth[i] >= n) continue;
    hist[truth[i]][pred[i]]++;
  }
  return hist;
}

test('update from label arrays equals a naive count, skipping void and out-of-range truth', () => {
  const random = seededRandom(7);
  const n = 21;
  const total = new ConfusionMatrix(n);
  const expected = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let image = 0; image < 4; image++) {
    const size = 97 * 61 + image;
    const truth = new Uint8Array(size), pred = new Uint8Array(size);
    for (let i = 0; i < size; i++) {
      const r = random();
      truth[i] = r < 0.1 ? 255 : r < 0.12 ? 30 : Math.floor(random() * n); // void and a stray value
      pred[i] = random() < 0.6 && truth[i] < n ? truth[i] : Math.floor(random() * n);
    }
    const single = new ConfusionMatrix(n);
    single.update(truth, pred);
    const naive = naiveCounts(truth, pred, n);
    assert.deepEqual(single.toJSON().hist, naive);
    total.merge(single);
    naive.forEach((row, t) => row.forEach((v, p) => { expected[t][p] += v; }));
  }
  assert.deepEqual(total.toJSON(), { numClasses: n, hist: expected });
});

test('update rejects mismatched sizes and out-of-range predictions; merge rejects other class counts', () => {
  const m = new ConfusionMatrix(3);
  assert.throws(() => m.update(new Uint8Array(4), new Uint8Array(5)), /4 pixels, prediction 5/);
  assert.throws(() => m.update(Uint8Array.of(0, 1), Uint8Array.of(0, 3)), /prediction 3 outside/);
  assert.throws(() => m.merge(new ConfusionMatrix(4)), /4 classes into 3/);
});

/** A typed array that counts the reads and writes of its elements. */
function counted<T extends Uint8Array | Float64Array>(array: T): { array: T; reads: () => number; writes: () => number } {
  let reads = 0, writes = 0;
  const isIndex = (p: string | symbol) => typeof p === 'string' && /^\d+$/.test(p);
  const proxy = new Proxy(array, {
    get(target, p) {
      if (isIndex(p)) reads++;
      const v = Reflect.get(target, p, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
    set(target, p, value) {
      if (isIndex(p)) writes++;
      return Reflect.set(target, p, value, target);
    },
  });
  return { array: proxy, reads: () => reads, writes: () => writes };
}

test('update does constant work per pixel: each label read once, one count added per non-void pixel', () => {
  // What keeps evaluation cheap next to the network: one pass over the pixels, no per-pixel
  // allocation or search (counted element accesses, not milliseconds).
  const size = 512 * 512, n = 21;
  const truth = new Uint8Array(size), pred = new Uint8Array(size);
  let valid = 0;
  for (let i = 0; i < size; i++) {
    truth[i] = i % 23 === 0 ? 255 : i % n;
    pred[i] = (i * 7) % n;
    if (truth[i] !== 255) valid++;
  }
  const m = new ConfusionMatrix(n);
  const t = counted(truth), p = counted(pred), c = counted(m.counts);
  Object.defineProperty(m, 'counts', { value: c.array });
  m.update(t.array, p.array);
  assert.equal(t.reads(), size, 'truth labels read');
  assert.equal(p.reads(), valid, 'predictions read (void pixels skip theirs)');
  assert.equal(c.writes(), valid, 'counts added');
  assert.ok(c.reads() <= valid, `counts read ${c.reads()} times`);
  assert.equal(m.compute().pixels, valid);
  assert.deepEqual(m.toJSON().hist, naiveCounts(truth, pred, n));
});

test('formatMetricsTable lists every class by name with its IoU, and undefined values as a dash', () => {
  const m = matrixFrom([[3, 1, 0], [1, 5, 0], [0, 0, 0]]).compute();
  const table = formatMetricsTable(m, ['background', 'aeroplane', 'bicycle']);
  const rows = table.split('\n');
  const row = (name: string) => rows.find((line) => line.startsWith(name + ' '));
  assert.match(row('background') ?? '', new RegExp(`\\s${(100 * 3 / 5).toFixed(2)}\\s`));
  assert.match(row('aeroplane') ?? '', new RegExp(`\\s${(100 * 5 / 7).toFixed(2)}\\s`));
  assert.match(row('bicycle') ?? '', /—\s+—$/);
  assert.match(table, new RegExp(`mean IoU %\\s+${(100 * m.meanIoU).toFixed(2)}`));
  assert.match(table, /pixels\s+10\n/);
});
