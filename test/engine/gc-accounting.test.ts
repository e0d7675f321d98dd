// What V8 is told of the tensors' buffers (tensor.cc, report_buffers): the high-water mark of the
// live bytes. Buffers taken and given back below it (a training step's activations and
// gradients) bring on no collection; tensors dropped without dispose() still raise it, and so
// are still collected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { native } from '../../src/engine/binding.js';

const MB = 2 ** 20;
const turn = () => new Promise((r) => setImmediate(r));

/** Major (mark-compact) collections while `body` runs, seen by a PerformanceObserver. */
async function majorCollections(body: () => Promise<void>): Promise<number> {
  let n = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) n++;
  });
  obs.observe({ entryTypes: ['gc'] });
  try {
    await body();
    await turn(); // entries are delivered asynchronously
    await turn();
  } finally {
    obs.disconnect();
  }
  return n;
}

test('buffers taken and given back below the high-water mark bring on no collections', async () => {
  // As in training: 512 MB that stay (the weights and the optimiser's state), 512 MB more taken
  // and given back each round (activations and gradients).
  const resident = Array.from({ length: 8 }, () => native.zeros([(64 * MB) / 4], 'float32', true));
  const round = () => {
    const ts = Array.from({ length: 8 }, () => native.zeros([(64 * MB) / 4], 'float32', true));
    for (const t of ts) t.dispose();
  };
  try {
    round(); // the mark: 1 GB
    await turn();
    // Reported as they came and went, each round rose 64 MB above the level of the last
    // collection several times over: this loop was collected at least once a round.
    const n = await majorCollections(async () => {
      for (let r = 0; r < 30; r++) {
        round();
        if (r % 5 === 0) await turn();
      }
    });
    assert.ok(n <= 3, `${n} major collections in 30 rounds`);
  } finally {
    for (const t of resident) t.dispose();
  }
});

test('tensors never disposed are still collected: the live bytes stay bounded', async () => {
  // 12 GB in 64 MB tensors, dropped without dispose(); the event loop turns now and then so
  // that finalisers run. Unreported, they would all stay live (24 GB is the machine's size).
  let most = 0;
  for (let i = 0; i < 192; i++) {
    native.zeros([(64 * MB) / 4], 'float32', true);
    if (i % 8 === 0) await turn();
    most = Math.max(most, native.poolStats().liveBytes);
  }
  assert.ok(most < 4 * 2 ** 30, `up to ${(most / MB).toFixed(0)} MB live`);
});
