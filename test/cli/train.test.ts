// fcn train on the command line: Ctrl-C saves a loadable checkpoint and exits 0; bad
// arguments print one line and exit non-zero.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { FCN } from '../../src/models/fcn.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { repoRoot, tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('cli-train');
const data = path.join(tmp.dir, 'synth');
before(async () => {
  await synthesizeDataset({ out: data, count: 40, seed: 2, size: 64 });
});
after(() => tmp.cleanup());

const small = ['--data', data, '--size', '64', '--width', '0.0625', '--batch', '4', '--threads', '2', '--precision', 'float32'];

test('Ctrl-C (SIGINT) finishes the step, saves a loadable checkpoint, exits 0; --resume completes the run', { timeout: 180_000 }, async () => {
  const run = path.join(tmp.dir, 'interrupted');
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'cli', 'run-cli.ts'), 'train', ...small, '--model', 'fcn8', '--epochs', '8', '--out', run], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += String(d)));
  // Interrupt once a few steps are logged.
  const log = path.join(run, 'log.jsonl');
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && !(existsSync(log) && readFileSync(log, 'utf8').includes('"type":"step"'))) await new Promise((r) => setTimeout(r, 200));
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, err);
  assert.match(err, /Ctrl-C: finishing the step and saving/);
  assert.match(err, /continue with: fcn train --resume/);
  const ck = readCheckpoint(path.join(run, 'checkpoints', 'last.safetensors'));
  assert.ok(ck.state.step > 0 && ck.state.history.length < 8, `stopped at step ${ck.state.step}`);
  const model = await loadModel(path.join(run, 'checkpoints', 'last.safetensors'));
  assert.equal(model.kind, 'fcn8');
  model.dispose();
  const resumed = await runCli('train', '--resume', run, '--threads', '2');
  assert.equal(resumed.code, 0, resumed.err);
  // A resumed run with other settings is refused: it continues with its own.
  const other = await runCli('train', '--resume', run, '--lr', '0.1');
  assert.notEqual(other.code, 0);
  assert.match(other.err, /drop --lr/);
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
