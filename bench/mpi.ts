// Data-parallel training on this machine: what the gradient exchange costs and what the overlap
// with the backward pass hides (the measured inputs of docs/scaling.md).
//
//   node --import tsx bench/mpi.ts [--width 1] [--size 512] [--reps 3] [--only ID,…]
//   (writes bench/mpi-results.json; npm run bench runs it too, as rows mpi_* of results.json)
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
//     the backward pass) that the overlap hides;
//   mpi_copy_s_per_gb: gradient copies left (buckets of small parameters, padded layouts, and
//     gradients reordered into their exchange layout), seconds per GB;
//   mpi_tcp_*: the same between two hosts over TCP (two network namespaces joined by a veth
//     pair, bench/two-hosts.ts; root only): the latency, the allreduce (unshaped, and shaped to
//     10 Gbit/s as mpi_tcp10_*) and the 2-rank step;
//   mpi_compute_{fwd,all,head,new}_s: CPU seconds per 512² image on one thread for a forward
//     pass (validation) and a training step of FCN-8s with every layer trainable, FCN-32s with
//     what sits on VGG16 (Keras-FCN's first stage with --init), FCN-8s with its new layer only.
// Each measurement runs in processes of its own (mpirun for the ranks); CPU seconds are
// recorded beside wall time, since this machine is shared.
//
//   node --import tsx bench/mpi.ts --model [--results bench/mpi-results.json] [--tcp-ceiling] [--compute-all-s S …]
// prints docs/scaling.md's tables: step time and images/s for N machines from the measured
// compute and a ring allreduce's cost, bucket by bucket against the backward pass.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './args.js';
import { setUpTwoHosts, twoHostsUnavailable, type TwoHosts } from './two-hosts.js';

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
  const buffers = reducer.buckets.map((b) => new Float32Array(b.size).fill(1e-3 * (s.rank + 1)));
  const out: Record<string, unknown> = { bytes: reducer.bytes, buckets: reducer.buckets.length, ranks: s.size };
  // Latency: a one-value allreduce is 2(N−1) messages of a ring, each a message's latency.
  const one = new Float64Array(1), lat: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t0 = performance.now();
    s.mpi.allreduce(one);
    if (i >= 50) lat.push(performance.now() - t0);
  }
  out.latencyUs = (1000 * median(lat)) / (2 * (s.size - 1));
  for (const precision of ['float32', 'bfloat16'] as const) {
    const times: number[] = [], cpu: number[] = [];
    for (let i = 0; i <= a.reps; i++) {
      s.mpi.barrier();
      const c0 = process.cpuUsage(), t0 = performance.now();
      const ids = buffers.map((b) => s.mpi.iallreduce(b, { precision, scale: 0.5 }));
      for (const id of ids) s.mpi.wait(id);
      const c = process.cpuUsage(c0);
      if (i > 0) times.push(performance.now() - t0); // the first is the warm-up
      if (i > 0) cpu.push((c.user + c.system) / 1000);
    }
    out[precision] = median(times);
    out[`${precision}Cpu`] = median(cpu);
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
  const bytes = dist ? dist.reducerFor(model).bytes : 0;
  opt.dispose();
  model.dispose();
  const pick = (overlap: boolean) => rows.filter((r) => r.overlap === overlap);
  const summary = (rs: typeof rows) => ({ wall: median(rs.map((r) => r.wall)), cpu: median(rs.map((r) => r.cpu)), exposed: median(rs.map((r) => r.exposed)), copy: median(rs.map((r) => r.copy)) });
  return { ranks, threads: a.threads, batch: a.batch, bytes, overlap: summary(pick(true)), ...(dist ? { noOverlap: summary(pick(false)) } : {}) };
}

/** The trainable sets of the seed schedule's stages (with --init), as applyTrainable sets them. */
type StageKind = 'all' | 'head' | 'new';
const STAGE_MODELS: Record<StageKind, { kind: 'fcn32' | 'fcn16' | 'fcn8'; trainable: (layer: string, transposed: boolean) => boolean }> = {
  all: { kind: 'fcn8', trainable: (l, t) => !t },
  head: { kind: 'fcn32', trainable: (l, t) => !t && !l.startsWith('block') },
  new: { kind: 'fcn8', trainable: (l) => l === 'score3' },
};

/** One thread, no MPI: CPU seconds per image of a forward pass and of each stage's step. */
async function workerCompute(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { native } = await import('../src/engine/binding.js');
  const { configureEngine } = await import('../src/engine/config.js');
  const { FCN } = await import('../src/models/fcn.js');
  const { Adam } = await import('../src/train/optim.js');
  const { trainStep } = await import('../src/train/step.js');
  configureEngine({ threads: 1, precision: 'float32' });
  const S = a.size;
  let seed = 99;
  const x = native.fromArray([1, 3, S, S], new Float32Array(3 * S * S).map(() => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 200));
  const y = native.fromArray([1, S, S], new Uint8Array(S * S).map((_, i) => (i < (S * S) / 8 ? 255 : (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % 21)));
  const cpu = (f: () => void) => {
    f(); // warm-up: primitives, prepared weights
    const times: number[] = [];
    for (let i = 0; i < Math.max(1, a.reps - 1); i++) {
      const c0 = process.cpuUsage();
      f();
      const c = process.cpuUsage(c0);
      times.push((c.user + c.system) / 1e6);
    }
    return median(times);
  };
  const out: Record<string, number> = {};
  for (const stage of ['fwd', 'all', 'head', 'new'] as const) {
    const spec = STAGE_MODELS[stage === 'fwd' ? 'all' : stage];
    const model = new FCN({ kind: spec.kind, width: a.width, dropout: 0 });
    model.initialize(0);
    for (const l of model.layers()) l.trainable = spec.trainable(l.name, l.transposed);
    const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
    out[stage] = cpu(() => {
      if (stage === 'fwd') model.predictLogits(x, 'float32').dispose();
      else trainStep(model, opt, x, y, { precision: 'float32' });
    });
    opt.dispose();
    model.dispose();
  }
  x.dispose();
  y.dispose();
  return out;
}

// ---- the model (docs/scaling.md) -------------------------------------------------------------

/** What the model needs to know of one layer of the network (keras style, one image). */
interface LayerCost {
  name: string;
  /** Forward multiply-adds × 2. */
  flops: number;
  params: { name: string; bytes: number }[];
  trainable: boolean;
}

/** FLOPs and parameter bytes layer by layer, input to output, for a stage's trainable set. */
async function layerCosts(stage: StageKind, width: number, size: number): Promise<LayerCost[]> {
  const { FCN } = await import('../src/models/fcn.js');
  const spec = STAGE_MODELS[stage];
  const model = new FCN({ kind: spec.kind, width, numClasses: 21 });
  try {
    // Output side of each layer in the keras style: body convs at size/2^(block−1); conv6,
    // conv7, score7 at 1/32; score4 at 1/16, score3 at 1/8; upsamplers read their input side.
    const side = (name: string): number => {
      const m = /^block(\d)_/.exec(name);
      if (m) return size / 2 ** (Number(m[1]) - 1);
      if (['conv6', 'conv7', 'score7', 'score7_upsample'].includes(name)) return size / 32;
      if (['score4', 'skip4_upsample', 'fcn16'].includes(name)) return size / 16;
      if (['score3', 'fcn8'].includes(name)) return size / 8;
      if (name === 'fcn32') return size / 32;
      throw new Error(`no size for ${name}`);
    };
    return model.layers().map((l) => {
      const k = l.spec.kernel, hw = side(l.name) ** 2;
      return {
        name: l.name,
        flops: 2 * k * k * l.spec.inChannels * l.spec.outChannels * hw,
        params: l.params().map((p) => ({ name: p.name, bytes: 4 * p.dims.reduce((x, y) => x * y, 1) })),
        trainable: spec.trainable(l.name, l.transposed),
      };
    });
  } finally {
    model.dispose();
  }
}

export interface ModelInputs {
  /** Seconds of compute per image on one machine (2 cores) for each stage's step, and a forward pass. */
  compute: Record<StageKind | 'fwd', number>;
  /** Our copies of the gradients out of and back into the engine, seconds per fp32 GB. */
  copySecondsPerGb: number;
  /** Per-message latency of the network, seconds. */
  latency: number;
  /** What a link of nominal speed g (Gbit/s) carries. */
  linkGbps: (g: number) => number;
  bucketMb: number;
}

interface Timeline {
  backward: number;
  /** Exchange time left after the backward pass. */
  exposed: number;
  /** The whole exchange, started after the backward pass. */
  serial: number;
  bytes: number;
}

/**
 * One step's exchange against its backward pass. The backward pass takes 2/3 of the step's
 * compute, spread over the layers in proportion to their FLOPs (a frozen layer costs its
 * input gradient only, and only when a trainable layer lies below it); a parameter is ready
 * when its layer's backward is done; buckets (as GradientReducer builds them) leave in order,
 * one at a time, each costing a ring allreduce: 2(N−1)/N · bytes / bandwidth + 2(N−1) · latency.
 */
function timeline(layers: LayerCost[], stepSeconds: number, n: number, gbps: number, wireBytesPerFloat: number, m: ModelInputs): Timeline {
  const trainableBelow = (i: number) => layers.slice(0, i).some((l) => l.trainable);
  const cost = layers.map((l, i) => (l.trainable ? l.flops : 0) + (trainableBelow(i) ? l.flops : 0));
  const forward = layers.reduce((sum, l) => sum + l.flops, 0);
  const backwardFlops = cost.reduce((a, b) => a + b, 0);
  const perFlop = stepSeconds / (forward + backwardFlops);
  const backward = backwardFlops * perFlop;
  // Ready times, output layers first (the reverse of the forward order).
  const ready = new Map<string, number>();
  let t = 0;
  for (let i = layers.length - 1; i >= 0; i--) {
    t += cost[i]! * perFlop;
    if (layers[i]!.trainable) for (const p of layers[i]!.params) ready.set(p.name, t);
  }
  // Buckets as the reducer makes them: reverse order, the first one 1 MB, then bucketMb.
  const params = layers.filter((l) => l.trainable).flatMap((l) => l.params).reverse();
  const buckets: { bytes: number; ready: number }[] = [];
  let cur = { bytes: 0, ready: 0 };
  for (const p of params) {
    const limit = buckets.length === 0 ? Math.min(1e6, m.bucketMb * 1e6) : m.bucketMb * 1e6;
    if (cur.bytes > 0 && cur.bytes + p.bytes > limit) {
      buckets.push(cur);
      cur = { bytes: 0, ready: 0 };
    }
    cur.bytes += p.bytes;
    cur.ready = Math.max(cur.ready, ready.get(p.name)!);
  }
  if (cur.bytes > 0) buckets.push(cur);
  const ring = (bytes: number) => (n === 1 ? 0 : ((2 * (n - 1)) / n) * (bytes * wireBytesPerFloat / 4) / (m.linkGbps(gbps) * 1e9 / 8) + 2 * (n - 1) * m.latency);
  let end = 0, serial = 0;
  for (const b of buckets) {
    end = Math.max(end, b.ready) + ring(b.bytes);
    serial += ring(b.bytes);
  }
  const bytes = buckets.reduce((s, b) => s + b.bytes, 0);
  return { backward, exposed: n === 1 ? 0 : Math.max(0, end - backward), serial, bytes };
}

interface StepModel {
  seconds: number;
  imagesPerSecond: number;
}

/** A step of `batch` images over n machines. */
function step(layers: LayerCost[], stage: StageKind, batch: number, n: number, gbps: number, bf16: boolean, overlap: boolean, ddp: boolean, m: ModelInputs): StepModel {
  const compute = m.compute[stage] * (batch / n);
  const tl = timeline(layers, compute, n, gbps, bf16 ? 2 : 4, m);
  // Ours copies every gradient out of the engine and back (DDP's gradients are views of its buckets).
  const copies = n === 1 || ddp ? 0 : (m.copySecondsPerGb * tl.bytes) / 1e9;
  const seconds = compute + copies + (n === 1 ? 0 : overlap ? tl.exposed : tl.serial);
  return { seconds, imagesPerSecond: batch / seconds };
}

function fmtSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/**
 * Faster machines, to see where communication starts to dominate: the AVX-512 bf16 machine of
 * BENCHMARKS.md (its measured 2.49 s bf16 training step, 2 threads), and, assumed (not
 * measurements), a many-core server and an accelerator.
 */
const FAST_MACHINES = [
  { seconds: 2.49, what: 'the 2-core Zen 4 of BENCHMARKS.md, bf16 compute' },
  { seconds: 0.5, what: 'a many-core server, assumed' },
  { seconds: 0.06, what: 'an accelerator, assumed' },
];

type Layers = Record<StageKind, LayerCost[]>;
const SPEEDS = [10, 100];
const NS = [1, 2, 4, 8, 16, 32, 64];

/** A markdown table: a header row, right-aligned columns after the first (`left`: the first too). */
function table(head: string[], rows: string[][], left = false): string[] {
  const align = head.map((_, i) => (i === 0 && left ? '---' : '---:'));
  return [`| ${head.join(' | ')} |`, `| ${align.join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`), ''];
}

/** The last stage (every layer trains): step time and images/s per machine count and link. */
function stepTables(layers: Layers, m: ModelInputs): string[] {
  const out: string[] = [];
  const head = ['N', ...SPEEDS.flatMap((g) => ['fp32', 'bf16'].flatMap((p) => ['overlap', 'serial'].map((o) => `${g} Gb/s ${p} ${o}`)))];
  for (const [title, batchOf] of [
    ["global batch 16 (Keras-FCN's), 16/N images per machine", (n: number) => (n <= 16 ? 16 : NaN)],
    ['1 image per machine per step (global batch N)', (n: number) => n],
  ] as const) {
    const rows = NS.filter((n) => Number.isFinite(batchOf(n))).map((n) => [
      String(n),
      ...SPEEDS.flatMap((g) =>
        [false, true].flatMap((bf16) =>
          [true, false].map((overlap) => {
            const r = step(layers.all, 'all', batchOf(n), n, g, bf16, overlap, false, m);
            return `${r.seconds.toFixed(2)} / ${r.imagesPerSecond.toFixed(2)}`;
          }),
        ),
      ),
    ]);
    out.push(`**Every layer trains (last stage), ${title}.** Step time / images per second.`, '', ...table(head, rows));
  }
  return out;
}

/** Parallel efficiency at Keras-FCN's batch of 16. */
function efficiencyTable(layers: Layers, m: ModelInputs): string[] {
  const one = step(layers.all, 'all', 16, 1, 10, false, true, false, m).imagesPerSecond;
  const eff = (n: number, g: number, bf16: boolean) => (100 * step(layers.all, 'all', 16, n, g, bf16, true, false, m).imagesPerSecond) / (n * one);
  const rows = [2, 4, 8, 16].map((n) => [String(n), ...SPEEDS.map((g) => `${eff(n, g, false).toFixed(0)}% / ${eff(n, g, true).toFixed(0)}%`)]);
  return ["**Parallel efficiency** (images/s per machine ÷ one machine's), every layer trains, global batch 16, fp32 with overlap / bf16 with overlap:", '', ...table(['N', ...SPEEDS.map((g) => `${g} Gb/s`)], rows)];
}

/** Where adding machines stops paying, for this machine and faster ones. */
function stopsPayingTable(layers: Layers, m: ModelInputs): string[] {
  const rows = [{ seconds: m.compute.all, what: 'this machine' }, ...FAST_MACHINES].map((c) => {
    const mm: ModelInputs = { ...m, compute: { ...m.compute, all: c.seconds } };
    const eff = (n: number, g: number, bf16: boolean) => step(layers.all, 'all', n, n, g, bf16, true, true, mm).imagesPerSecond / (n * step(layers.all, 'all', 1, 1, g, bf16, true, true, mm).imagesPerSecond);
    const atMost = (g: number, bf16: boolean) => NS.filter((n) => eff(n, g, bf16) >= 0.8).at(-1) ?? 1;
    const at64 = SPEEDS.map((g) => `${(100 * eff(64, g, false)).toFixed(0)} % / ${(100 * eff(64, g, true)).toFixed(0)} %`);
    return [`${c.seconds.toFixed(2)} s (${c.what})`, ...at64, ...SPEEDS.map((g) => `${atMost(g, false)} / ${atMost(g, true)}`)];
  });
  const head = ['compute per image', ...SPEEDS.map((g) => `${g} Gb/s at N = 64`), ...SPEEDS.map((g) => `${g} Gb/s: N at ≥ 80 %`)];
  return [
    `**Where adding machines stops paying** (every layer trains, 1 image per machine per step, with overlap; the network alone: our gradient copies left out): parallel efficiency at N = 64, and the largest N ≤ 64 still at ≥ 80 %, fp32 / bf16 gradients. Compute per image on one machine: this machine's (measured), ${FAST_MACHINES.map((f) => `${f.seconds} s (${f.what})`).join(', ')}:`,
    '',
    ...table(head, rows, true),
  ];
}

/** Keras-FCN's schedule on VOC+SBD, end to end. */
function scheduleTable(layers: Layers, m: ModelInputs): string[] {
  const images = 10582, batch = 16, epochs = 10, valImages = 1449;
  const steps = Math.ceil(images / batch);
  const stages: StageKind[] = ['head', 'new', 'new', 'all'];
  const rows = [1, 2, 4, 8, 16].map((n) => {
    const total = (g: number, bf16: boolean) =>
      stages.reduce((sum, st) => sum + epochs * (steps * step(layers[st], st, batch, n, g, bf16, true, false, m).seconds + (valImages / n) * m.compute.fwd), 0);
    const computeOnly = stages.reduce((sum, st) => sum + epochs * (steps * m.compute[st] * (batch / n) + (valImages / n) * m.compute.fwd), 0);
    return [String(n), ...SPEEDS.map((g) => `${fmtSeconds(total(g, false))} / ${fmtSeconds(total(g, true))}`), fmtSeconds(total(10, false) - computeOnly)];
  });
  return [
    `**Keras-FCN's schedule on VOC+SBD** (${images.toLocaleString('en-US')} images at 512², batch ${batch}, 4 stages × ${epochs} epochs with --init vgg16: FCN-32s head, FCN-16s and FCN-8s new layers, FCN-8s every layer; ${steps} steps per epoch; validation on VOC's ${valImages.toLocaleString('en-US')} val images after every epoch, shared among the machines). Wall time, fp32 / bf16 gradients, with overlap:`,
    '',
    ...table(['N', ...SPEEDS.map((g) => `${g} Gb/s`), 'of which exchange and copies, 10 Gb/s fp32'], rows),
  ];
}

/** Side by side with PyTorch DDP's scheme on the same numbers. */
function ddpTable(layers: Layers, m: ModelInputs): string[] {
  const rows = [2, 4, 8, 16].map((n) => {
    const o = step(layers.all, 'all', 16, n, 10, false, true, false, m), d = step(layers.all, 'all', 16, n, 10, false, true, true, m);
    return [String(n), `${o.seconds.toFixed(2)} s`, `${d.seconds.toFixed(2)} s`, o.imagesPerSecond.toFixed(2), d.imagesPerSecond.toFixed(2)];
  });
  return [
    "**Ours vs PyTorch DDP's scheme on the same numbers** (every layer trains, global batch 16, 10 Gb/s, fp32; DDP: the same buckets and overlap, no gradient copies — its gradients are views of its buckets with gradient_as_bucket_view):",
    '',
    ...table(['N', 'ours step', 'DDP-like step', 'ours images/s', 'DDP-like images/s'], rows),
  ];
}

/** docs/scaling.md's tables, as markdown. */
export async function scalingTables(m: ModelInputs): Promise<string> {
  const size = 512, width = 1;
  const layers: Layers = { all: await layerCosts('all', width, size), head: await layerCosts('head', width, size), new: await layerCosts('new', width, size) };
  const bytes = (st: StageKind) => layers[st].filter((l) => l.trainable).flatMap((l) => l.params).reduce((a, p) => a + p.bytes, 0);
  const intro = `Gradient bytes per step (fp32): every layer ${(bytes('all') / 1e6).toFixed(0)} MB; FCN-32s head ${(bytes('head') / 1e6).toFixed(0)} MB; a new skip layer ${(bytes('new') / 1e3).toFixed(0)} kB.`;
  const parts = [[intro, ''], stepTables(layers, m), efficiencyTable(layers, m), stopsPayingTable(layers, m), scheduleTable(layers, m), ddpTable(layers, m)];
  return parts.flat().join('\n').trimEnd();
}

// ---- the driver -----------------------------------------------------------------------------

function mpirunFound(): boolean {
  return spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
}

/**
 * Runs a worker (under mpirun with `ranks` > 0, or on two hosts over TCP) and returns rank 0's
 * result line.
 */
function run(mode: 'allreduce' | 'step' | 'compute', a: WorkerArgs, ranks: number, hosts: TwoHosts | null = null): Record<string, unknown> {
  const args = [...['--import', 'tsx', self, '--worker', mode], ...Object.entries(a).flatMap(([k, v]) => [`--${k}`, String(v)])];
  const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1' };
  const argv = hosts ? hosts.mpirun([process.execPath, ...args]) : ranks > 0 ? ['mpirun', '-np', String(ranks), '--bind-to', a.threads > 1 ? 'none' : 'core', process.execPath, ...args] : [process.execPath, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env, cwd: path.resolve(here, '..'), timeout: 3_600_000 });
  const line = r.stdout?.split('\n').map((l) => l.replace(/^\[\d+,\d+\]<stdout>:/, '')).find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line) throw new Error(`bench/mpi.ts ${mode} (${ranks || 1} process${ranks > 1 ? 'es' : ''}) failed (status ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-4).join(' | ')}`);
  return JSON.parse(line.slice('RESULT '.length)) as Record<string, unknown>;
}

/**
 * The mpi_tcp_* rows: 2 ranks on two hosts joined by TCP (network namespaces and a veth pair
 * on this machine, bench/two-hosts.ts), the link unshaped (memory speed) and shaped to 10 Gbit/s.
 */
function tcpRows(base: WorkerArgs, what: string, want: (id: string) => boolean, add: (id: string, value: number, note: string) => void): void {
  const ids = ['mpi_tcp_latency_us', 'mpi_tcp_allreduce_ms', 'mpi_tcp_allreduce_gbps', 'mpi_tcp_allreduce_bf16_gbps', 'mpi_tcp_step_ms', 'mpi_tcp_step_exposed_ms', 'mpi_tcp10_allreduce_gbps', 'mpi_tcp10_allreduce_bf16_gbps'];
  if (!ids.some(want)) return;
  const why = twoHostsUnavailable();
  if (why) {
    console.error(`bench: ${why}: skipping the mpi_tcp_* rows`);
    return;
  }
  type Reduce = { bytes: number; buckets: number; float32: number; bfloat16: number; float32Cpu: number; bfloat16Cpu: number; latencyUs: number };
  const bus = (r: Reduce, ms: number) => (r.bytes / 1e9) / (ms / 1000);
  for (const rateGbit of [0, 10]) {
    const tag = rateGbit ? 'mpi_tcp10' : 'mpi_tcp';
    if (![`${tag}_allreduce_gbps`, `${tag}_allreduce_bf16_gbps`, ...(rateGbit ? [] : ['mpi_tcp_latency_us', 'mpi_tcp_allreduce_ms', 'mpi_tcp_step_ms', 'mpi_tcp_step_exposed_ms'])].some(want)) continue;
    const hosts = setUpTwoHosts({ rateGbit: rateGbit || undefined });
    try {
      const link = rateGbit ? `a veth pair shaped to ${rateGbit} Gbit/s (tc tbf)` : 'an unshaped veth pair';
      const r = run('allreduce', base, 2, hosts) as Reduce;
      if (!rateGbit) add('mpi_tcp_latency_us', r.latencyUs, 'per-message latency over TCP between the namespaces: half a one-value allreduce of 2 ranks (median of 250)');
      if (!rateGbit) add('mpi_tcp_allreduce_ms', r.float32, `${what}'s gradients (${(r.bytes / 1e6).toFixed(0)} MB fp32, ${r.buckets} buckets) summed over 2 ranks in two network namespaces, Open MPI TCP only over ${link} (rank 0's CPU ${r.float32Cpu.toFixed(0)} ms)`);
      add(`${tag}_allreduce_gbps`, bus(r, r.float32), `bus bandwidth of that over ${link}, GB/s (fp32; rank 0's CPU ${r.float32Cpu.toFixed(0)} ms for ${r.float32.toFixed(0)} ms)`);
      add(`${tag}_allreduce_bf16_gbps`, bus(r, r.bfloat16), `the same carried as bf16, in fp32-gradient GB/s (${r.bfloat16.toFixed(0)} ms)`);
      if (!rateGbit && ['mpi_tcp_step_ms', 'mpi_tcp_step_exposed_ms'].some(want)) {
        type Summary = { wall: number; cpu: number; exposed: number; copy: number };
        const two = run('step', base, 2, hosts) as { overlap: Summary; noOverlap: Summary };
        add('mpi_tcp_step_ms', two.overlap.wall, `training step, ${what}, ${base.size}², global batch 2, fp32, Adam, on 2 ranks × 1 thread in two namespaces over TCP, with overlap (rank 0's CPU ${(two.overlap.cpu / 1000).toFixed(1)} s; without overlap ${two.noOverlap.wall.toFixed(0)} ms)`);
        add('mpi_tcp_step_exposed_ms', two.overlap.exposed, `the TCP exchange's time after the backward pass with overlap (without: ${two.noOverlap.exposed.toFixed(0)} ms)`);
      }
    } finally {
      hosts.dispose();
    }
  }
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
  const stepIds = ['mpi_step_1x2_ms', 'mpi_step_2x1_ms', 'mpi_step_2x1_exposed_ms', 'mpi_overlap_hidden_pct', 'mpi_copy_s_per_gb'];
  if (stepIds.some(want)) {
    type Summary = { wall: number; cpu: number; exposed: number; copy: number };
    const one = run('step', { ...base, threads: 2 }, 0) as { overlap: Summary };
    const two = run('step', base, 2) as { bytes: number; overlap: Summary; noOverlap: Summary };
    const at = `${what}, ${size}², global batch 2, fp32, Adam`;
    add('mpi_step_1x2_ms', one.overlap.wall, `training step, ${at}: 1 process × 2 threads (CPU ${(one.overlap.cpu / 1000).toFixed(1)} s)`);
    add('mpi_step_2x1_ms', two.overlap.wall, `the same on 2 ranks × 1 thread, fp32 gradients in 25 MB buckets with overlap (rank 0's CPU ${(two.overlap.cpu / 1000).toFixed(1)} s; without overlap ${two.noOverlap.wall.toFixed(0)} ms)`);
    add('mpi_step_2x1_exposed_ms', two.overlap.exposed, `the exchange's time after the backward pass with overlap (without: ${two.noOverlap.exposed.toFixed(0)} ms); gradient copies in and out ${two.overlap.copy.toFixed(0)} ms`);
    add('mpi_overlap_hidden_pct', 100 * Math.max(0, 1 - two.overlap.exposed / two.noOverlap.exposed), 'share of the exchange hidden behind the backward pass: 1 − exposed with overlap / exposed without');
    add('mpi_copy_s_per_gb', two.overlap.copy / 1000 / (two.bytes / 1e9), 'our gradient copies (out of the engine into the buckets, and back), seconds per GB of fp32 gradients');
  }
  tcpRows(base, what, want, add);
  const computeIds = ['fwd', 'all', 'head', 'new'].map((k) => `mpi_compute_${k}_s`);
  if (computeIds.some(want)) {
    const r = run('compute', { ...base, size, threads: 1 }, 0) as Record<'fwd' | 'all' | 'head' | 'new', number>;
    const at = `${size}², fp32, 1 thread, CPU seconds per image`;
    add('mpi_compute_fwd_s', r.fwd, `FCN-8s forward (validation), ${at}`);
    add('mpi_compute_all_s', r.all, `training step, FCN-8s every layer trainable (the last stage), ${at}`);
    add('mpi_compute_head_s', r.head, `training step, FCN-32s with VGG16 frozen (the first stage with --init), ${at}`);
    add('mpi_compute_new_s', r.new, `training step, FCN-8s training score3 only (the 16s/8s stages), ${at}`);
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, {
    options: {
      worker: { type: 'string' }, width: { type: 'string' }, size: { type: 'string' }, reps: { type: 'string' }, batch: { type: 'string' }, threads: { type: 'string' }, only: { type: 'string' },
      model: { type: 'boolean' }, 'tcp-ceiling': { type: 'boolean' }, results: { type: 'string' }, 'speedup-2': { type: 'string' }, latency: { type: 'string' }, 'copy-s-per-gb': { type: 'string' },
      'compute-fwd-s': { type: 'string' }, 'compute-all-s': { type: 'string' }, 'compute-head-s': { type: 'string' }, 'compute-new-s': { type: 'string' },
    },
  });
  const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  if (values.worker) {
    const a: WorkerArgs = { width: num(values.width, 1), size: num(values.size, 512), reps: num(values.reps, 3), batch: num(values.batch, 2), threads: num(values.threads, 1) };
    const result = values.worker === 'allreduce' ? await workerAllreduce(a) : values.worker === 'compute' ? await workerCompute(a) : await workerStep(a, process.env.OMPI_COMM_WORLD_SIZE !== undefined);
    const rank = Number(process.env.OMPI_COMM_WORLD_RANK ?? 0);
    if (rank === 0) console.log(`RESULT ${JSON.stringify(result)}`);
    return;
  }
  if (values.model) {
    // Measured inputs: the mpi_* rows of bench/mpi-results.json (or results.json, or flags). One thread's CPU seconds
    // become one 2-core machine's by the 2-thread speed-up (BENCHMARKS.md: 1.94–1.95×).
    let measured: Record<string, number> = {};
    const file = values.results ?? path.join(here, 'mpi-results.json');
    try {
      const { readFileSync } = await import('node:fs');
      const json = JSON.parse(readFileSync(file, 'utf8')) as { rows: { id: string; value?: number }[] };
      measured = Object.fromEntries(json.rows.filter((r) => r.id.startsWith('mpi_') && r.value !== undefined).map((r) => [r.id, r.value!]));
    } catch {
      console.error(`bench/mpi.ts: no mpi_* rows in ${file}: using the flags`);
    }
    const get = (flag: string, id: string) => {
      const v = values[flag as keyof typeof values] as string | undefined;
      const n = v !== undefined ? Number(v) : measured[id];
      if (n === undefined || !Number.isFinite(n)) throw new Error(`--${flag} is needed (no ${id} measured in ${file})`);
      return n;
    };
    const speedup = num(values['speedup-2'], 1.95);
    const m: ModelInputs = {
      compute: {
        fwd: get('compute-fwd-s', 'mpi_compute_fwd_s') / speedup,
        all: get('compute-all-s', 'mpi_compute_all_s') / speedup,
        head: get('compute-head-s', 'mpi_compute_head_s') / speedup,
        new: get('compute-new-s', 'mpi_compute_new_s') / speedup,
      },
      copySecondsPerGb: get('copy-s-per-gb', 'mpi_copy_s_per_gb'),
      // The per-message latency measured over TCP between two network namespaces (mpi_tcp_*
      // rows), else 30 µs. Links carry their nominal speed; --tcp-ceiling holds them to what
      // TCP moved here on an unshaped link (this CPU's stack, not the link, as the limit).
      latency: values.latency !== undefined ? Number(values.latency) : measured.mpi_tcp_latency_us !== undefined ? measured.mpi_tcp_latency_us * 1e-6 : 30e-6,
      linkGbps: (g: number) => (values['tcp-ceiling'] && measured.mpi_tcp_allreduce_gbps !== undefined ? Math.min(g, 8 * measured.mpi_tcp_allreduce_gbps) : g),
      bucketMb: 25,
    };
    console.log(`inputs: ${JSON.stringify(m)}\n`);
    console.log(await scalingTables(m));
    return;
  }
  const only = values.only ? new Set(values.only.split(',')) : null;
  const load0 = os.loadavg();
  const rows = mpiRows({ width: num(values.width, 1), size: num(values.size, 512), reps: num(values.reps, 3), want: (id) => !only || only.has(id), log: (r) => console.error(`bench: ${r.id} = ${r.value}`) });
  const load1 = os.loadavg();
  console.log(`\nload average ${load0.map((l) => l.toFixed(1)).join(' ')} → ${load1.map((l) => l.toFixed(1)).join(' ')} (${os.cpus()[0]?.model}, ${os.availableParallelism()} cores)`);
  const { writeFileSync } = await import('node:fs');
  const machine = { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), node: process.version, date: new Date().toISOString(), loadavg_start: load0, loadavg_end: load1 };
  writeFileSync(path.join(here, 'mpi-results.json'), JSON.stringify({ machine, rows }, null, 2) + '\n');
  for (const r of rows) console.log(`${r.id.padEnd(26)} ${String(r.value).padStart(9)}  ${r.note}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  main().catch((e) => {
    console.error(`bench/mpi.ts: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
