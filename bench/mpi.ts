// Data-parallel training on this machine: what the gradient exchange costs and what the overlap
// with the backward pass hides (the measured inputs of docs/scaling.md).
//
//   node --import tsx bench/mpi.ts [--width 1] [--size 512] [--reps 3] [--only ID,…]
//   (npm run bench runs it too, as rows mpi_*)
//
// Rows:
//   mpi_allreduce_fp32_ms / _gbps, mpi_allreduce_bf16_ms / _gbps: FCN-8s's gradients (every
//     parameter, 25 MB buckets as training sends them) summed over 2 ranks on this machine
//     (shared memory), and the bus bandwidth that implies, 2(N−1)/N · bytes / time;
//   mpi_step_1x2_ms: one training step (forward, loss, backward, Adam) at global batch 2 in one
//     process with 2 threads; mpi_step_2x1_ms: the same global batch on 2 ranks × 1 thread,
//     gradients exchanged in float32 with overlap;
//   mpi_step_2x1_exposed_ms / mpi_overlap_hidden_pct: the exchange's time left after the
//     backward pass with overlap, and the share of the exchange (its time when started after
//     the backward pass) that the overlap hides.
// Each measurement runs in processes of its own (mpirun for the ranks); CPU seconds are
// recorded beside wall time, since this machine is shared.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);

export interface MpiRow {
  id: string;
  value: number;
  note: string;
}

interface WorkerArgs {
  width: number;
  size: number;
  reps: number;
  batch: number;
  threads: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

// ---- inside the processes -----------------------------------------------------------------

/** 2 ranks: FCN-8s's gradients, in training's buckets, summed in fp32 and in bf16. */
async function workerAllreduce(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { FCN } = await import('../src/models/fcn.js');
  const { startMpi } = await import('../src/engine/mpi.js');
  const { GradientReducer, DEFAULT_BUCKET_MB } = await import('../src/train/distributed.js');
  const s = startMpi();
  const model = new FCN({ kind: 'fcn8', width: a.width });
  // Only the bucket layout is needed: every parameter, as in the last stage (all trainable).
  const reducer = new GradientReducer(s.mpi, model.params(), { precision: 'float32', bucketMb: DEFAULT_BUCKET_MB });
  model.dispose();
  for (const b of reducer.buckets) b.buffer.fill(1e-3 * (s.rank + 1));
  const out: Record<string, unknown> = { bytes: reducer.bytes, buckets: reducer.buckets.length, ranks: s.size };
  for (const precision of ['float32', 'bfloat16'] as const) {
    const times: number[] = [];
    for (let i = 0; i <= a.reps; i++) {
      s.mpi.barrier();
      const t0 = performance.now();
      const ids = reducer.buckets.map((b) => s.mpi.iallreduce(b.buffer, { precision, scale: 0.5 }));
      for (const id of ids) s.mpi.wait(id);
      if (i > 0) times.push(performance.now() - t0); // the first is the warm-up
    }
    out[precision] = median(times);
  }
  return out;
}

/** One process (no MPI) or a rank: training steps at the global batch, timed. */
async function workerStep(a: WorkerArgs, distributed: boolean): Promise<Record<string, unknown>> {
  const { native } = await import('../src/engine/binding.js');
  const { configureEngine } = await import('../src/engine/config.js');
  const { FCN } = await import('../src/models/fcn.js');
  const { Adam } = await import('../src/train/optim.js');
  const { computeGradients } = await import('../src/train/step.js');
  const { startDistributed, DEFAULT_BUCKET_MB } = await import('../src/train/distributed.js');
  configureEngine({ threads: a.threads, precision: 'float32' });
  const dist = distributed ? startDistributed({ precision: 'float32', bucketMb: DEFAULT_BUCKET_MB, threadsGiven: true }) : null;
  const ranks = dist?.size ?? 1, rank = dist?.rank ?? 0;
  const n = a.batch / ranks, S = a.size;
  const model = new FCN({ kind: 'fcn8', width: a.width });
  model.initialize(0);
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  // The bench's input generator; each rank its own images, as its slice of the batch.
  let seed = 12345 + rank;
  const images = new Float32Array(n * 3 * S * S).map(() => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 200);
  const labels = new Uint8Array(n * S * S).map((_, i) => (i % (S * S) < (S * S) / 8 ? 255 : (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % 21));
  const batch = { ids: [], indices: [], images, labels, n, height: S, width: S, sizes: [], epoch: 0, batchIndex: 0 };
  const rows: { overlap: boolean; wall: number; cpu: number; exposed: number; copy: number }[] = [];
  // Alternating with and without overlap (ranks only), after a warm-up step.
  const plan = dist ? [true, true, ...Array.from({ length: 2 * a.reps }, (_, i) => i % 2 === 0)] : Array.from({ length: a.reps + 1 }, () => true);
  for (const [i, overlap] of plan.entries()) {
    if (dist) (dist.options as { overlap?: boolean }).overlap = overlap;
    const c0 = process.cpuUsage(), t0 = performance.now();
    let exposed = 0, copy = 0;
    if (dist) {
      const r = dist.computeGradients(model, batch, { precision: 'float32', seed: i });
      exposed = r.reduce.exposedMs;
      copy = r.reduce.copyMs;
    } else {
      const x = native.fromArray([n, 3, S, S], images), y = native.fromArray([n, S, S], labels);
      computeGradients(model, x, y, { precision: 'float32', seed: i });
      x.dispose();
      y.dispose();
    }
    opt.step(model.params());
    const wall = performance.now() - t0, cu = process.cpuUsage(c0);
    if (i > 0) rows.push({ overlap, wall, cpu: (cu.user + cu.system) / 1000, exposed, copy });
  }
  opt.dispose();
  model.dispose();
  const pick = (overlap: boolean) => rows.filter((r) => r.overlap === overlap);
  const summary = (rs: typeof rows) => ({ wall: median(rs.map((r) => r.wall)), cpu: median(rs.map((r) => r.cpu)), exposed: median(rs.map((r) => r.exposed)), copy: median(rs.map((r) => r.copy)) });
  return { ranks, threads: a.threads, batch: a.batch, overlap: summary(pick(true)), ...(dist ? { noOverlap: summary(pick(false)) } : {}) };
}

// ---- the driver -----------------------------------------------------------------------------

function mpirunFound(): boolean {
  return spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
}

/** Runs a worker (under mpirun with `ranks` > 0) and returns rank 0's result line. */
function run(mode: 'allreduce' | 'step', a: WorkerArgs, ranks: number): Record<string, unknown> {
  const args = [...['--import', 'tsx', self, '--worker', mode], ...Object.entries(a).flatMap(([k, v]) => [`--${k}`, String(v)])];
  const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1' };
  const r =
    ranks > 0
      ? spawnSync('mpirun', ['-np', String(ranks), '--bind-to', a.threads > 1 ? 'none' : 'core', process.execPath, ...args], { encoding: 'utf8', env, cwd: path.resolve(here, '..'), timeout: 3_600_000 })
      : spawnSync(process.execPath, args, { encoding: 'utf8', env, cwd: path.resolve(here, '..'), timeout: 3_600_000 });
  const line = r.stdout?.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) throw new Error(`bench/mpi.ts ${mode} (${ranks || 1} process${ranks > 1 ? 'es' : ''}) failed (status ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-4).join(' | ')}`);
  return JSON.parse(line.slice('RESULT '.length)) as Record<string, unknown>;
}

export interface MpiBenchOptions {
  width?: number;
  size?: number;
  reps?: number;
  want?: (id: string) => boolean;
  log?: (row: MpiRow) => void;
}

/** The mpi_* rows (none, with a note on stderr, when Open MPI's mpirun is not installed). */
export function mpiRows(o: MpiBenchOptions = {}): MpiRow[] {
  const width = o.width ?? 1, size = o.size ?? 512, reps = o.reps ?? 3;
  const want = o.want ?? (() => true);
  const rows: MpiRow[] = [];
  const add = (id: string, value: number, note: string) => {
    if (!want(id)) return;
    rows.push({ id, value: Math.round(value * 100) / 100, note });
    o.log?.(rows.at(-1)!);
  };
  if (!mpirunFound()) {
    console.error('bench: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev, then npm run setup): skipping the mpi_* rows');
    return rows;
  }
  const base = { width, size, reps, batch: 2, threads: 1 };
  const what = `FCN-8s width ${width}`;
  if (['fp32', 'bf16'].some((p) => want(`mpi_allreduce_${p}_ms`) || want(`mpi_allreduce_${p}_gbps`))) {
    const r = run('allreduce', base, 2) as { bytes: number; buckets: number; float32: number; bfloat16: number };
    const bus = (ms: number) => ((2 * (2 - 1)) / 2) * (r.bytes / 1e9) / (ms / 1000);
    const mbytes = (r.bytes / 1e6).toFixed(0);
    add('mpi_allreduce_fp32_ms', r.float32, `${what}'s gradients (${mbytes} MB fp32, ${r.buckets} buckets) summed over 2 ranks, shared memory`);
    add('mpi_allreduce_fp32_gbps', bus(r.float32), 'bus bandwidth of that, GB/s: 2(N−1)/N · bytes / time (fp32 bytes)');
    add('mpi_allreduce_bf16_ms', r.bfloat16, `the same carried as bf16 (${(r.bytes / 2e6).toFixed(0)} MB on the wire)`);
    add('mpi_allreduce_bf16_gbps', bus(r.bfloat16), 'bus bandwidth of that in fp32-gradient bytes per second, GB/s (wire bytes: half)');
  }
  const stepIds = ['mpi_step_1x2_ms', 'mpi_step_2x1_ms', 'mpi_step_2x1_exposed_ms', 'mpi_overlap_hidden_pct'];
  if (stepIds.some(want)) {
    type Summary = { wall: number; cpu: number; exposed: number; copy: number };
    const one = run('step', { ...base, threads: 2 }, 0) as { overlap: Summary };
    const two = run('step', base, 2) as { overlap: Summary; noOverlap: Summary };
    const at = `${what}, ${size}², global batch 2, fp32, Adam`;
    add('mpi_step_1x2_ms', one.overlap.wall, `training step, ${at}: 1 process × 2 threads (CPU ${(one.overlap.cpu / 1000).toFixed(1)} s)`);
    add('mpi_step_2x1_ms', two.overlap.wall, `the same on 2 ranks × 1 thread, fp32 gradients in 25 MB buckets with overlap (rank 0's CPU ${(two.overlap.cpu / 1000).toFixed(1)} s; without overlap ${two.noOverlap.wall.toFixed(0)} ms)`);
    add('mpi_step_2x1_exposed_ms', two.overlap.exposed, `the exchange's time after the backward pass with overlap (without: ${two.noOverlap.exposed.toFixed(0)} ms); gradient copies in and out ${two.overlap.copy.toFixed(0)} ms`);
    add('mpi_overlap_hidden_pct', 100 * Math.max(0, 1 - two.overlap.exposed / two.noOverlap.exposed), 'share of the exchange hidden behind the backward pass: 1 − exposed with overlap / exposed without');
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { worker: { type: 'string' }, width: { type: 'string' }, size: { type: 'string' }, reps: { type: 'string' }, batch: { type: 'string' }, threads: { type: 'string' }, only: { type: 'string' } },
  });
  const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  if (values.worker) {
    const a: WorkerArgs = { width: num(values.width, 1), size: num(values.size, 512), reps: num(values.reps, 3), batch: num(values.batch, 2), threads: num(values.threads, 1) };
    const result = values.worker === 'allreduce' ? await workerAllreduce(a) : await workerStep(a, process.env.OMPI_COMM_WORLD_SIZE !== undefined);
    const rank = Number(process.env.OMPI_COMM_WORLD_RANK ?? 0);
    if (rank === 0) console.log(`RESULT ${JSON.stringify(result)}`);
    return;
  }
  const only = values.only ? new Set(values.only.split(',')) : null;
  const load0 = os.loadavg();
  const rows = mpiRows({ width: num(values.width, 1), size: num(values.size, 512), reps: num(values.reps, 3), want: (id) => !only || only.has(id), log: (r) => console.error(`bench: ${r.id} = ${r.value}`) });
  console.log(`\nload average ${load0.map((l) => l.toFixed(1)).join(' ')} → ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} (${os.cpus()[0]?.model}, ${os.availableParallelism()} cores)`);
  for (const r of rows) console.log(`${r.id.padEnd(26)} ${String(r.value).padStart(9)}  ${r.note}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  main().catch((e) => {
    console.error(`bench/mpi.ts: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
