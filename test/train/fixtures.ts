// What the training tests share: a small configuration (a narrow, dropout-free FCN on a
// synthetic dataset, one data worker, Adam at 1e-3; each test sets what it is about), and
// the launching of `fcn train` under mpirun.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { defaultConfig, type TrainConfig } from '../../src/train/config.js';
import { repoRoot } from '../data/helpers.js';

export interface SmallConfig {
  size: number;
  width: number;
  batchSize: number;
  samples: number;
  stages?: TrainConfig['stages'];
}

export function smallTrainConfig(data: string, o: SmallConfig): TrainConfig {
  const c = defaultConfig(data);
  c.data = { ...c.data, size: o.size, workers: 1 };
  c.model = { ...c.model, width: o.width, dropout: 0 };
  c.optimizer = { ...c.optimizer, lr: 1e-3 };
  c.batchSize = o.batchSize;
  c.samples = o.samples;
  if (o.stages) c.stages = o.stages;
  return c;
}

/** The environment of an mpirun under test: root allowed (as CI runs), short MPI deadlines. */
export const MPI_ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', FCN_MPI_TIMEOUT: '60' };
/** `fcn` from source, for mpirun to start once per rank. */
export const FCN_FROM_SOURCE = [process.execPath, '--import', 'tsx', path.join(repoRoot, 'test', 'cli', 'run-cli.ts')];

/** A launched job: its exit and everything it printed, and its output so far while it runs. */
export interface Job {
  done: Promise<{ code: number | null; output: string }>;
  output: () => string;
  pid: number;
}

/** Runs argv (mpirun and its ranks) from the repository with MPI_ENV, collecting stdout and stderr. */
export function launch(argv: string[]): Job {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: repoRoot, env: MPI_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += String(d)));
  child.stderr.on('data', (d) => (output += String(d)));
  const done = new Promise<{ code: number | null; output: string }>((resolve) => child.on('exit', (code) => resolve({ code, output })));
  return { done, output: () => output, pid: child.pid! };
}

/** A training configuration as `fcn train --config` reads it (the data root comes from --data). */
export function writeConfig(dir: string, name: string, c: TrainConfig): string {
  const file = path.join(dir, `${name}.json`);
  const { root: _root, ...dataRest } = c.data;
  writeFileSync(file, JSON.stringify({ ...c, data: dataRest }));
  return file;
}
