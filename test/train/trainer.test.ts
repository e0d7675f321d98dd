// Staged training end to end on a small synthetic dataset: stages improve, freezing freezes,
// resume continues exactly, a non-finite loss stops cleanly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { configureEngine } from '../../src/engine/config.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/weights.js';
import type { TrainConfig } from '../../src/train/config.js';
import { NonFiniteLossError, train } from '../../src/train/trainer.js';
import { weightLayers } from '../../src/io/weight-layers.js';
import { readCheckpoint, type TrainState } from '../../src/train/checkpoint.js';
import { native } from '../../src/engine/binding.js';
import type { FCN } from '../../src/models/fcn.js';
import { readJsonl } from '../support/jsonl.js';
import { tempDir } from '../data/helpers.js';
import { smallTrainConfig } from './fixtures.js';

const tmp = tempDir('trainer');
const data = path.join(tmp.dir, 'synth');
before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  await synthesizeDataset({ out: data, count: 80, seed: 1, size: 128 });
});
after(() => tmp.cleanup());

function config(stages: TrainConfig['stages']): TrainConfig {
  return smallTrainConfig(data, { size: 128, width: 0.125, batchSize: 8, samples: 2, stages });
}

const weightsOf = (file: string) => readSafetensors(file).tensors;

test('staged training: validation mean IoU improves stage over stage; frozen layers stay bit-identical', { timeout: 300_000 }, async () => {
  const dir = path.join(tmp.dir, 'staged');
  const c = config([
    { model: 'fcn32', epochs: 6, trainable: 'all' },
    { model: 'fcn16', epochs: 2, trainable: 'new', lr: 3e-3 },
    { model: 'fcn8', epochs: 2, trainable: 'new', lr: 3e-3 },
    { model: 'fcn8', epochs: 3, trainable: 'all' },
  ]);
  const r = await train(c, dir, { progress: null });
  assert.equal(r.status, 'completed');
  assert.equal(r.stageWeights.length, 4);
  const endOfStage = [6, 8, 10, 13].map((e) => r.state.history[e - 1].val!.meanIoU);
  for (let i = 1; i < endOfStage.length; i++) assert.ok(endOfStage[i] > endOfStage[i - 1], `stage ${i + 1} mIoU ${endOfStage[i]} ≤ stage ${i} ${endOfStage[i - 1]} (${endOfStage.join(', ')})`);

  // FCN-16s 'new' trained only score4: everything it took from FCN-32s is bit-identical.
  const w32 = weightsOf(r.stageWeights[0]), w16 = weightsOf(r.stageWeights[1]), w8 = weightsOf(r.stageWeights[2]), wAll = weightsOf(r.stageWeights[3]);
  const inherited = (a: typeof w32, b: typeof w32) => [...a.keys()].filter((n) => b.has(n) && !n.endsWith('_upsample.kernel'));
  assert.equal(inherited(w32, w16).length, 2 * 16, 'VGG16 body, conv6, conv7 and score7 (fcn32 itself is not in FCN-16s)');
  for (const name of inherited(w32, w16)) assert.deepEqual(w16.get(name)!.data, w32.get(name)!.data, `${name} changed while frozen`);
  for (const name of inherited(w16, w8)) assert.deepEqual(w8.get(name)!.data, w16.get(name)!.data, `${name} changed while frozen`);
  assert.notDeepEqual(w16.get('score4.kernel')!.data, w8.get('score3.kernel')?.data);
  const zero = (a: ArrayLike<number>) => Array.from(a).every((v) => v === 0);
  assert.ok(!zero(w16.get('score4.kernel')!.data as Float32Array), 'score4 trained in the FCN-16s stage');
  // The bilinear upsampling never trains; in the last stage everything else does.
  assert.deepEqual(wAll.get('fcn8.kernel')!.data, w8.get('fcn8.kernel')!.data);
  assert.notDeepEqual(wAll.get('block1_conv1.kernel')!.data, w8.get('block1_conv1.kernel')!.data);

  // The run directory: config, log, plots, samples, best and last checkpoints.
  for (const f of ['config.json', 'log.jsonl', 'plots/loss.png', 'plots/loss.svg', 'plots/miou.png', 'plots/miou.svg', 'samples/epoch013.png', 'checkpoints/best.safetensors'])
    assert.ok(existsSync(path.join(dir, f)), `${f} missing`);
  const log = await readJsonl<{ type: string }>(path.join(dir, 'log.jsonl'));
  assert.equal(log.filter((l) => l.type === 'epoch').length, 13);
  const best = readSafetensors(path.join(dir, 'checkpoints', 'best.safetensors')).metadata;
  assert.equal(Number(best.val_mean_iou), Math.max(...r.state.history.map((h) => h.val!.meanIoU)));
  assert.deepEqual(weightLayers('fcn8').map((l) => l.name).sort(), (await loadModel(r.stageWeights[3])).layers().map((l) => l.name).sort());
});

test('resume: 2 epochs straight equal 1.5 epochs, a stop, and a resume (weights and optimiser state)', { timeout: 300_000 }, async () => {
  const stages: TrainConfig['stages'] = [{ model: 'fcn16', epochs: 2, trainable: 'all' }];
  const straight = path.join(tmp.dir, 'straight'), split = path.join(tmp.dir, 'split');
  const a = await train(config(stages), straight, { progress: null });
  // Stop in the middle of the second epoch (8 batches per epoch), then resume.
  const stop = new AbortController();
  const b1 = await train(config(stages), split, { progress: null, signal: stop.signal, onStep: (s) => s.step === 11 && stop.abort() });
  assert.equal(b1.status, 'interrupted');
  assert.deepEqual([b1.state.epoch, b1.state.batch, b1.state.step], [1, 3, 11]);
  const b2 = await train(config(stages), split, { progress: null, resume: true });
  assert.equal(b2.status, 'completed');
  assert.equal(b2.state.step, a.state.step);
  const wa = weightsOf(a.paths.last), wb = weightsOf(b2.paths.last);
  assert.equal(wa.size, wb.size);
  for (const [name, t] of wa) {
    const x = t.data as Float32Array, y = wb.get(name)!.data as Float32Array;
    let d = 0, m = 1e-12;
    for (let i = 0; i < x.length; i++) {
      d = Math.max(d, Math.abs(x[i] - y[i]));
      m = Math.max(m, Math.abs(x[i]));
    }
    assert.ok(d / m <= 1e-5, `${name} differs by ${d / m}`);
  }
  assert.equal(readCheckpoint(b2.paths.last).state.optimizer.scalars.steps, readCheckpoint(a.paths.last).state.optimizer.scalars.steps);
});

test('a non-finite loss stops the run with a message and keeps the last good checkpoint', { timeout: 120_000 }, async () => {
  const dir = path.join(tmp.dir, 'nan');
  const c = config([{ model: 'fcn32', epochs: 3, trainable: 'all' }]);
  // A crafted blow-up: after the 3rd step of the second epoch a kernel holds a NaN.
  const poison = (s: Readonly<TrainState>, model: FCN) => {
    if (s.step !== 11) return;
    const k = model.layer('score7').kernel; // no ReLU after it to swallow the NaN
    const v = k.value.toArray() as Float32Array;
    v[5] = NaN;
    k.assign(native.fromArray(k.dims, v));
  };
  await assert.rejects(() => train(c, dir, { progress: null, onStep: poison }), (e: Error) => {
    assert.ok(e instanceof NonFiniteLossError, String(e));
    assert.match(e.message, /the loss became NaN at stage 1, epoch 2, batch 4/);
    assert.match(e.message, /the last good checkpoint is/);
    return true;
  });
  const ck = readCheckpoint(path.join(dir, 'checkpoints', 'last.safetensors'));
  assert.deepEqual([ck.state.stage, ck.state.epoch, ck.state.step], [0, 1, 8], 'the checkpoint of the last completed epoch');
  const model = await loadModel(path.join(dir, 'checkpoints', 'last.safetensors'));
  for (const p of model.params()) assert.ok((p.value.toArray() as Float32Array).every(Number.isFinite), `${p.name} is finite`);
  model.dispose();
  const log = await readJsonl<{ type: string }>(path.join(dir, 'log.jsonl'));
  assert.equal(log.at(-1)!.type, 'nonfinite');
});
