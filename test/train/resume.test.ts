// Resume never starts over silently: every checkpoint keeps the one before as last.prev; a
// missing or damaged last falls back to it, saying so; with neither usable, resume stops
// naming the files and why, and leaves the run folder as it was.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { configureEngine } from '../../src/engine/config.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { assertWithinFloor, checkpointTensors, roundingFloor, trainOnThreads } from './rounding.js';
import type { TrainConfig } from '../../src/train/config.js';
import { ResumeError, runPaths, train } from '../../src/train/trainer.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { readJsonl } from '../support/jsonl.js';
import { tempDir } from '../data/helpers.js';
import { smallTrainConfig } from './fixtures.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('resume');
const data = path.join(tmp.dir, 'synth');
// 12 scenes: 9 or 10 training images (every fifth goes to val), 3 batches of 4 per epoch.
before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  await synthesizeDataset({ out: data, count: 12, seed: 5, size: 64 });
});
after(() => tmp.cleanup());

function config(epochs: number): TrainConfig {
  const c = smallTrainConfig(data, { size: 64, width: 0.0625, batchSize: 4, samples: 1, stages: [{ model: 'fcn32', epochs, trainable: 'all' }] });
  c.logEvery = 1;
  return c;
}

/** A stream that keeps what the trainer writes (progress and notes). */
function capture(): { write(s: string): boolean; text: () => string } {
  let text = '';
  return { write: (s: string) => ((text += s), true), text: () => text };
}

test('each checkpoint keeps the one before it as last.prev', { timeout: 120_000 }, async () => {
  const dir = path.join(tmp.dir, 'generations');
  const r = await train(config(2), dir, { progress: null });
  assert.equal(r.status, 'completed');
  const perEpoch = r.state.step / 2;
  assert.ok(Number.isInteger(perEpoch) && perEpoch > 1, `${r.state.step} steps over 2 epochs`);
  const last = readCheckpoint(r.paths.last).state, prev = readCheckpoint(r.paths.previous).state;
  assert.deepEqual([last.epoch, last.batch, last.step], [2, 0, 2 * perEpoch]);
  assert.deepEqual([prev.epoch, prev.batch, prev.step], [1, 0, perEpoch]);
  // Two files, not two names of one: rewriting last must not change prev.
  assert.notEqual(statSync(r.paths.last).ino, statSync(r.paths.previous).ino);
});

/**
 * Three epochs whose end a resume must reach: Adam at 3e-4, where the trajectory does not branch
 * (./rounding.ts). At 1e-3 it did under the AVX2 kernels: 1 thread ended 8e-3 from 2 or 3.
 */
function comparedConfig(): TrainConfig {
  const c = config(3);
  c.optimizer = { ...c.optimizer, lr: 3e-4 };
  return c;
}

test('a truncated last: resume continues from last.prev, says so, finishes, and ends where a straight run ends', { timeout: 240_000 }, async (t) => {
  const straight = await train(comparedConfig(), path.join(tmp.dir, 'straight'), { progress: null });
  assert.equal(straight.status, 'completed');
  // The resumed run repeats the straight run's sums on the same thread count; it is allowed
  // their rounding floor (./rounding.ts), measured on 1 thread instead of 2 (7e-6…4e-5 on
  // either kernel family). The weights are compared, not Adam's moments (a moment whose
  // gradients cancel to rounding noise differs by up to 7e-2 of its largest value between
  // thread counts): a resume that lost the moments, or replayed the epoch in another order,
  // ended with weights 0.5 or 0.2 away.
  const other = await trainOnThreads(comparedConfig(), path.join(tmp.dir, 'straight-1-thread'), 1);
  const floor = roundingFloor(checkpointTensors(straight.paths.last), checkpointTensors(other.paths.last), '2 vs 1 thread');
  const perEpoch = straight.state.step / 3;

  // Stop at the first step of epoch 3: last holds that step, last.prev the end of epoch 2.
  const dir = path.join(tmp.dir, 'truncated');
  const stop = new AbortController();
  const first = await train(comparedConfig(), dir, { progress: null, signal: stop.signal, onStep: (s) => s.step === 2 * perEpoch + 1 && stop.abort() });
  assert.equal(first.status, 'interrupted');
  const p = runPaths(dir);
  assert.deepEqual([readCheckpoint(p.last).state.step, readCheckpoint(p.previous).state.step], [2 * perEpoch + 1, 2 * perEpoch]);

  truncateSync(p.last, Math.floor(statSync(p.last).size / 2));
  const out = capture();
  const resumed = await train(comparedConfig(), dir, { progress: out, resume: true });
  assert.equal(resumed.status, 'completed');
  assert.equal(resumed.resumedFrom, p.previous);
  const message = lines(out.text()).find((l) => l.startsWith('resuming from'));
  assert.ok(message, `no message about the fallback in:\n${out.text()}`);
  assert.ok(message.includes(`resuming from ${p.previous} (stage 1, epoch 3, batch 0)`), message);
  assert.ok(message.includes(p.last), `the message names the damaged file: ${message}`);
  const log = await readJsonl<{ type: string; from?: string; skipped?: string[] }>(p.log);
  const resumeRecord = log.find((l) => l.type === 'resume')!;
  assert.equal(resumeRecord.from, p.previous);
  assert.equal(resumeRecord.skipped!.length, 1);
  assert.ok(resumeRecord.skipped![0].startsWith(p.last), resumeRecord.skipped![0]);
  assert.equal(log.at(-1)!.type, 'end');

  // Epoch 3 was trained again from its start, in the same data order: the same weights.
  assert.equal(resumed.state.step, straight.state.step);
  t.diagnostic(assertWithinFloor(checkpointTensors(straight.paths.last), checkpointTensors(resumed.paths.last), floor, 'resumed vs straight'));
  // The damaged file never became the previous generation: last.prev is still epoch 2's end.
  assert.equal(readCheckpoint(p.previous).state.step, 2 * perEpoch);
  assert.equal(readCheckpoint(p.last).state.step, 3 * perEpoch);
});

test('last missing: resume continues from last.prev', { timeout: 120_000 }, async () => {
  const dir = path.join(tmp.dir, 'missing-last');
  await train(config(1), dir, { progress: null });
  const p = runPaths(dir);
  // A one-epoch run has no previous generation yet: make one by hand from its last.
  writeFileSync(p.previous, readFileSync(p.last));
  rmSync(p.last);
  const out = capture();
  const r = await train(config(2), dir, { progress: out, resume: true });
  assert.equal(r.status, 'completed');
  assert.equal(r.resumedFrom, p.previous);
  assert.match(out.text(), /resuming from .*last\.prev\.safetensors \(stage 1, epoch 2, batch 0\): .*last\.safetensors: no such file/);
  assert.equal(readCheckpoint(p.last).state.epoch, 2);
});

test('no usable checkpoint: resume stops naming each file and why, and changes nothing', { timeout: 120_000 }, async () => {
  const dir = path.join(tmp.dir, 'none');
  await train(config(2), dir, { progress: null });
  const p = runPaths(dir);
  const before = { config: readFileSync(p.config), best: readFileSync(p.best), log: readFileSync(p.log) };

  // Both gone.
  rmSync(p.last);
  rmSync(p.previous);
  await assert.rejects(train(config(2), dir, { progress: null, resume: true }), (e: Error) => {
    assert.ok(e instanceof ResumeError, String(e));
    assert.ok(e.message.includes(`${p.last}: no such file`), e.message);
    assert.ok(e.message.includes(`${p.previous}: no such file`), e.message);
    assert.match(e.message, /not started over/);
    return true;
  });
  // A damaged last and no previous: the reason for each.
  writeFileSync(p.last, Buffer.from('not a checkpoint at all'));
  await assert.rejects(train(config(2), dir, { progress: null, resume: true }), (e: Error) => {
    assert.ok(e instanceof ResumeError, String(e));
    assert.match(e.message, new RegExp(`${p.last.replace(/[.]/g, '\\.')}: (header length|truncated)`));
    assert.ok(e.message.includes(`${p.previous}: no such file`), e.message);
    return true;
  });
  // The run folder is as it was: no fresh config, no overwritten best, nothing logged.
  assert.deepEqual(readFileSync(p.config), before.config);
  assert.deepEqual(readFileSync(p.best), before.best);
  assert.deepEqual(readFileSync(p.log), before.log);

  // The command line says the same in one line and fails.
  const cli = await runCli('train', '--resume', dir, '--threads', '2');
  assert.notEqual(cli.code, 0);
  const errLines = lines(cli.err).filter((l) => !l.startsWith('fcn train: run directory'));
  assert.equal(errLines.length, 1, cli.err);
  assert.match(errLines[0], /^fcn train: cannot resume .*: no checkpoint loads \(.*last\.safetensors: .*; .*last\.prev\.safetensors: no such file\)/);
  assert.deepEqual(readFileSync(p.best), before.best);
});

test('a checkpoint whose training state is damaged is not resumed from', { timeout: 60_000 }, async () => {
  const dir = path.join(tmp.dir, 'bad-state');
  await train(config(1), dir, { progress: null });
  const p = runPaths(dir);
  // Rewrite last with a train_state that parses but holds nonsense.
  const file = readSafetensors(p.last);
  writeSafetensors(p.last, file.tensors, { ...file.metadata, train_state: JSON.stringify({ stage: -1 }) });
  assert.throws(() => readCheckpoint(p.last), /train_state is damaged \(stage is -1\)/);
  await assert.rejects(train(config(1), dir, { progress: null, resume: true }), /train_state is damaged/);
});
