// fcn train on the command line: Ctrl-C saves a loadable checkpoint and exits 0, and --resume
// continues that run to its end; bad arguments print one line and exit non-zero.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, cpSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { weightsToKeras } from '../../src/models/weights-layout.js';
import { FCN } from '../../src/models/fcn.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { readJsonl } from '../support/jsonl.js';
import { bf16Available } from '../../src/engine/config.js';
import { repoRoot, tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('cli-train');
const data = path.join(tmp.dir, 'synth');
before(async () => {
  await synthesizeDataset({ out: data, count: 40, seed: 2, size: 64 });
});
after(() => tmp.cleanup());

const settings = ['--size', '64', '--width', '0.0625', '--batch', '4', '--threads', '2', '--precision', 'float32'];
const small = ['--data', data, ...settings];

interface LogRecord {
  type: string;
  step?: number;
  epoch?: number;
  batch?: number;
  from?: string;
}

test('Ctrl-C (SIGINT) mid-epoch finishes the step, saves a loadable checkpoint, exits 0; --resume continues from it to the end', { timeout: 900_000 }, async () => {
  // The run's own copy of the data, in which one training image is a FIFO: the first epoch
  // stops there until the test writes the image, so Ctrl-C provably comes mid-epoch.
  const own = path.join(tmp.dir, 'synth-fifo');
  cpSync(data, own, { recursive: true });
  const trainIds = readFileSync(path.join(own, 'ImageSets', 'Segmentation', 'train.txt'), 'utf8').trim().split('\n');
  const fifo = path.join(own, 'JPEGImages', `${trainIds[0]}.jpg`);
  const jpeg = readFileSync(fifo);
  rmSync(fifo);
  execFileSync('mkfifo', [fifo]);
  const everyStep = path.join(tmp.dir, 'log-every-step.json');
  writeFileSync(everyStep, JSON.stringify({ logEvery: 1 }));
  const epochs = 3, stepsPerEpoch = Math.ceil(trainIds.length / 4);

  const run = path.join(tmp.dir, 'interrupted');
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'cli', 'run-cli.ts'), 'train', '--data', own, ...settings, '--model', 'fcn8', '--epochs', String(epochs), '--config', everyStep, '--out', run], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const said = (text: string) => new Promise<void>((resolve, reject) => {
    const look = () => err.includes(text) && resolve();
    child.stderr.on('data', (d) => { err += String(d); look(); });
    void exited.then((code) => reject(new Error(`fcn train exited (${code}) before saying '${text}': ${err}`)));
  });
  const ctrlC = said('Ctrl-C: finishing the step and saving');
  // Opening the FIFO for writing returns once the run opens it to read the image.
  const opened = open(fifo, 'w');
  const first = await Promise.race([opened, exited]);
  if (typeof first !== 'object' || first === null) {
    closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)); // lets the pending open return
    assert.fail(`fcn train exited (${String(first)}) before reading the FIFO: ${err}`);
  }
  const writer = await opened;
  child.kill('SIGINT');
  await ctrlC;
  await writer.writeFile(jpeg);
  await writer.close();
  assert.equal(await exited, 0, err);
  assert.match(err, /continue with: fcn train --resume/);

  const last = path.join(run, 'checkpoints', 'last.safetensors');
  const stopped = readCheckpoint(last).state;
  assert.ok(stopped.epoch === 0 && stopped.history.length === 0 && stopped.step >= 1 && stopped.step === stopped.batch && stopped.batch < stepsPerEpoch,
    `stopped in the first epoch after a step: ${JSON.stringify({ epoch: stopped.epoch, batch: stopped.batch, step: stopped.step })}`);
  const model = await loadModel(last);
  assert.equal(model.kind, 'fcn8');
  model.dispose();
  const stoppedWeights = readSafetensors(last).tensors;
  const config = JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8')) as { seed: number };
  const fresh = new FCN({ kind: 'fcn8', width: 0.0625, numClasses: 6 });
  fresh.initialize(config.seed);
  const initial = weightsToKeras(fresh);
  fresh.dispose();
  assert.notDeepEqual(stoppedWeights.get('block1_conv1.kernel')!.data, initial.get('block1_conv1.kernel')!.data, 'the interrupted run trained');

  // The image back in place, the run resumed: it carries on from the checkpoint's step, each
  // step and epoch of the whole run logged once, and ends where an uninterrupted run ends.
  rmSync(fifo);
  writeFileSync(fifo, jpeg);
  const resumed = await runCli('train', '--resume', run, '--threads', '2');
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.err, /run directory .*, float32/, 'without --precision the run keeps its own');
  const log = await readJsonl<LogRecord>(path.join(run, 'log.jsonl'));
  const at = (type: string) => log.findIndex((r) => r.type === type);
  assert.ok(at('start') < at('interrupted') && at('interrupted') < at('resume') && at('resume') < at('end'), log.map((r) => r.type).join(' '));
  const resume = log[at('resume')]!;
  assert.deepEqual([resume.from, resume.epoch, resume.batch], [last, 0, stopped.batch]);
  assert.deepEqual(log.filter((r) => r.type === 'step').map((r) => r.step), Array.from({ length: epochs * stepsPerEpoch }, (_, i) => i + 1));
  assert.deepEqual(log.filter((r) => r.type === 'step' && log.indexOf(r) > at('resume')).map((r) => r.step)[0], stopped.step + 1, 'the first step after resuming');
  assert.deepEqual(log.filter((r) => r.type === 'epoch').map((r) => r.epoch), Array.from({ length: epochs }, (_, i) => i + 1));
  const end = readCheckpoint(last).state;
  assert.deepEqual([end.step, end.history.length], [epochs * stepsPerEpoch, epochs]);
  assert.notDeepEqual(readSafetensors(last).tensors.get('block1_conv1.kernel')!.data, stoppedWeights.get('block1_conv1.kernel')!.data, 'the resumed run trained on');

  // A resumed run with other settings is refused: it continues with its own.
  const other = await runCli('train', '--resume', run, '--lr', '0.1');
  assert.notEqual(other.code, 0);
  assert.match(other.err, /drop --lr/);
  // --precision on a resume is honoured and said, not silently dropped.
  if (bf16Available()) {
    const bf16 = await runCli('train', '--resume', run, '--precision', 'bfloat16', '--threads', '2');
    assert.equal(bf16.code, 0, bf16.err);
    assert.match(bf16.err, /resuming in bfloat16 \(the run so far trained in float32\)/);
  } else {
    const bf16 = await runCli('train', '--resume', run, '--precision', 'bfloat16');
    assert.notEqual(bf16.code, 0);
    assert.match(bf16.err, /bfloat16 needs a CPU with AVX-512/);
  }
});

test('every bad argument prints one clear line and exits non-zero', { timeout: 120_000 }, async () => {
  const unwritable = path.join(tmp.dir, 'file-not-dir');
  writeFileSync(unwritable, 'x');
  const wrongWidth = path.join(tmp.dir, 'wide.safetensors');
  const wide = new FCN({ kind: 'fcn8', width: 0.125, numClasses: 6 });
  wide.initialize(0);
  saveWeights(wrongWidth, wide);
  wide.dispose();
  const cases: [string[], RegExp][] = [
    [['--data', data, '--model', 'fcn9'], /unknown model 'fcn9'/],
    [['--data', path.join(tmp.dir, 'nowhere'), '--model', 'fcn8'], /--data '.*nowhere': no such folder/],
    [['--model', 'fcn8'], /--data is required/],
    [['--data', data, '--schedule', 'fast'], /unknown schedule 'fast'/],
    [['--data', data, '--schedule', 'seed', '--model', 'fcn8'], /give --schedule or --model, not both/],
    [[...small, '--model', 'fcn8', '--out', path.join(unwritable, 'run')], /--out '.*file-not-dir\/run': '.*file-not-dir' is a file, not a folder/],
    [[...small, '--model', 'fcn8', '--lr=-1'], /--lr must be a positive number/],
    [[...small, '--model', 'fcn8', '--lr', '-1'], /argument is ambiguous/],
    [[...small, '--model', 'fcn8', '--scale', '2'], /--scale must be MIN,MAX/],
    [[...small, '--model', 'fcn8', '--size', '100'], /data.size must be a multiple of 32/],
    [[...small, '--model', 'fcn8', '--init', path.join(tmp.dir, 'missing.safetensors')], /--init '.*missing\.safetensors': no such file/],
    [[...small, '--model', 'fcn8', '--epochs', '1', '--init', wrongWidth, '--out', path.join(tmp.dir, 'wrong-init')], /wide.safetensors: tensor 'block1_conv1.kernel' has shape \[3, 3, 3, 8\], the model expects \[3, 3, 3, 4\]/],
    [['--resume', path.join(tmp.dir, 'not-a-run')], /is not a run directory/],
    [[...small, '--model', 'fcn8', '--bogus'], /unknown option '--bogus'/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli('train', ...args);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
    const errLines = lines(r.err).filter((l) => !l.startsWith('fcn train: run directory'));
    assert.equal(errLines.length, 1, `${args.join(' ')}: one line, got:\n${r.err}`);
    assert.match(errLines[0], pattern);
  }
});
