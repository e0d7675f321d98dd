// The speed benchmark: our engine and its peers on the same network and input, in one run.
//
//   npm run bench [-- --only ID[,ID…]] [--reps N] [--threads N]
//
// Rows: fwd512_bf16_vs_ort, fwd512_bf16_vs_torch (PyTorch bf16 autocast, channels-last),
// fwd512_fp32_vs_ort, train512_bf16_vs_torch, train512_fp32_vs_torch (full-width FCN-8s,
// batch 1), then {id, value} rows: rss_train_mb, rss_infer_mb and rss_eval_mb (peak RSS, each
// in a process of its own: bench/rss.ts; eval: fcn eval over the VOC sample's val split),
// serve_p95_ms and serve_rss_mb (fcn serve under load: bench/serve.ts),
// 500×375 forward, batch-4 throughput, 1-thread forward, and
// end-to-end training images/s on the VOC sample through the DataLoader with the share of
// time spent waiting for data; then the data-parallel rows mpi_* (bench/mpi.ts: allreduce of
// FCN-8s's gradients over 2 ranks, a step on 1 process × 2 threads vs 2 ranks × 1 thread, the
// share of the exchange the overlap hides), when Open MPI is installed.
//
// Prints a table of times and ratios and writes bench/results.json:
//   { machine: {…}, rows: [ { id, ours_ms, peer, peer_ms, ratio } | { id, value } ] }
// with ratio = ours_ms / peer_ms (below 1: we are faster). Peers: onnxruntime-node (a dev
// dependency) on an ONNX export of the PyTorch reference built from our weights, and PyTorch
// (Debian's python3-torch). The bench installs nothing: a missing peer's rows are skipped.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine, cpuFeatures, autoPrecision } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { saveWeights } from '../src/models/weights.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';
import { vocDataset } from '../src/data/datasets.js';
import { DataLoader } from '../src/data/loader.js';
import { trainPipeline } from '../src/data/transforms.js';
import { exportOnnx, ortForward, torchBench, torchPython } from './peers.js';
import { runServeBench } from './serve.js';
import { mpiRows } from './mpi.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const work = path.join(here, '.work');

export interface Row {
  id: string;
  ours_ms?: number;
  peer?: string;
  peer_ms?: number;
  ratio?: number;
  value?: number;
  note?: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Input values of preprocessed-image magnitude, the same generator as the peers use. */
function benchInput(n: number): Float32Array {
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 2 ** 32 - 0.5) * 200;
  }
  return data;
}

/** Our forward pass, timed as the peers are: input in, logits out as a JS array. */
function oursForward(model: FCN, size: number | [number, number], batch: number, precision: Precision, warmup: number, reps: number): number {
  const [h, w] = typeof size === 'number' ? [size, size] : size;
  const input = benchInput(batch * 3 * h * w);
  const once = () => {
    const x = native.fromArray([batch, 3, h, w], input);
    const y = model.predictLogits(x, precision);
    y.toArray();
    x.dispose();
    y.dispose();
  };
  for (let i = 0; i < warmup; i++) once();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    once();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** Our training step as PyTorch's is timed: forward, mean cross-entropy, backward, Adam (L2) update. */
function oursTrain(model: FCN, size: number, precision: Precision, warmup: number, reps: number): number {
  const x = native.fromArray([1, 3, size, size], benchInput(3 * size * size));
  // As scripts/torch_bench.py: random classes, the top eighth of the rows void.
  let s = 99;
  const labels = Uint8Array.from({ length: size * size }, (_, i) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return i < (size * size) / 8 ? 255 : s % 21;
  });
  const y = native.fromArray([1, size, size], labels);
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  const times: number[] = [];
  for (let i = 0; i < warmup + reps; i++) {
    const t0 = performance.now();
    trainStep(model, opt, x, y, { precision, seed: i });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  opt.dispose();
  x.dispose();
  y.dispose();
  return median(times);
}

/** Peak RSS of a job in a process of its own (bench/rss.ts). */
function rssOf(mode: 'train' | 'infer', precision: Precision, threads: number): number | null {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'rss.ts'), mode, '--precision', precision, '--threads', String(threads)], { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) {
    console.error(`bench: rss.ts ${mode} failed: ${r.stderr.trim().split('\n').slice(-3).join('\n')}`);
    return null;
  }
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { maxRssMb: number }).maxRssMb;
}

/**
 * Peak RSS of `fcn eval` over the VOC sample's val split with a full-width FCN-8s (seeded
 * weights saved to bench/.work), in a process of its own (bench/rss.ts eval).
 */
function rssEval(voc: string, precision: Precision, threads: number): number | null {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'rss.ts'), 'eval', '--data', voc, '--weights', path.join(work, 'fcn8-w1-seed0.safetensors'), '--precision', precision, '--threads', String(threads)], { encoding: 'utf8', timeout: 3_600_000 });
  if (r.status !== 0) {
    console.error(`bench: rss.ts eval failed: ${r.stderr.trim().split('\n').slice(-3).join('\n')}`);
    return null;
  }
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { maxRssMb: number }).maxRssMb;
}

/**
 * End-to-end training on the real VOC sample: the prefetching DataLoader (decode + random
 * scale/crop/flip in a worker thread) feeding training steps; images/s and the share of the
 * time the engine waits for data.
 */
async function vocTraining(model: FCN, size: number, precision: Precision, steps: number): Promise<{ imagesPerSecond: number; waitShare: number } | null> {
  const voc = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  if (!existsSync(voc)) {
    console.error(`bench: the VOC sample is not at ${voc}: skipping the end-to-end training rows`);
    return null;
  }
  const dataset = await vocDataset(voc, { split: 'train' });
  const loader = new DataLoader({ dataset, pipeline: trainPipeline({ size }), batchSize: 1, workers: 1, prefetch: 2, seed: 1 });
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  let waited = 0, n = 0, t0 = 0;
  try {
    const it = loader.epoch(0);
    for (let i = 0; i <= steps; i++) {
      const tw = performance.now();
      const next = await it.next();
      if (next.done) break;
      if (i === 1) t0 = tw; // step 0 is the warm-up (primitive creation, first decode)
      if (i >= 1) waited += performance.now() - tw;
      const b = next.value;
      const x = native.fromArray([b.n, 3, b.height, b.width], b.images), y = native.fromArray([b.n, b.height, b.width], b.labels);
      trainStep(model, opt, x, y, { precision, seed: i });
      x.dispose();
      y.dispose();
      if (i >= 1) n += b.n;
    }
    await it.return(undefined);
  } finally {
    await loader.close();
    opt.dispose();
  }
  const total = performance.now() - t0;
  return { imagesPerSecond: n / (total / 1000), waitShare: waited / total };
}

function machine(threads: number): Record<string, unknown> {
  const info = native.info();
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memory_gb: Math.round(os.totalmem() / 2 ** 30),
    onednn: info.onednnVersion,
    isa: info.isa,
    threads,
    node: process.version,
    date: new Date().toISOString(),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, reps: { type: 'string' }, threads: { type: 'string' } } });
  const threads = Number(values.threads ?? 2);
  const reps = Number(values.reps ?? 5);
  const only = values.only ? new Set(values.only.split(',')) : null;
  const want = (id: string) => !only || only.has(id);
  configureEngine({ threads });
  const loadStart = os.loadavg();
  mkdirSync(work, { recursive: true });
  const rows: Row[] = [];
  const size = 512;
  const log = (r: Row) =>
    console.error(r.value !== undefined ? `bench: ${r.id} = ${r.value}` : `bench: ${r.id}: ours ${r.ours_ms!.toFixed(0)} ms, ${r.peer} ${r.peer_ms!.toFixed(0)} ms, ratio ${r.ratio!.toFixed(2)}`);

  const model = new FCN({ kind: 'fcn8', width: 1 });
  model.initialize(0);
  const weights = path.join(work, 'fcn8-w1-seed0.safetensors');
  if (!existsSync(weights)) saveWeights(weights, model);

  const python = torchPython();
  let onnx: string | null = null;
  let ortVersion: string | null = null;
  try {
    ortVersion = (await import('onnxruntime-node')).env.versions?.common ?? 'installed';
  } catch {
    console.error('bench: onnxruntime-node is not installed (npm ci installs it): skipping its rows');
  }
  if (ortVersion && python) {
    onnx = path.join(work, `fcn8-w1-seed0-${size}.onnx`);
    if (!existsSync(onnx)) {
      console.error(`bench: exporting the reference network to ONNX (${onnx})`);
      exportOnnx({ model: 'fcn8', width: 1, height: size, widthPx: size, out: onnx, weights });
    }
  } else if (!python) {
    console.error('bench: PyTorch (Debian python3-torch) not found: skipping the rows that need it');
  }

  const ortRow = async (id: string, precision: Precision, ours: number) => {
    const peer = await ortForward({ onnxPath: onnx!, height: size, width: size, threads, warmup: 2, reps });
    rows.push({ id, ours_ms: ours, peer: `onnxruntime-node ${ortVersion} fp32`, peer_ms: peer.ms, ratio: ours / peer.ms });
    log(rows.at(-1)!);
  };
  const torchRow = async (id: string, ours: number, mode: 'forward' | 'train', precision: 'fp32' | 'bf16', channelsLast: boolean) => {
    try {
      const peer = await torchBench({ mode, precision, channelsLast, model: 'fcn8', width: 1, size, threads, warmup: 1, reps: mode === 'train' ? Math.min(reps, 3) : reps });
      const what = `PyTorch ${precision === 'bf16' ? 'bf16 autocast' : 'fp32'}${channelsLast ? ', channels-last' : ''}`;
      rows.push({ id, ours_ms: ours, peer: what, peer_ms: peer.ms, ratio: ours / peer.ms });
      log(rows.at(-1)!);
    } catch (e) {
      console.error(`bench: ${id}: ${(e as Error).message}`);
    }
  };
  const value = (id: string, v: number, note: string) => {
    rows.push({ id, value: Math.round(v * 100) / 100, note });
    log(rows.at(-1)!);
  };

  // Forward 512², batch 1.
  let fwdBf16: number | null = null, fwdFp32: number | null = null;
  if (want('fwd512_bf16_vs_ort') || want('fwd512_bf16_vs_torch')) fwdBf16 = oursForward(model, size, 1, 'bfloat16', 2, reps);
  if (want('fwd512_fp32_vs_ort')) fwdFp32 = oursForward(model, size, 1, 'float32', 2, reps);
  if (onnx && fwdBf16 !== null && want('fwd512_bf16_vs_ort')) await ortRow('fwd512_bf16_vs_ort', 'bfloat16', fwdBf16);
  if (python && fwdBf16 !== null && want('fwd512_bf16_vs_torch')) await torchRow('fwd512_bf16_vs_torch', fwdBf16, 'forward', 'bf16', true);
  if (onnx && fwdFp32 !== null) await ortRow('fwd512_fp32_vs_ort', 'float32', fwdFp32);

  // Training step 512², batch 1 (Adam, L2, mean cross-entropy, backward, update).
  if (want('train512_bf16_vs_torch')) {
    const ours = oursTrain(model, size, 'bfloat16', 1, Math.min(reps, 3));
    if (python) await torchRow('train512_bf16_vs_torch', ours, 'train', 'bf16', false);
    else value('train512_bf16_ms', ours, 'ours only (no PyTorch)');
  }
  if (want('train512_fp32_vs_torch')) {
    const ours = oursTrain(model, size, 'float32', 1, Math.min(reps, 3));
    if (python) await torchRow('train512_fp32_vs_torch', ours, 'train', 'fp32', false);
    else value('train512_fp32_ms', ours, 'ours only (no PyTorch)');
  }

  // Peak RSS, each in a process of its own, in the precision 'auto' picks here.
  const auto = autoPrecision().precision;
  for (const mode of ['train', 'infer'] as const) {
    if (!want(`rss_${mode}_mb`)) continue;
    const mb = rssOf(mode, auto, threads);
    if (mb !== null) value(`rss_${mode}_mb`, mb, `peak RSS, full FCN-8s ${mode === 'train' ? '3 training steps' : '3 forward passes'} at 512², ${auto}`);
  }

  // fcn serve under load: 200 requests from 8 clients (bench/serve.ts, a server process of its own).
  if (want('serve_p95_ms') || want('serve_rss_mb')) {
    const s = runServeBench(threads);
    if (s) {
      const setup = `${s.requests} requests from ${s.clients} clients, 2/3 valid (VOC photos ${s.vocWidth} px wide, 128² scenes) through FCN-32s/16s/8s at width ${s.width}`;
      value('serve_p95_ms', s.p95Ms, `fcn serve p95 latency of valid requests (p50 ${s.p50Ms} ms), ${setup}`);
      if (s.maxRssMb !== null) value('serve_rss_mb', s.maxRssMb, `fcn serve peak RSS under that load`);
    }
  }

  // Peak RSS of fcn eval over the VOC val sample: images of many sizes, one after another.
  const vocRoot = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  if (want('rss_eval_mb')) {
    if (!existsSync(vocRoot)) console.error(`bench: the VOC sample is not at ${vocRoot}: skipping rss_eval_mb`);
    else {
      const mb = rssEval(vocRoot, auto, threads);
      if (mb !== null) value('rss_eval_mb', mb, `peak RSS, fcn eval of full FCN-8s on the VOC sample's val split (each image at its own size), ${auto}`);
    }
  }

  // Other shapes, batch and threads (ours only).
  for (const p of ['bfloat16', 'float32'] as Precision[]) {
    const tag = p === 'bfloat16' ? 'bf16' : 'fp32';
    if (want(`fwd500x375_${tag}_ms`)) value(`fwd500x375_${tag}_ms`, oursForward(model, [375, 500], 1, p, 1, reps), 'forward, a typical VOC image (500 wide, 375 high), batch 1');
    if (want(`fwd512_b4_${tag}_img_s`)) value(`fwd512_b4_${tag}_img_s`, 4000 / oursForward(model, size, 4, p, 1, Math.min(reps, 3)), 'forward throughput at batch 4, images/s');
    if (want(`fwd512_${tag}_1thread_ms`)) {
      configureEngine({ threads: 1 });
      value(`fwd512_${tag}_1thread_ms`, oursForward(model, size, 1, p, 1, Math.min(reps, 3)), `forward 512² on 1 thread (2 threads: ${p === 'bfloat16' ? fwdBf16?.toFixed(0) : fwdFp32?.toFixed(0)} ms)`);
      configureEngine({ threads });
    }
  }

  // End to end on the real VOC sample.
  if (want('voc_train_img_s')) {
    const r = await vocTraining(model, size, auto, Math.max(4, reps + 1));
    if (r) {
      value('voc_train_img_s', r.imagesPerSecond, `training images/s on the VOC sample through DataLoader (1 worker, random scale/crop ${size}/flip), ${auto}, batch 1`);
      value('voc_data_wait_pct', 100 * r.waitShare, 'percent of that time the engine waited for data');
    }
  }
  // Data-parallel training over MPI (processes of their own, under mpirun).
  rows.push(...mpiRows({ reps: Math.min(reps, 3), want, log }));

  const load = os.loadavg();
  const result = { machine: { ...machine(threads), onnxruntime: ortVersion, cpuFeatures: cpuFeatures(), autoPrecision: autoPrecision(), loadavg_start: loadStart.map((l) => Math.round(l * 100) / 100), loadavg_end: load.map((l) => Math.round(l * 100) / 100) }, rows };
  writeFileSync(path.join(here, 'results.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`\n${'id'.padEnd(26)} ${'ours ms'.padStart(9)} ${'peer ms'.padStart(9)} ${'ratio'.padStart(6)}  peer`);
  for (const r of rows) {
    if (r.value !== undefined) console.log(`${r.id.padEnd(26)} ${String(r.value).padStart(9)}  ${r.note ?? ''}`);
    else console.log(`${r.id.padEnd(26)} ${r.ours_ms!.toFixed(0).padStart(9)} ${r.peer_ms!.toFixed(0).padStart(9)} ${r.ratio!.toFixed(2).padStart(6)}  ${r.peer}`);
  }
  console.log(`\nwrote ${path.join('bench', 'results.json')}`);
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exitCode = 1;
});
