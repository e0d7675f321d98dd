// The training recipes end to end from the command line, on a handful of tiny synthetic
// images, one epoch per stage: Keras-FCN's schedule from random weights and from a VGG16
// backbone (--init), and the paper's (SGD, summed loss, the Caffe-style network). Each
// leaves its checkpoints, and they load as the network the recipe trains. Every step is logged
// (logEvery 1), so each run shows one finite loss per optimiser step.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { FCN } from '../../src/models/fcn.js';
import { loadModel } from '../../src/models/weights.js';
import { weightsToKeras } from '../../src/models/weights-layout.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { readJsonl } from '../support/jsonl.js';
import type { TrainConfig } from '../../src/train/config.js';
import { tempDir } from '../data/helpers.js';
import { runCli } from '../eval/fixtures.js';

const tmp = tempDir('schedules');
const data = path.join(tmp.dir, 'synth');
const WIDTH = 0.0625;
before(async () => {
  // 10 scenes: 8 to train on, 2 to validate.
  await synthesizeDataset({ out: data, count: 10, seed: 3, size: 64 });
});
after(() => tmp.cleanup());

// Every step logged (the default logs every 10th, and these runs have a handful per stage).
const everyStep = path.join(tmp.dir, 'log-every-step.json');
writeFileSync(everyStep, JSON.stringify({ logEvery: 1 }));
const small = ['--data', data, '--size', '64', '--width', String(WIDTH), '--epochs', '1', '--threads', '2', '--precision', 'float32', '--config', everyStep];

interface LogRecord {
  type: string;
  step?: number;
  stage?: number;
  lr?: number;
  trainable?: string[];
  layers?: string[];
  loss?: number;
}

async function runSchedule(name: string, ...args: string[]): Promise<{ dir: string; config: TrainConfig; log: LogRecord[] }> {
  const dir = path.join(tmp.dir, name);
  const r = await runCli('train', ...small, ...args, '--out', dir);
  assert.equal(r.code, 0, r.err);
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as TrainConfig;
  const log = await readJsonl<LogRecord>(path.join(dir, 'log.jsonl'));
  assert.equal(log.at(-1)!.type, 'end');
  // One record per optimiser step, numbered 1…N (N as the last checkpoint counts them), each
  // with a finite, positive cross-entropy.
  const steps = log.filter((l) => l.type === 'step');
  const taken = readCheckpoint(checkpoint(dir, 'last.safetensors')).state.step;
  assert.ok(taken > 0, 'the run took steps');
  assert.deepEqual(steps.map((l) => l.step), Array.from({ length: taken }, (_, i) => i + 1));
  for (const step of steps) assert.ok(Number.isFinite(step.loss) && step.loss! > 0, `step ${step.step}'s loss is ${step.loss}`);
  return { dir, config, log };
}

const checkpoint = (dir: string, file: string) => path.join(dir, 'checkpoints', file);
const stageRecords = (log: LogRecord[]) => log.filter((l) => l.type === 'stage');

test('--schedule keras from random weights: FCN-32s → 16s → 8s → all layers, Adam; every checkpoint left', { timeout: 900_000 }, async () => {
  const { dir, config, log } = await runSchedule('keras', '--schedule', 'keras', '--final-epochs', '1', '--batch', '4');
  assert.equal(config.optimizer.kind, 'adam');
  assert.equal(config.model.style, 'keras');
  assert.deepEqual(config.stages.map((s) => [s.model, s.trainable]), [['fcn32', 'all'], ['fcn16', 'new'], ['fcn8', 'new'], ['fcn8', 'all']]);
  const stages = stageRecords(log);
  assert.equal(stages.length, 4);
  assert.ok(stages[0].trainable!.includes('block1_conv1'), 'from random weights the first stage trains the body too');
  assert.deepEqual(stages[1].trainable, ['score4']);
  assert.deepEqual(stages[2].trainable, ['score3']);
  const files = ['stage1-fcn32', 'stage2-fcn16', 'stage3-fcn8', 'stage4-fcn8', 'last', 'last.prev', 'best'].map((f) => checkpoint(dir, `${f}.safetensors`));
  for (const f of files) assert.ok(existsSync(f), `${f} missing`);
  const last = readCheckpoint(checkpoint(dir, 'last.safetensors')).state;
  assert.deepEqual([last.stage, last.epoch, last.history.length, last.optimizer.kind], [3, 1, 4, 'adam']);
  const model = await loadModel(checkpoint(dir, 'stage4-fcn8.safetensors'));
  assert.deepEqual([model.kind, model.style, model.width], ['fcn8', 'keras', WIDTH]);
  model.dispose();
});

test('--schedule seed (the keras recipe\'s old name) --init VGG16 backbone: the body starts as the file and only the head trains in stage 1', { timeout: 900_000 }, async () => {
  // A narrow VGG16-like backbone: the 13 block convolutions and conv6/conv7, nothing else.
  const backbone = path.join(tmp.dir, 'vgg16-narrow.safetensors');
  const donor = new FCN({ kind: 'fcn32', width: WIDTH });
  donor.initialize(42);
  const tensors = new Map([...weightsToKeras(donor)].filter(([name]) => /^(block\d_conv\d|conv6|conv7)\./.test(name)));
  donor.dispose();
  assert.equal(tensors.size, 2 * 15);
  writeSafetensors(backbone, tensors, { backbone: 'vgg16' });

  const { dir, config, log } = await runSchedule('seed-init', '--schedule', 'seed', '--final-epochs', '1', '--batch', '4', '--init', backbone);
  assert.equal(config.model.init, backbone);
  assert.equal(config.stages[0].trainable, 'head');
  // Every layer of the file, and only those, loaded into the first stage's model.
  const init = log.find((l) => l.type === 'init')!;
  assert.deepEqual([...init.layers!].sort(), [...new Set([...tensors.keys()].map((n) => n.split('.')[0]))].sort());
  assert.deepEqual(stageRecords(log)[0].trainable, ['conv6', 'conv7', 'score7']);

  // After stage 1 the body is the file's, bit for bit; what sits on top of it trained.
  const stage1 = readSafetensors(checkpoint(dir, 'stage1-fcn32.safetensors')).tensors;
  for (const [name, t] of tensors) {
    if (name.startsWith('block')) assert.deepEqual(stage1.get(name)!.data, t.data, `${name} is not the backbone's`);
    else assert.notDeepEqual(stage1.get(name)!.data, t.data, `${name} did not train`);
  }
  for (const f of ['stage4-fcn8', 'last', 'best']) assert.ok(existsSync(checkpoint(dir, `${f}.safetensors`)), `${f} missing`);
  // The last stage trains everything: the body leaves the backbone's values.
  const stage4 = readSafetensors(checkpoint(dir, 'stage4-fcn8.safetensors')).tensors;
  assert.notDeepEqual(stage4.get('block1_conv1.kernel')!.data, tensors.get('block1_conv1.kernel')!.data);
});

test('--schedule paper: SGD, summed loss, batch 1, lr 1e-10/1e-12/1e-14 on the Caffe-style network; its checkpoints load as caffe', { timeout: 900_000 }, async () => {
  const { dir, config, log } = await runSchedule('paper', '--schedule', 'paper');
  assert.equal(config.model.style, 'caffe');
  assert.equal(config.data.means, 'caffe');
  assert.deepEqual(
    [config.optimizer.kind, config.optimizer.momentum, config.optimizer.weightDecay, config.loss.reduction, config.batchSize],
    ['sgd', 0.99, 5e-4, 'sum', 1],
  );
  const stages = stageRecords(log);
  assert.deepEqual(stages.map((s) => s.lr), [1e-10, 1e-12, 1e-14]);
  assert.ok(stages.every((s) => s.trainable!.includes('block1_conv1') && !s.trainable!.some((l) => /^fcn|_upsample$/.test(l))), 'all layers but the bilinear ones');
  const kinds = ['fcn32', 'fcn16', 'fcn8'];
  for (const [i, kind] of kinds.entries()) {
    const model = await loadModel(checkpoint(dir, `stage${i + 1}-${kind}.safetensors`));
    assert.deepEqual([model.kind, model.style], [kind, 'caffe']);
    model.dispose();
  }
  for (const f of ['last', 'last.prev', 'best']) {
    const model = await loadModel(checkpoint(dir, `${f}.safetensors`));
    assert.equal(model.style, 'caffe', `${f} loads as ${model.style}`);
    model.dispose();
  }
  const last = readCheckpoint(checkpoint(dir, 'last.safetensors')).state;
  assert.equal(last.optimizer.kind, 'sgd');
  assert.equal(last.step, 3 * 8, 'batch 1: one step per training image');

  // Even at lr 1e-10 the summed loss moves the weights: FCN-32s's trained score7 is not the
  // seeded initialisation a fresh caffe-style model of the same settings starts from.
  const fresh = new FCN({ kind: 'fcn32', width: WIDTH, style: 'caffe', numClasses: 6, dropout: 0.5 });
  fresh.initialize(config.seed);
  const initial = weightsToKeras(fresh);
  fresh.dispose();
  const trained = readSafetensors(checkpoint(dir, 'stage1-fcn32.safetensors')).tensors;
  assert.deepEqual(trained.get('fcn32.kernel')!.data, initial.get('fcn32.kernel')!.data, 'the bilinear upsampling is frozen');
  assert.notDeepEqual(trained.get('score7.kernel')!.data, initial.get('score7.kernel')!.data, 'score7 did not train');
});
