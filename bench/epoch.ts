// The epoch at the step's speed: where end-to-end VOC training loses time against a bare
// training step at the same shapes (full-width FCN-8s, 512², batch 1, float32 here).
//
//   node --import tsx bench/epoch.ts [--plan synth:3,loop:6,real:3] [--threads 2]
//
// One process, one model, the phases of --plan in order (repeat them to interleave, so load
// drift on a shared machine hits every phase alike):
//   synth:N          bare trainStep on fixed synthetic input (as bench/run.ts's train512 rows)
//   real:N           bare trainStep on one fixed real VOC batch (decoded beforehand)
//   mix:N[:opts]     N rounds of one loop step, one synth step, one real step (ratios per round)
//   loop:N[:opts]    bench/run.ts's voc_train_img_s loop through the DataLoader, N timed steps
//                    after a warm-up step; opts, '+'-separated: w<k> (workers, default 1),
//                    p<k> (prefetch, default 2), s<k> (sharp.concurrency, default sharp's own)
// Every step is timed in parts: waiting for the batch, fromArray, trainStep, dispose. Prints
// medians and, per loop, images/s and its ratio to the synth step's median of the whole run.
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from './args.js';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { native, type Tensor } from '../src/engine/binding.js';
import { configureEngine } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';
import { vocDataset } from '../src/data/datasets.js';
import { DataLoader, type Batch } from '../src/data/loader.js';
import { trainPipeline } from '../src/data/transforms.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f0 = (x: number) => x.toFixed(0);

function synthetic(size: number): [Tensor, Tensor] {
  let s = 12345;
  const data = new Float32Array(3 * size * size);
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 2 ** 32 - 0.5) * 200;
  }
  let t = 99;
  const labels = Uint8Array.from({ length: size * size }, (_, i) => {
    t = (Math.imul(t, 1664525) + 1013904223) >>> 0;
    return i < (size * size) / 8 ? 255 : t % 21;
  });
  return [native.fromArray([1, 3, size, size], data), native.fromArray([1, size, size], labels)];
}

/** What every phase shares: the model, the data, the step counter and the report. */
interface Run {
  model: FCN;
  dataset: Awaited<ReturnType<typeof vocDataset>>;
  pipeline: ReturnType<typeof trainPipeline>;
  size: number;
  defaultSharp: number;
  synthTimes: number[];
  summary: string[];
  seed: number;
}

const report = (run: Run, line: string) => {
  console.log(line);
  run.summary.push(line);
};
const loadNow = () => os.loadavg()[0]!.toFixed(2);
const options = (opts: string) => Object.fromEntries(opts.split('+').filter(Boolean).map((s) => [s[0], Number(s.slice(1))])) as Record<string, number | undefined>;
const tensors = (b: { n: number; height: number; width: number; images: Float32Array; labels: Uint8Array }) =>
  [native.fromArray([b.n, 3, b.height, b.width], b.images), native.fromArray([b.n, b.height, b.width], b.labels)] as const;

/** The first batch of epoch `epoch` through an in-process loader. */
async function firstBatch(run: Run, epoch: number) {
  const l = new DataLoader({ dataset: run.dataset, pipeline: run.pipeline, batchSize: 1, workers: 0, seed: 1 });
  const it = l.epoch(epoch);
  const b = (await it.next()).value!;
  await it.return(undefined);
  return b;
}

/** n bare steps on fixed input (after one untimed: the new optimiser's moments). */
function bare(run: Run, x: Tensor, y: Tensor, n: number, label: string): number[] {
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  const times: number[] = [];
  const c0 = process.cpuUsage();
  try {
    for (let i = 0; i <= n; i++) {
      const t0 = performance.now();
      trainStep(run.model, opt, x, y, { precision: 'float32', seed: run.seed++ });
      if (i > 0) times.push(performance.now() - t0);
    }
  } finally {
    opt.dispose();
  }
  const cpu = process.cpuUsage(c0);
  report(run, `${label.padEnd(22)} step median ${f0(median(times))} ms [${times.map(f0).join(' ')}]  cpu/step ${f0((cpu.user + cpu.system) / 1000 / (n + 1))} ms  load ${loadNow()}`);
  return times;
}

/**
 * Batches 0…n of the training loop's DataLoader (settings from opts: w workers, p prefetch,
 * s sharp threads), each handed to `body` with the time it was asked for, and a fresh Adam.
 */
async function overLoader(run: Run, n: number, opts: string, body: (i: number, b: Batch, asked: number, opt: Adam) => void): Promise<{ workers: number; prefetch: number }> {
  const o = options(opts);
  const workers = o.w ?? 1, prefetch = o.p ?? 2;
  if (o.s !== undefined) sharp.concurrency(o.s);
  const loader = new DataLoader({ dataset: run.dataset, pipeline: run.pipeline, batchSize: 1, workers, prefetch, seed: 1 });
  const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
  try {
    const it = loader.epoch(0);
    for (let i = 0; i <= n; i++) {
      const asked = performance.now();
      const next = await it.next();
      if (next.done) break;
      body(i, next.value, asked, opt);
    }
    await it.return(undefined);
  } finally {
    await loader.close();
    opt.dispose();
    if (o.s !== undefined) sharp.concurrency(run.defaultSharp);
  }
  return { workers, prefetch };
}

/** n timed steps of the training loop through the DataLoader, each timed in parts. */
async function loopPhase(run: Run, n: number, opts: string): Promise<void> {
  const rec = { wait: [] as number[], from: [] as number[], step: [] as number[], free: [] as number[], total: [] as number[] };
  let t0 = 0, images = 0, cStart = process.cpuUsage();
  const { workers, prefetch } = await overLoader(run, n, opts, (i, b, ta, opt) => {
    const tb = performance.now();
    if (i === 1) [t0, cStart] = [ta, process.cpuUsage()];
    const [x, y] = tensors(b);
    const tc = performance.now();
    trainStep(run.model, opt, x, y, { precision: 'float32', seed: run.seed++ });
    const td = performance.now();
    x.dispose();
    y.dispose();
    const te = performance.now();
    if (i === 0) return;
    images += b.n;
    rec.wait.push(tb - ta), rec.from.push(tc - tb), rec.step.push(td - tc), rec.free.push(te - td), rec.total.push(te - ta);
  });
  const span = performance.now() - t0;
  const cpu = process.cpuUsage(cStart);
  const imgS = images / (span / 1000);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const s = options(opts).s;
  report(run,
    `loop ${opts || 'default'} (w${workers} p${prefetch}${s !== undefined ? ` s${s}` : ''})`.padEnd(22) +
    ` ${imgS.toFixed(4)} img/s; per step median: wait ${f0(median(rec.wait))} fromArray ${f0(median(rec.from))} step ${f0(median(rec.step))} dispose ${f0(median(rec.free))} total ${f0(median(rec.total))} ms; ` +
    `wait share ${((100 * sum(rec.wait)) / span).toFixed(2)}%; steps [${rec.step.map(f0).join(' ')}] waits [${rec.wait.map(f0).join(' ')}]  cpu/step ${f0((cpu.user + cpu.system) / 1000 / images)} ms  load ${loadNow()}`);
  if (run.synthTimes.length) {
    const st = median(run.synthTimes);
    report(run, `  ratio img/s ÷ (1 / synth median ${f0(st)} ms) = ${(imgS * st / 1000).toFixed(3)}; loop step median ÷ synth median = ${(median(rec.step) / st).toFixed(3)}`);
  }
}

/**
 * Rounds of: one step of the loader loop (its wait included), one bare step on the fixed
 * synthetic input, one on a fixed real batch. Per-round ratios cancel the load drift.
 */
async function mixPhase(run: Run, n: number, opts: string): Promise<void> {
  const [xs, ys] = synthetic(run.size);
  const [xr, yr] = tensors(await firstBatch(run, 1));
  const L: number[] = [], S: number[] = [], R: number[] = [], W: number[] = [];
  try {
    await overLoader(run, n, opts, (i, b, ta, opt) => {
      const timed = (x: Tensor, y: Tensor) => {
        const t = performance.now();
        trainStep(run.model, opt, x, y, { precision: 'float32', seed: run.seed++ });
        return performance.now() - t;
      };
      const tw = performance.now() - ta;
      const [x, y] = tensors(b);
      timed(x, y);
      x.dispose();
      y.dispose();
      const tl = performance.now() - ta;
      const tsyn = timed(xs, ys), treal = timed(xr, yr);
      if (i === 0) return; // warm-up (the optimiser's moments, first decode)
      L.push(tl), S.push(tsyn), R.push(treal), W.push(tw);
      console.log(`  round ${i}: loop ${f0(tl)} (wait ${f0(tw)})  synth ${f0(tsyn)}  real ${f0(treal)}  load ${loadNow()}`);
    });
  } finally {
    for (const t of [xs, ys, xr, yr]) t.dispose();
  }
  const ratio = (a: number[], b: number[]) => median(a.map((v, i) => v / b[i]!)).toFixed(3);
  report(run, `mix ${opts || 'default'} ${L.length} rounds: medians loop ${f0(median(L))} (wait ${f0(median(W))}) synth ${f0(median(S))} real ${f0(median(R))} ms; per-round median ratios loop/synth ${ratio(L, S)} loop/real ${ratio(L, R)} real/synth ${ratio(R, S)}`);
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, { options: { plan: { type: 'string' }, threads: { type: 'string' }, size: { type: 'string' }, width: { type: 'string' } } });
  const threads = Number(values.threads ?? 2);
  const size = Number(values.size ?? 512);
  const width = Number(values.width ?? 1);
  configureEngine({ threads });
  const voc = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  const model = new FCN({ kind: 'fcn8', width });
  model.initialize(0);
  const run: Run = { model, dataset: await vocDataset(voc, { split: 'train' }), pipeline: trainPipeline({ size }), size, defaultSharp: sharp.concurrency(), synthTimes: [], summary: [], seed: 0 };
  console.log(`fcn8 width ${width}, ${size}², batch 1, float32, ${threads} threads; ${os.availableParallelism()} cores; sharp.concurrency ${run.defaultSharp}; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (const phase of (values.plan ?? 'synth:3,loop:6,real:3').split(',')) {
    const [kind, count, opts = ''] = phase.split(':');
    const n = Number(count ?? 3);
    if (kind === 'synth' || kind === 'real') {
      const b = kind === 'real' ? await firstBatch(run, 0) : null;
      const [x, y] = b ? tensors(b) : synthetic(size);
      const times = bare(run, x, y, n, b ? `real ${b.ids[0]}` : 'synth');
      if (!b) run.synthTimes.push(...times);
      x.dispose();
      y.dispose();
    } else if (kind === 'loop') await loopPhase(run, n, opts);
    else if (kind === 'mix') await mixPhase(run, n, opts);
    else throw new Error(`unknown phase ${phase}`);
  }
  model.dispose();
  console.log('\n' + run.summary.join('\n'));
}

main().catch((e) => {
  console.error(`epoch: ${(e as Error).stack}`);
  process.exitCode = 1;
});
