// The speed benchmark: our engine and its peers on the same network and input, in one run.
//
//   npm run bench [-- --only ID[,ID…]] [--reps N] [--train-reps N] [--threads N] [--out FILE]
//
// First the machine's attainable peak with our own ops (bench/peak.ts): rows
// peak_fp32_gflops, peak_bf16_gflops, peak_int8_gops (the best of a few large convolutions per
// data type; a row with a note and no value where the type cannot run here) and winograd_fp32.
// Then: fwd512_bf16_vs_ort, fwd512_bf16_vs_torch (PyTorch bf16 autocast, channels-last),
// fwd512_fp32_vs_ort, fwd512_int8_vs_ort_int8 (onnxruntime's int8 on the QDQ export),
// fwd512_int8_vs_torch_int8 (PyTorch's static int8: scripts/torch_int8.py),
// train512_bf16_vs_torch, train512_fp32_vs_torch (full-width FCN-8s,
// batch 1), each followed by its efficiency: fwd512_{fp32,bf16,int8}_peak_frac and
// train512_{fp32,bf16}_peak_frac = the network's useful FLOPs (bench/flops.ts) ÷ our median
// time ÷ the peak of that data type, and train512_{fp32,bf16}_update_frac, the update's share of
// the step; reorder_gbps, the rate of a reorder of the largest kernel (conv6) into its packed layout. Then {id, value} rows: rss_train_mb, rss_infer_mb and
// rss_eval_mb (peak RSS, each in a process of its own: bench/rss.ts; eval: fcn eval over the
// VOC sample's val split), serve_p95_ms and serve_rss_mb (fcn serve under load:
// bench/serve.ts), 500×375 forward, batch-4 throughput, 1-thread forward, and
// end-to-end training images/s on the VOC sample through the DataLoader with the share of
// time spent waiting for data and its ratio to a bare step interleaved with it (voc_train_img_s,
// voc_data_wait_pct, voc_train_step_frac); then the data-parallel rows mpi_* (bench/mpi.ts: allreduce of
// FCN-8s's gradients over 2 ranks, a step on 1 process × 2 threads vs 2 ranks × 1 thread, the
// share of the exchange the overlap hides), when Open MPI is installed.
//
// Every timed row is the median of at least 5 repetitions (forward passes; --reps raises it)
// or 3 (training steps; --train-reps), after warm-up, with the spread [min, max] beside it.
// The bench asserts nothing about time: it reports. Rows a CPU cannot run (bf16 without
// AVX-512) are kept with a note saying why, and no value.
//
// Prints a table of times and ratios and writes bench/results.json (or --out):
//   { machine: {…, loadavg_start, loadavg_end}, rows: [ { id, ours_ms, spread_ms, peer,
//     peer_ms, peer_spread_ms, ratio, reps } | { id, value, spread?, note } | { id, note } ] }
// with ratio = ours_ms / peer_ms (below 1: we are faster); every row also has load1, the
// 1-minute load average when it was taken. Peers: onnxruntime-node (a dev
// dependency) on an ONNX export of the PyTorch reference built from our weights, and PyTorch
// (Debian's python3-torch). The bench installs nothing: a missing peer's rows are skipped.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from './args.js';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine, cpuFeatures, autoPrecision, bf16Available, type InferencePrecision } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { saveWeights } from '../src/models/weights.js';
import { Adam } from '../src/train/optim.js';
import { computeGradients, trainStep } from '../src/train/step.js';
import { calibrate, quantizeModel } from '../src/quant/quantize.js';
import { vocDataset } from '../src/data/datasets.js';
import { DataLoader } from '../src/data/loader.js';
import { trainPipeline } from '../src/data/transforms.js';
import { exportOnnx, ortForward, torchBench, torchPython } from './peers.js';
import { runServeBench } from './serve.js';
import { runServeLiveBench } from './serve-live.js';
import { mpiRows } from './mpi.js';
import { measurePeak, measureWinograd, type PeakDtype, type PeakResult } from './peak.js';
import { fcnFlops } from './flops.js';
import { writeOnnx } from '../src/export/onnx-export.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const work = path.join(here, '.work');
const VOC_ROOT = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');

export interface Row {
  id: string;
  /** Our median time and its [min, max] over `reps` repetitions. */
  ours_ms?: number;
  spread_ms?: [number, number];
  peer?: string;
  peer_ms?: number;
  peer_spread_ms?: [number, number];
  ratio?: number;
  reps?: number;
  /** A value row's value (absent, with a note, when the row cannot run on this machine). */
  value?: number;
  /** [min, max] of a timed value row, in the value's unit. */
  spread?: [number, number];
  note?: string;
  /** The 1-minute load average when the row was taken. */
  load1?: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Repeated timings: their median and spread. */
interface Timing {
  ms: number;
  min: number;
  max: number;
  all: number[];
}

function timing(all: number[]): Timing {
  return { ms: median(all), min: Math.min(...all), max: Math.max(...all), all };
}

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const spreadOf = (t: { min: number; max: number }): [number, number] => [round(t.min, 1), round(t.max, 1)];

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

/**
 * Warm-up passes of the 512² forward rows, ours and onnxruntime's alike. Each pass hands back
 * a fresh 22 MB JS array of logits, freed only when V8 next collects (every three or four
 * passes): until the heap holds that many, each pass faults its array's pages in anew (~150 ms
 * on this virtual machine), so the first five passes are not the steady state of a process
 * serving one image after another.
 */
const FORWARD_WARMUP = 5;

/** Our forward pass, timed as the peers are: input in, logits out as a JS array. */
function oursForward(model: FCN, size: number | [number, number], batch: number, precision: InferencePrecision, warmup: number, reps: number): Timing {
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
  return timing(times);
}

/** Our training step as PyTorch's is timed: forward, mean cross-entropy, backward, Adam (L2) update. */
function oursTrain(model: FCN, size: number, precision: Precision, warmup: number, reps: number): Timing & { updateShare: Timing } {
  const x = native.fromArray([1, 3, size, size], benchInput(3 * size * size));
  // As scripts/torch_bench.py: random classes, the top eighth of the rows void.
  let s = 99;
  const labels = Uint8Array.from({ length: size * size }, (_, i) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return i < (size * size) / 8 ? 255 : s % 21;
  });
  const y = native.fromArray([1, size, size], labels);
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  const times: number[] = [], updates: number[] = [];
  for (let i = 0; i < warmup + reps; i++) {
    // trainStep's two parts, the update (the fused native Adam) timed on its own.
    const t0 = performance.now();
    computeGradients(model, x, y, { precision, seed: i });
    const t1 = performance.now();
    opt.step(model.params());
    const t2 = performance.now();
    if (i >= warmup) {
      times.push(t2 - t0);
      updates.push((t2 - t1) / (t2 - t0));
    }
  }
  opt.dispose();
  x.dispose();
  y.dispose();
  return { ...timing(times), updateShare: timing(updates) };
}

/**
 * conv6's 4096×512×7×7 float32 kernel (the largest) reordered from plain into the layout its
 * forward primitive packs it in (warm buffers): GB/s counting the read and the write.
 */
function reorderRate(reps: number): Timing {
  const dims = [4096, 512, 7, 7];
  const w = native.zeros(dims);
  const x = native.zeros([1, 512, 16, 16]);
  const { y, weightsCache } = native.convForward(x, w, null, { padding: [3, 3, 3, 3] });
  const like = weightsCache ?? w;
  const rates: number[] = [];
  for (let i = 0; i < reps + 1; i++) {
    const t0 = performance.now();
    const t = native.reorder(w, { like });
    const ms = performance.now() - t0;
    t.dispose();
    if (i > 0) rates.push((2 * w.nbytes) / (ms / 1000) / 1e9);
  }
  for (const t of [w, x, y, weightsCache]) t?.dispose();
  return timing(rates);
}

/**
 * The int8 model path (calibrate, quantizeModel, predictLogits(x, 'int8')), timed as
 * oursForward on a quantized copy of the seeded network calibrated on the bench input.
 */
function oursForwardInt8(size: number, warmup: number, reps: number, qdqOnnx?: string): Timing {
  const model = new FCN({ kind: 'fcn8', width: 1 });
  try {
    model.initialize(0);
    const x = native.fromArray([1, 3, size, size], benchInput(3 * size * size));
    try {
      quantizeModel(model, calibrate(model, [x]));
    } finally {
      x.dispose();
    }
    // The same int8 model as QDQ ONNX, for onnxruntime's own int8 kernels.
    if (qdqOnnx) writeOnnx(qdqOnnx, model, { int8: true });
    return oursForward(model, size, 1, 'int8', warmup, reps);
  } finally {
    model.dispose();
  }
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
async function vocTraining(model: FCN, size: number, precision: Precision, steps: number): Promise<{ imagesPerSecond: number; waitShare: number; stepFrac: number } | null> {
  const voc = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  if (!existsSync(voc)) {
    console.error(`bench: the VOC sample is not at ${voc}: skipping the end-to-end training rows`);
    return null;
  }
  const dataset = await vocDataset(voc, { split: 'train' });
  const loader = new DataLoader({ dataset, pipeline: trainPipeline({ size }), batchSize: 1, workers: 1, prefetch: 2, seed: 1 });
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  // After each timed step, a bare trainStep on the same batch, off the clock: the ratio of the
  // two, taken per step, is the loop's share of the step rate. Measured seconds apart it holds
  // under load drift, which a comparison with the train512 row, minutes away, does not.
  let waited = 0, n = 0, span = 0;
  const fracs: number[] = [];
  try {
    const it = loader.epoch(0);
    for (let i = 0; i <= steps; i++) {
      const tw = performance.now();
      const next = await it.next();
      if (next.done) break;
      if (i >= 1) waited += performance.now() - tw; // step 0 is the warm-up (primitive creation, first decode)
      const b = next.value;
      const x = native.fromArray([b.n, 3, b.height, b.width], b.images), y = native.fromArray([b.n, b.height, b.width], b.labels);
      trainStep(model, opt, x, y, { precision, seed: i });
      const loop = performance.now() - tw;
      if (i >= 1) {
        const tb = performance.now();
        trainStep(model, opt, x, y, { precision, seed: i });
        fracs.push((performance.now() - tb) / loop);
      }
      x.dispose();
      y.dispose();
      if (i >= 1) {
        n += b.n;
        span += loop;
      }
    }
    await it.return(undefined);
  } finally {
    await loader.close();
    opt.dispose();
  }
  return { imagesPerSecond: n / (span / 1000), waitShare: waited / span, stepFrac: median(fracs) };
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

const BF16_WHY = 'absent: oneDNN 2.6 runs no bf16 primitive on this CPU (AVX2 only; bf16 needs AVX-512)';
const SIZE = 512;

/** One bench run: what is asked, the rows so far, and how rows are written. */
class Bench {
  readonly rows: Row[] = [];
  readonly peaks: Partial<Record<PeakDtype, PeakResult>> = {};
  readonly bf16 = bf16Available();
  /** Useful FLOPs of full-width FCN-8s at 512² (keras style), bench/flops.ts. */
  readonly flops = { fwd: fcnFlops('fcn8', 'keras', 1, SIZE, SIZE), train: fcnFlops('fcn8', 'keras', 1, SIZE, SIZE, { training: true }) };
  readonly timings: { fp32: Timing | null; bf16: Timing | null; int8: Timing | null } = { fp32: null, bf16: null, int8: null };

  constructor(readonly threads: number, readonly reps: number, readonly trainReps: number, private readonly only: Set<string> | null) {}

  want = (id: string) => !this.only || this.only.has(id);

  log = (r: Row) => {
    const spread = (s: [number, number] | undefined) => (s ? ` [${s[0]}–${s[1]}]` : '');
    console.error(
      r.ours_ms !== undefined
        ? `bench: ${r.id}: ours ${r.ours_ms.toFixed(0)} ms${spread(r.spread_ms)}, ${r.peer} ${r.peer_ms!.toFixed(0)} ms${spread(r.peer_spread_ms)}, ratio ${r.ratio!.toFixed(2)}`
        : r.value !== undefined ? `bench: ${r.id} = ${r.value}${spread(r.spread)}` : `bench: ${r.id}: ${r.note}`,
    );
  };

  push(r: Row): void {
    this.rows.push({ ...r, load1: round(os.loadavg()[0]) });
    this.log(this.rows.at(-1)!);
  }

  value(id: string, v: number, note: string, extra: { spread?: [number, number]; reps?: number; digits?: number } = {}): void {
    this.push({ id, value: round(v, extra.digits ?? 2), ...(extra.spread ? { spread: extra.spread } : {}), ...(extra.reps ? { reps: extra.reps } : {}), note });
  }

  absent(id: string, note: string): void {
    this.push({ id, note });
  }

  /** A row of ours against a peer's timing. */
  versus(id: string, ours: Timing, peer: Timing, what: string, reps = this.reps): void {
    this.push({ id, ours_ms: ours.ms, spread_ms: spreadOf(ours), peer: what, peer_ms: peer.ms, peer_spread_ms: spreadOf(peer), ratio: ours.ms / peer.ms, reps });
  }

  /** An efficiency row: FLOPs ÷ our median time ÷ the peak of that data type. */
  frac(id: string, dtype: PeakDtype, what: 'fwd' | 'train', t: Timing | null, why?: string): void {
    if (!this.want(id)) return;
    const p = this.peaks[dtype];
    if (why || !t) return this.absent(id, why ?? 'absent: not measured');
    if (!p || p.gops === null) return this.absent(id, `absent: no ${dtype} peak here (${p?.note ?? 'not measured'})`);
    const gflop = this.flops[what] / 1e9, unit = dtype === 'int8' ? 'OP' : 'FLOP';
    this.value(id, gflop / (t.ms / 1000) / p.gops, `${gflop.toFixed(1)} G${unit} (bench/flops.ts) ÷ our median ${t.ms.toFixed(0)} ms ÷ peak_${dtype} ${p.gops.toFixed(1)}: ${(gflop / (t.ms / 1000)).toFixed(1)} G${unit}/s`, {
      spread: [round(gflop / (t.max / 1000) / p.gops, 3), round(gflop / (t.min / 1000) / p.gops, 3)],
      digits: 3,
    });
  }
}

/** The peers that are installed: onnxruntime-node on the PyTorch reference's ONNX export, and PyTorch. */
interface Peers {
  python: string | null;
  ortVersion: string | null;
  onnx: string | null;
}

/** The machine's attainable peak with our own ops (bench/peak.ts), when a peak or efficiency row asks for it. */
function peakRows(b: Bench): void {
  const peakIds: Record<PeakDtype, string> = { fp32: 'peak_fp32_gflops', bf16: 'peak_bf16_gflops', int8: 'peak_int8_gops' };
  const fracIds: Record<PeakDtype, string[]> = {
    fp32: ['fwd512_fp32_peak_frac', 'train512_fp32_peak_frac'],
    bf16: ['fwd512_bf16_peak_frac', 'train512_bf16_peak_frac'],
    int8: ['fwd512_int8_peak_frac'],
  };
  for (const d of ['fp32', 'bf16', 'int8'] as const) {
    if (!b.want(peakIds[d]) && !fracIds[d].some(b.want)) continue;
    const p = (b.peaks[d] = measurePeak(d, { reps: b.reps }));
    if (!b.want(peakIds[d])) continue;
    if (p.gops === null) b.absent(peakIds[d], p.note);
    else b.value(peakIds[d], p.gops, p.note, { reps: b.reps, digits: 1 });
  }
  if (b.want('winograd_fp32')) {
    const r = measureWinograd();
    if (r.gflops === null) b.absent('winograd_fp32', r.note);
    else b.value('winograd_fp32', r.gflops, r.note, { digits: 1 });
  }
}

async function findPeers(b: Bench, weights: string): Promise<Peers> {
  const python = torchPython();
  let ortVersion: string | null = null, onnx: string | null = null;
  try {
    ortVersion = (await import('onnxruntime-node')).env.versions?.common ?? 'installed';
  } catch {
    console.error('bench: onnxruntime-node is not installed (npm ci installs it): skipping its rows');
  }
  const needOrt = ['fwd512_fp32_vs_ort', 'fwd512_int8_vs_ort', 'fwd512_best_vs_ort'].some(b.want) || (b.bf16 && b.want('fwd512_bf16_vs_ort'));
  if (ortVersion && python && needOrt) {
    onnx = path.join(work, `fcn8-w1-seed0-${SIZE}.onnx`);
    if (!existsSync(onnx)) {
      console.error(`bench: exporting the reference network to ONNX (${onnx})`);
      exportOnnx({ model: 'fcn8', width: 1, height: SIZE, widthPx: SIZE, out: onnx, weights });
    }
  } else if (!python) console.error('bench: PyTorch (Debian python3-torch) not found: skipping the rows that need it');
  return { python, ortVersion, onnx };
}

/** Forward 512², batch 1: ours in fp32, bf16 and int8 against onnxruntime and PyTorch, each with its efficiency. */
async function forwardRows(b: Bench, model: FCN, peers: Peers): Promise<void> {
  let ortFp32: Timing | null = null;
  const ortRow = async (id: string, ours: Timing) => {
    ortFp32 ??= timing((await ortForward({ onnxPath: peers.onnx!, height: SIZE, width: SIZE, threads: b.threads, warmup: FORWARD_WARMUP, reps: b.reps })).allMs);
    b.versus(id, ours, ortFp32, `onnxruntime-node ${peers.ortVersion} fp32`);
  };
  const bf16Ids = ['fwd512_bf16_vs_ort', 'fwd512_bf16_vs_torch'];
  const t = b.timings;
  if (b.bf16 && [...bf16Ids, 'fwd512_bf16_peak_frac'].some(b.want)) t.bf16 = oursForward(model, SIZE, 1, 'bfloat16', FORWARD_WARMUP, b.reps);
  if (['fwd512_fp32_vs_ort', 'fwd512_fp32_peak_frac'].some(b.want)) t.fp32 = oursForward(model, SIZE, 1, 'float32', FORWARD_WARMUP, b.reps);
  for (const id of bf16Ids) if (!b.bf16 && b.want(id)) b.absent(id, BF16_WHY);
  if (peers.onnx && t.bf16 && b.want('fwd512_bf16_vs_ort')) await ortRow('fwd512_bf16_vs_ort', t.bf16);
  if (peers.python && t.bf16 && b.want('fwd512_bf16_vs_torch')) await torchRow(b, 'fwd512_bf16_vs_torch', t.bf16, 'forward', 'bf16', true);
  b.frac('fwd512_bf16_peak_frac', 'bf16', 'fwd', t.bf16, b.bf16 ? undefined : BF16_WHY);
  if (peers.onnx && t.fp32 && b.want('fwd512_fp32_vs_ort')) await ortRow('fwd512_fp32_vs_ort', t.fp32);
  else if (t.fp32 && b.want('fwd512_fp32_vs_ort')) b.value('fwd512_fp32_ms', t.fp32.ms, 'ours only (no ONNX export: onnxruntime-node or PyTorch missing)', { spread: spreadOf(t.fp32), reps: b.reps });
  b.frac('fwd512_fp32_peak_frac', 'fp32', 'fwd', t.fp32);
  await int8Rows(b, peers, ortRow);
  if (peers.onnx && b.want('fwd512_best_vs_ort')) {
    // The fastest precision that meets the accuracy bars: fp32, bf16 (where it runs) and int8
    // (mean IoU within 0.01 of fp32 on the demo's model: BENCHMARKS.md, "int8 accuracy").
    const ran = (Object.entries({ float32: t.fp32, bfloat16: t.bf16, int8: t.int8 }) as [string, Timing | null][]).filter((e): e is [string, Timing] => e[1] !== null);
    if (ran.length > 0) {
      const [name, best] = ran.reduce((x, y) => (y[1].ms < x[1].ms ? y : x));
      await ortRow('fwd512_best_vs_ort', best);
      b.rows.at(-1)!.note = `${name}, the fastest of ${ran.map(([n]) => n).join(', ')}`;
    }
  }
}

/** The int8 network (the upsamplers stay float32: a small share of the FLOPs), also against onnxruntime's own int8 on its QDQ export. */
async function int8Rows(b: Bench, peers: Peers, ortRow: (id: string, ours: Timing) => Promise<void>): Promise<void> {
  if (!['fwd512_int8_peak_frac', 'fwd512_int8_vs_ort', 'fwd512_best_vs_ort', 'fwd512_int8_vs_ort_int8', 'fwd512_int8_vs_torch_int8'].some(b.want)) return;
  const qdqOnnx = peers.ortVersion && b.want('fwd512_int8_vs_ort_int8') ? path.join(work, 'fcn8-w1-seed0-int8-qdq.onnx') : undefined;
  try {
    b.timings.int8 = oursForwardInt8(SIZE, FORWARD_WARMUP, b.reps, qdqOnnx);
    b.frac('fwd512_int8_peak_frac', 'int8', 'fwd', b.timings.int8);
  } catch (e) {
    b.frac('fwd512_int8_peak_frac', 'int8', 'fwd', null, `absent: ${(e as Error).message}`);
    return;
  }
  if (peers.onnx && b.want('fwd512_int8_vs_ort')) await ortRow('fwd512_int8_vs_ort', b.timings.int8);
  if (qdqOnnx) {
    const peer = timing((await ortForward({ onnxPath: qdqOnnx, height: SIZE, width: SIZE, threads: b.threads, warmup: FORWARD_WARMUP, reps: b.reps })).allMs);
    b.versus('fwd512_int8_vs_ort_int8', b.timings.int8, peer, `onnxruntime-node ${peers.ortVersion} int8 (QDQ export of the same int8 model)`);
  }
  // PyTorch's own int8 (fbgemm, or onednn where torch lacks it), calibrated in its process on its input.
  if (peers.python && b.want('fwd512_int8_vs_torch_int8')) await torchRow(b, 'fwd512_int8_vs_torch_int8', b.timings.int8, 'forward', 'int8', true);
}

async function torchRow(b: Bench, id: string, ours: Timing, mode: 'forward' | 'train', precision: 'fp32' | 'bf16' | 'int8', channelsLast: boolean): Promise<void> {
  try {
    const n = mode === 'train' ? b.trainReps : b.reps;
    const r = await torchBench({ mode, precision, channelsLast, model: 'fcn8', width: 1, size: SIZE, threads: b.threads, warmup: 1, reps: n });
    b.versus(id, ours, timing(r.allMs), `PyTorch ${{ bf16: 'bf16 autocast', fp32: 'fp32', int8: `int8 static quantization (${r.quantizedEngine ?? '?'} engine; logits ${((r.int8RelErr ?? NaN) * 100).toFixed(1)}% from float)` }[precision]}${channelsLast ? ', channels-last' : ''}`, n);
  } catch (e) {
    console.error(`bench: ${id}: ${(e as Error).message}`);
  }
}

/** Training step 512², batch 1 (Adam, L2, mean cross-entropy, backward, update), and the largest weight's reorder. */
async function trainRows(b: Bench, model: FCN, peers: Peers): Promise<void> {
  for (const [p, tag] of [['bfloat16', 'bf16'], ['float32', 'fp32']] as const) {
    const id = `train512_${tag}_vs_torch`, fracId = `train512_${tag}_peak_frac`, shareId = `train512_${tag}_update_frac`;
    if (![id, fracId, shareId].some(b.want)) continue;
    if (p === 'bfloat16' && !b.bf16) {
      if (b.want(id)) b.absent(id, BF16_WHY);
      b.frac(fracId, 'bf16', 'train', null, BF16_WHY);
      continue;
    }
    const ours = oursTrain(model, SIZE, p, 1, b.trainReps);
    if (b.want(id)) {
      if (peers.python) await torchRow(b, id, ours, 'train', tag, false);
      else b.value(`train512_${tag}_ms`, ours.ms, 'ours only (no PyTorch)', { spread: spreadOf(ours), reps: b.trainReps });
    }
    b.frac(fracId, tag, 'train', ours);
    if (b.want(shareId))
      b.value(shareId, ours.updateShare.ms, 'the optimiser update (fused native Adam: master, state and packed copies in one pass) as a share of the step', {
        spread: [round(ours.updateShare.min, 3), round(ours.updateShare.max, 3)],
        digits: 3,
      });
  }
  if (b.want('reorder_gbps')) {
    const r = reorderRate(b.reps);
    b.value('reorder_gbps', r.ms, "conv6's float32 kernel (411 MB) reordered plain → its forward primitive's layout, warm buffers, read + write", { spread: spreadOf(r), reps: b.reps, digits: 1 });
  }
}

/** Peak RSS (training, inference, fcn eval on the VOC sample) and fcn serve, each in processes of their own, in the precision 'auto' picks here. */
function processRows(b: Bench): void {
  const auto = autoPrecision().precision;
  for (const mode of ['train', 'infer'] as const) {
    if (!b.want(`rss_${mode}_mb`)) continue;
    const mb = rssOf(mode, auto, b.threads);
    if (mb !== null) b.value(`rss_${mode}_mb`, mb, `peak RSS, full FCN-8s ${mode === 'train' ? '3 training steps' : '3 forward passes'} at 512², ${auto}`);
  }
  if (b.want('serve_p95_ms') || b.want('serve_rss_mb')) {
    const s = runServeBench(b.threads);
    if (s) {
      const setup = `${s.requests} requests from ${s.clients} clients, 2/3 valid (VOC photos ${s.vocWidth} px wide, 128² scenes) through FCN-32s/16s/8s at width ${s.width}`;
      b.value('serve_p95_ms', s.p95Ms, `fcn serve p95 latency of valid requests (p50 ${s.p50Ms} ms), ${setup}`);
      if (s.maxRssMb !== null) b.value('serve_rss_mb', s.maxRssMb, `fcn serve peak RSS under that load`);
    }
  }
  if (b.want('serve_first_answer_s') || b.want('camera_fps_256')) {
    const s = runServeLiveBench(b.threads);
    if (s) {
      b.value('serve_first_answer_s', s.firstAnswerS, 'seconds from launching fcn serve (no demo trained yet) to its first 200 for the start page, the demo training beside it', { digits: 2 });
      b.value('camera_fps_256', s.cameraFps, `Camera view frames per second: 256×192 PNG frames one at a time through the demo's FCN-8s (width 0.25), ${s.precision}`, { digits: 2 });
    }
  }
  if (b.want('rss_eval_mb')) {
    if (!existsSync(VOC_ROOT)) console.error(`bench: the VOC sample is not at ${VOC_ROOT}: skipping rss_eval_mb`);
    else {
      const mb = rssEval(VOC_ROOT, auto, b.threads);
      if (mb !== null) b.value('rss_eval_mb', mb, `peak RSS, fcn eval of full FCN-8s on the VOC sample's val split (each image at its own size), ${auto}`);
    }
  }
}

/** Other shapes, batch and threads (ours only). */
function shapeRows(b: Bench, model: FCN): void {
  for (const p of ['bfloat16', 'float32'] as Precision[]) {
    const tag = p === 'bfloat16' ? 'bf16' : 'fp32';
    const ids = [`fwd500x375_${tag}_ms`, `fwd512_b4_${tag}_img_s`, `fwd512_${tag}_1thread_ms`];
    if (p === 'bfloat16' && !b.bf16) {
      for (const id of ids) if (b.want(id)) b.absent(id, BF16_WHY);
      continue;
    }
    if (b.want(ids[0])) {
      const t = oursForward(model, [375, 500], 1, p, 1, b.reps);
      b.value(ids[0], t.ms, 'forward, a typical VOC image (500 wide, 375 high), batch 1', { spread: spreadOf(t), reps: b.reps });
    }
    if (b.want(ids[1])) {
      const t = oursForward(model, SIZE, 4, p, 1, b.reps);
      b.value(ids[1], 4000 / t.ms, 'forward throughput at batch 4, images/s', { spread: [round(4000 / t.max), round(4000 / t.min)], reps: b.reps });
    }
    if (b.want(ids[2])) {
      configureEngine({ threads: 1 });
      const t = oursForward(model, SIZE, 1, p, 1, b.reps);
      const two = p === 'bfloat16' ? b.timings.bf16 : b.timings.fp32;
      b.value(ids[2], t.ms, `forward 512² on 1 thread${two ? ` (2 threads: ${two.ms.toFixed(0)} ms)` : ''}`, { spread: spreadOf(t), reps: b.reps });
      configureEngine({ threads: b.threads });
    }
  }
}

/** End to end on the real VOC sample (one run of several steps: a throughput, not repetitions). */
async function vocRows(b: Bench, model: FCN): Promise<void> {
  if (!b.want('voc_train_img_s')) return;
  const auto = autoPrecision().precision;
  const r = await vocTraining(model, SIZE, auto, Math.max(4, b.reps + 1));
  if (!r) return;
  b.value('voc_train_img_s', r.imagesPerSecond, `training images/s on the VOC sample through DataLoader (1 worker, random scale/crop ${SIZE}/flip), ${auto}, batch 1`, { digits: 3 });
  b.value('voc_data_wait_pct', 100 * r.waitShare, 'percent of that time the engine waited for data');
  b.value('voc_train_step_frac', r.stepFrac, 'that rate ÷ the bare trainStep rate on the same batch, median of per-step ratios (each loop step followed by a bare step)', { digits: 3 });
}

/** results.json and the table on stdout. */
function report(b: Bench, out: string, loadStart: number[], ortVersion: string | null): void {
  const load = os.loadavg();
  const loads = (l: number[]) => l.map((x) => round(x));
  const result = {
    machine: { ...machine(b.threads), onnxruntime: ortVersion, cpuFeatures: cpuFeatures(), autoPrecision: autoPrecision(), loadavg_start: loads(loadStart), loadavg_end: loads(load) },
    rows: b.rows,
  };
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nload average (1 min) ${round(loadStart[0])} before, ${round(load[0])} after; ${b.threads} threads on ${os.availableParallelism()} cores`);
  console.log(`\n${'id'.padEnd(26)} ${'ours ms'.padStart(9)} ${'[min–max]'.padStart(13)} ${'peer ms'.padStart(9)} ${'[min–max]'.padStart(13)} ${'ratio'.padStart(6)}  peer`);
  const range = (s: [number, number] | undefined) => (s ? `${s[0].toFixed(0)}–${s[1].toFixed(0)}` : '');
  for (const r of b.rows) {
    if (r.ours_ms !== undefined)
      console.log(`${r.id.padEnd(26)} ${r.ours_ms.toFixed(0).padStart(9)} ${range(r.spread_ms).padStart(13)} ${r.peer_ms!.toFixed(0).padStart(9)} ${range(r.peer_spread_ms).padStart(13)} ${r.ratio!.toFixed(2).padStart(6)}  ${r.peer}`);
    else if (r.value !== undefined) console.log(`${r.id.padEnd(26)} ${String(r.value).padStart(9)} ${(r.spread ? `${r.spread[0]}–${r.spread[1]}` : '').padStart(13)}  ${r.note ?? ''}`);
    else console.log(`${r.id.padEnd(26)} ${'—'.padStart(9)} ${''.padStart(13)}  ${r.note ?? ''}`);
  }
  console.log(`\nwrote ${path.relative(process.cwd(), out) || out}`);
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, { options: { only: { type: 'string' }, reps: { type: 'string' }, 'train-reps': { type: 'string' }, threads: { type: 'string' }, out: { type: 'string' } } });
  // At least 5 repetitions of a forward pass and 3 of a training step, whatever is asked.
  const b = new Bench(Number(values.threads ?? 2), Math.max(5, Number(values.reps ?? 5)), Math.max(3, Number(values['train-reps'] ?? 3)), values.only ? new Set(values.only.split(',')) : null);
  const out = path.resolve(values.out ?? path.join(here, 'results.json'));
  configureEngine({ threads: b.threads });
  const loadStart = os.loadavg();
  mkdirSync(work, { recursive: true });
  peakRows(b);
  const model = new FCN({ kind: 'fcn8', width: 1 });
  model.initialize(0);
  const weights = path.join(work, 'fcn8-w1-seed0.safetensors');
  if (!existsSync(weights)) saveWeights(weights, model);
  const peers = await findPeers(b, weights);
  await forwardRows(b, model, peers);
  await trainRows(b, model, peers);
  processRows(b);
  shapeRows(b, model);
  await vocRows(b, model);
  // Data-parallel training over MPI (processes of their own, under mpirun).
  for (const r of mpiRows({ reps: b.trainReps, want: b.want, log: b.log })) b.rows.push({ ...r, load1: round(os.loadavg()[0]) });
  report(b, out, loadStart, peers.ortVersion);
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exitCode = 1;
});
