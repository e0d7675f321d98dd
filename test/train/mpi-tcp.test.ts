// Data-parallel training between two hosts over real TCP: two network namespaces on this
// machine joined by a veth pair, one rank in each, Open MPI held to its TCP transport and
// launched through an rsh agent that enters the other namespace (bench/two-hosts.ts). The
// ranks train what one process trains (dropout on), a rank killed in the other namespace ends
// the job naming it, and nothing is left behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { configureEngine } from '../../src/engine/config.js';
import { mpiAvailability } from '../../src/engine/mpi.js';
import type { TrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';
import { rankOf, setUpTwoHosts, twoHostNamespaces, twoHostsUnavailable, type TwoHosts } from '../../bench/two-hosts.js';
import { FCN_FROM_SOURCE, launch, smallTrainConfig, writeConfig as writeConfigIn, type Job } from './fixtures.js';
import { assertWithinFloor, checkpointTensors, roundingFloor, trainOnThreads } from './rounding.js';
import { tempDir } from '../data/helpers.js';
import { requires } from '../prereq.js';

const unavailable = twoHostsUnavailable();
const addon = mpiAvailability();
const skip = requires(unavailable === null, unavailable ?? '') || requires(addon.available, `the MPI addon: ${addon.available ? '' : addon.reason}`);

const tmp = tempDir('mpi-tcp');
const data = path.join(tmp.dir, 'synth');
let hosts: TwoHosts | null = null;
before(async () => {
  configureEngine({ threads: 1, precision: 'float32' });
  if (skip) return;
  await synthesizeDataset({ out: data, count: 40, seed: 5, size: 64 });
  hosts = setUpTwoHosts();
});
after(() => {
  hosts?.dispose();
  tmp.cleanup();
});

/** `fcn train ARGS` on two ranks, one in each namespace. */
const trainAcross = (args: string[]): Job => launch(hosts!.mpirun([...FCN_FROM_SOURCE, 'train', ...args], { env: ['FCN_MPI_TIMEOUT'] }));

/** The seed's kind of run, dropout on, on a narrow network: SGD at a rate that does not branch (./rounding.ts). */
function config(patch: (c: TrainConfig) => void = () => {}): TrainConfig {
  const c = smallTrainConfig(data, { size: 64, width: 0.0625, batchSize: 4, samples: 2 });
  c.data = { ...c.data, limitTrain: 8, limitVal: 4 };
  c.seed = 3;
  c.logEvery = 1;
  c.precision = 'float32';
  c.model = { ...c.model, dropout: 0.5 };
  c.optimizer = { ...c.optimizer, kind: 'sgd', momentum: 0.9, weightDecay: 5e-4, lr: 1e-3 };
  c.stages = [{ model: 'fcn16', epochs: 2, trainable: 'all' }];
  patch(c);
  return c;
}

const writeConfig = (name: string, c: TrainConfig) => writeConfigIn(tmp.dir, name, c);

const last = (dir: string) => checkpointTensors(path.join(dir, 'checkpoints', 'last.safetensors'));

test('2 ranks in two network namespaces over TCP train what 1 process trains, dropout on', { skip, timeout: 600_000 }, async (t) => {
  const c = config();
  const one = path.join(tmp.dir, 'tcp-one'), floorRun = path.join(tmp.dir, 'tcp-floor'), two = path.join(tmp.dir, 'tcp-two');
  await train(c, one, { progress: null });
  await trainOnThreads(c, floorRun, 2);
  const floor = roundingFloor(last(one), last(floorRun), '1 process on 1 vs 2 threads');
  const run = trainAcross(['--data', data, '--config', writeConfig('tcp', c), '--threads', '1', '--precision', 'float32', '--out', two]);
  // Rank 1 runs in the second namespace: it is another host as far as the network goes.
  let seen: number | null = null;
  while (seen === null && !existsSync(path.join(two, 'checkpoints', 'last.safetensors'))) {
    for (const pid of hosts!.pids(hosts!.namespaces[1])) seen ??= rankOf(pid);
    await new Promise((r) => setTimeout(r, 50));
  }
  const r = await run.done;
  assert.equal(r.code, 0, r.output);
  assert.equal(seen, 1, 'rank 1 was found in the second namespace');
  t.diagnostic(assertWithinFloor(last(one), last(two), floor, '2 ranks over TCP vs 1 process'));
});

test('a rank killed in the other namespace ends the job with an error naming it; nothing is left behind', { skip, timeout: 300_000 }, async () => {
  const c = config((c) => {
    c.data = { ...c.data, limitTrain: 32 };
    c.stages = [{ model: 'fcn16', epochs: 20, trainable: 'all' }];
  });
  const dir = path.join(tmp.dir, 'tcp-killed');
  const run = trainAcross(['--data', data, '--config', writeConfig('tcp-kill', c), '--threads', '1', '--precision', 'float32', '--out', dir]);
  const logFile = path.join(dir, 'log.jsonl');
  const stepped = () => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('"type":"step","step":3,');
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline && !stepped()) await new Promise((r) => setTimeout(r, 50));
  assert.ok(stepped(), `no third step logged: ${run.output()}`);
  const victim = hosts!.pids(hosts!.namespaces[1]).find((pid) => rankOf(pid) === 1);
  assert.ok(victim, 'rank 1 found in the second namespace');
  process.kill(victim, 'SIGKILL');
  const r = await run.done;
  assert.notEqual(r.code, 0);
  assert.match(r.output, /rank 1\b[^]*(exited on signal 9|Killed)/, r.output);
  // The namespaces' processes are gone with the job, and dispose() removes the namespaces.
  hosts!.dispose();
  assert.deepEqual(twoHostNamespaces().filter((n) => n.includes(String(process.pid))), []);
  hosts = null;
});
