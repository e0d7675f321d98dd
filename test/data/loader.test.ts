import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { synthesizeDataset } from '../../src/data/synth.js';
import { vocDataset, type Dataset } from '../../src/data/datasets.js';
import { collate, DataLoader, type Batch } from '../../src/data/loader.js';
import { evalPipeline, trainPipeline } from '../../src/data/transforms.js';
import { needShared, repoRoot, tempDir, vocRoot } from './helpers.js';

function digest(b: Batch): string {
  let h = 0;
  for (let i = 0; i < b.labels.length; i += 13) h = (Math.imul(h, 31) + b.labels[i]!) >>> 0;
  for (let i = 0; i < b.images.length; i += 17) h = (Math.imul(h, 31) + Math.round(b.images[i]! * 8)) >>> 0;
  return `${b.ids.join(',')}|${b.n}×${b.height}×${b.width}|${h}`;
}
async function epochDigests(l: DataLoader, k: number, startBatch = 0): Promise<string[]> {
  const out: string[] = [];
  for await (const b of l.epoch(k, { startBatch })) out.push(digest(b));
  return out;
}

describe('collate', () => {
  test('pads to the largest sample: labels with 255, images with 0', () => {
    const a = { id: 'a', width: 2, height: 1, image: Float32Array.from([1, 2, 3, 4, 5, 6]), label: Uint8Array.from([1, 2]) };
    const b = { id: 'b', width: 1, height: 2, image: Float32Array.from([7, 8, 9, 10, 11, 12]), label: Uint8Array.from([3, 4]) };
    const batch = collate([a, b]);
    assert.deepEqual([batch.n, batch.height, batch.width], [2, 2, 2]);
    assert.deepEqual(Array.from(batch.labels), [1, 2, 255, 255, 3, 255, 4, 255]);
    assert.deepEqual(Array.from(batch.images.subarray(0, 12)), [1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0, 0]);
    assert.deepEqual(Array.from(batch.images.subarray(12, 16)), [7, 0, 8, 0]);
    assert.deepEqual(batch.sizes, [{ height: 1, width: 2 }, { height: 2, width: 1 }]);
  });
});

describe('DataLoader on a synthetic dataset', () => {
  let dir = '';
  let cleanup = () => {};
  let ds: Dataset;
  before(async () => {
    ({ dir, cleanup } = tempDir('loader'));
    await synthesizeDataset({ out: dir, count: 30, seed: 5, size: 64 });
    ds = await vocDataset(dir, { split: 'trainval' });
  });
  after(() => cleanup());

  test('epoch order depends only on (seed, epoch), is a permutation, and differs between epochs', () => {
    const mk = (seed: number) => new DataLoader({ dataset: ds, pipeline: trainPipeline({ size: 48 }), batchSize: 4, seed, workers: 0 });
    const a = mk(7), b = mk(7), c = mk(8);
    assert.deepEqual(a.order(3), b.order(3));
    assert.notDeepEqual(a.order(3), a.order(4));
    assert.notDeepEqual(a.order(3), c.order(3));
    assert.deepEqual([...a.order(3)].sort((x, y) => x - y), Array.from({ length: 30 }, (_, i) => i));
    assert.equal(a.batchesPerEpoch, 8);
    assert.equal(new DataLoader({ dataset: ds, pipeline: trainPipeline(), batchSize: 4, dropLast: true }).batchesPerEpoch, 7);
    assert.deepEqual(new DataLoader({ dataset: ds, pipeline: trainPipeline(), shuffle: false }).order(5), Array.from({ length: 30 }, (_, i) => i));
  });

  test('same batches with 0, 1 or 2 workers; resuming at a batch gives the rest of the same epoch', async () => {
    const opts = { dataset: ds, pipeline: trainPipeline({ size: 48 }), batchSize: 4, seed: 11 };
    const inProc = new DataLoader({ ...opts, workers: 0 });
    const one = new DataLoader({ ...opts, workers: 1 });
    const two = new DataLoader({ ...opts, workers: 2, prefetch: 1 });
    try {
      const ref = await epochDigests(inProc, 2);
      assert.equal(ref.length, 8);
      assert.deepEqual(await epochDigests(one, 2), ref);
      assert.deepEqual(await epochDigests(two, 2), ref);
      assert.deepEqual(await epochDigests(two, 2, 5), ref.slice(5));
      assert.deepEqual(await epochDigests(new DataLoader({ ...opts, workers: 0, prefetch: 0 }), 2), ref);
      const other = await epochDigests(one, 3);
      assert.notDeepEqual(other, ref);
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  test('prefetch: while the consumer holds batch b, batches b+1 … b+prefetch are decoding (no more), so a slow consumer finds the next one ready', async () => {
    const prefetch = 2, batchSize = 4;
    const l = new DataLoader({ dataset: ds, pipeline: trainPipeline({ size: 48 }), batchSize, seed: 2, workers: 1, prefetch });
    // Every sample load the loader starts, in order, and whether it has finished.
    const loads: { index: number; done: boolean; result: Promise<unknown> }[] = [];
    const spy = l as unknown as { load: (index: number, epoch: number) => Promise<unknown> };
    const load = spy.load.bind(l);
    spy.load = (index, epoch) => {
      const record = { index, done: false, result: Promise.resolve() as Promise<unknown> };
      record.result = load(index, epoch).then((r) => ((record.done = true), r));
      loads.push(record);
      return record.result;
    };
    try {
      const order = l.order(0);
      let b = 0, readyBeforeAsked = new Set<number>();
      for await (const batch of l.epoch(0)) {
        const started = Math.min(order.length, (b + 1 + prefetch) * batchSize);
        assert.deepEqual(loads.map((r) => r.index), order.slice(0, started), `batch ${b}: the loads started are those of batches ≤ ${b + prefetch}`);
        if (b > 0) assert.ok(batch.indices.every((i) => readyBeforeAsked.has(i)), `batch ${b} was decoded before the consumer asked for it`);
        // A "training step" slower than decoding: it ends after every load started so far.
        await Promise.all(loads.map((r) => r.result));
        readyBeforeAsked = new Set(loads.filter((r) => r.done).map((r) => r.index));
        b++;
      }
      assert.equal(b, l.batchesPerEpoch);
    } finally {
      await l.close();
    }
  });

  test('batches are NCHW / NHW with labels in the class set or 255', async () => {
    const l = new DataLoader({ dataset: ds, pipeline: trainPipeline({ size: 40 }), batchSize: 8, seed: 1, workers: 1, dropLast: true });
    try {
      let seen = 0;
      for await (const b of l.epoch(0)) {
        assert.equal(b.images.length, b.n * 3 * 40 * 40);
        assert.equal(b.labels.length, b.n * 40 * 40);
        assert.ok(b.labels.every((v) => v <= 5 || v === 255));
        assert.equal(b.n, 8);
        seen += b.n;
      }
      assert.equal(seen, 24);
    } finally {
      await l.close();
    }
  });

  test('bad pairs: the epoch fails naming the file, or they are skipped and reported', async () => {
    const broken = join(dir, 'JPEGImages', 'broken.jpg');
    writeFileSync(broken, 'not a jpeg');
    const bad: Dataset = { ...ds, entries: [...ds.entries.slice(0, 5), { id: 'broken', image: broken, label: ds.entries[0]!.label }] };
    const strict = new DataLoader({ dataset: bad, pipeline: evalPipeline(), batchSize: 3, shuffle: false, workers: 1 });
    await assert.rejects(async () => { for await (const _ of strict.epoch(0)) { /* drain */ } }, (e: Error) => e.message.startsWith(`${broken}: not a readable image`));
    await strict.close();
    const reported: string[] = [];
    const lenient = new DataLoader({ dataset: bad, pipeline: evalPipeline(), batchSize: 3, shuffle: false, workers: 0, onBad: 'skip', onSkip: (b) => reported.push(b.file) });
    const ns: number[] = [];
    for await (const b of lenient.epoch(0)) ns.push(b.n);
    assert.deepEqual(ns, [3, 2]);
    assert.deepEqual(reported, [broken]);
    assert.equal(lenient.skipped[0]!.id, 'broken');
    assert.throws(() => new DataLoader({ dataset: { ...ds, entries: [] }, pipeline: evalPipeline() }), /empty dataset/);
  });

  test('workers run from compiled JavaScript too (worker.js next to loader.js)', async () => {
    const out = join(repoRoot, '.cache', `loader-js-${process.pid}`);
    mkdirSync(out, { recursive: true });
    try {
      execFileSync(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'),
        '--outDir', out, '--rootDir', join(repoRoot, 'src'), '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022',
        '--strict', '--skipLibCheck', '--esModuleInterop', '--declaration', 'false',
        join(repoRoot, 'src', 'data', 'loader.ts'), join(repoRoot, 'src', 'data', 'worker.ts'), join(repoRoot, 'src', 'data', 'datasets.ts')], { stdio: 'pipe' });
      const script = `
        const { DataLoader } = await import(${JSON.stringify(pathToFileURL(join(out, 'data', 'loader.js')).href)});
        const { vocDataset } = await import(${JSON.stringify(pathToFileURL(join(out, 'data', 'datasets.js')).href)});
        const ds = await vocDataset(${JSON.stringify(dir)}, { split: 'trainval' });
        const l = new DataLoader({ dataset: ds, pipeline: { means: 'keras', steps: [{ op: 'randomCrop', height: 48 }] }, batchSize: 4, seed: 11, workers: 1 });
        let n = 0; for await (const b of l.epoch(0)) n += b.n;
        await l.close();
        console.log(n);`;
      // Plain node, no tsx: the worker must load worker.js.
      const main = join(out, 'main.mjs');
      writeFileSync(main, script);
      const res = execFileSync(process.execPath, [main], { cwd: repoRoot, encoding: 'utf8' });
      assert.equal(res.trim(), '30');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

describe('DataLoader on the real VOC sample', () => {
  test('images of different sizes batch with padding to the largest', { skip: needShared(vocRoot) }, async () => {
    const ds = await vocDataset(vocRoot, { split: 'val' });
    const l = new DataLoader({ dataset: ds, pipeline: evalPipeline(), batchSize: 6, shuffle: false, workers: 1 });
    try {
      const it = l.epoch(0);
      const b = (await it.next()).value as Batch;
      await it.return(undefined);
      assert.equal(b.height, Math.max(...b.sizes.map((s) => s.height)));
      assert.equal(b.width, Math.max(...b.sizes.map((s) => s.width)));
      const i = b.sizes.findIndex((s) => s.height < b.height);
      if (i >= 0) {
        const row = b.sizes[i]!.height;
        const start = i * b.height * b.width + row * b.width;
        assert.ok(b.labels.subarray(start, start + b.width).every((v) => v === 255));
        assert.ok(b.images.subarray(i * 3 * b.height * b.width + row * b.width, i * 3 * b.height * b.width + (row + 1) * b.width).every((v) => v === 0));
      }
    } finally {
      await l.close();
    }
  });
});
