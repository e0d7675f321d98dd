// The addon in worker threads: each thread loads its own instance (its own tensor class,
// buffer pool, primitive cache and oneDNN stream), so a small FCN run in two workers at once
// and in the main thread gives the same labels, and the main thread keeps working after the
// workers have exited and their instances are gone.
//
// This file is also the workers' script: in a worker it computes the labels and posts them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';

const H = 45, W = 70; // not multiples of 32: the model pads, and crops back

function labels(): Uint8Array {
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  model.initialize(0);
  const x = native.fromArray([1, 3, H, W], Float32Array.from({ length: 3 * H * W }, (_, i) => Math.sin(i * 0.37) * 60 + ((i * 7) % 13)));
  const logits = model.predictLogits(x);
  const y = native.argmax(logits);
  const out = y.toArray() as Uint8Array;
  for (const t of [x, logits, y]) t.dispose();
  model.dispose();
  return out;
}

/** Runs this file in a worker (TypeScript through tsx's loader, registered in the worker) and resolves with its labels. */
function labelsInWorker(): Promise<Uint8Array> {
  const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};\nregister();\nawait import(${JSON.stringify(import.meta.url)});`;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(boot)}`));
  return new Promise((resolve, reject) => {
    let result: Uint8Array | null = null;
    worker.once('message', (m: Uint8Array) => (result = m));
    worker.once('error', reject);
    worker.once('exit', (code) => (result && code === 0 ? resolve(result) : reject(new Error(`worker exited with code ${code} without labels`))));
  });
}

if (!isMainThread) {
  parentPort!.postMessage(labels());
} else {
  test('an FCN in two workers at once and in the main thread gives identical labels', async () => {
    const workers = [labelsInWorker(), labelsInWorker()];
    // The main thread computes while the workers do.
    const main = labels();
    const [a, b] = await Promise.all(workers);
    assert.equal(main.length, H * W);
    assert.ok(new Set(main).size > 1, 'the labels vary, so agreeing on them means something');
    assert.deepEqual(a, main);
    assert.deepEqual(b, main);
    // The workers' instances are gone; this thread's own state is intact.
    assert.deepEqual(labels(), main);
    assert.equal(native.poolStats().liveBuffers, 0);
  });

  test('workers terminated in the middle of native calls, in a process where only workers load the addon', () => {
    // With no other thread holding the addon, each worker's exit unloads it (and what it
    // links, OpenMP included) while that worker's OpenMP threads still exist; a terminated
    // worker's last call cannot throw its error into JS. Neither may bring the process down.
    const addon = fileURLToPath(new URL('../../build/Release/fcn_native.node', import.meta.url));
    const worker = `
      const { parentPort } = require('node:worker_threads');
      const native = require(${JSON.stringify(addon)});
      const kept = Array.from({ length: 20 }, () => native.zeros([1, 8, 16, 16]));
      const x = native.zeros([1, 3, 48, 48]), w = native.zeros([8, 3, 3, 3]);
      parentPort.postMessage('running');
      for (;;) native.convForward(x, w, null, { padding: [1, 1, 1, 1] }).y.dispose();`;
    const main = `
      const { Worker } = require('node:worker_threads');
      (async () => {
        for (let round = 0; round < 3; round++) {
          const workers = [0, 1].map(() => new Worker(${JSON.stringify(worker)}, { eval: true }));
          await Promise.all(workers.map((w) => new Promise((resolve) => w.once('message', resolve))));
          await new Promise((resolve) => setTimeout(resolve, 50));
          await Promise.all(workers.map((w) => w.terminate()));
        }
        console.log('survived');
      })();`;
    const r = spawnSync(process.execPath, ['-e', main], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.signal, null, `the process died of ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'survived');
  });
}
