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
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { native, type Tensor } from '../src/engine/binding.js';
import { configureEngine } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';
import { vocDataset } from '../src/data/datasets.js';
import { DataLoader } from '../src/data/loader.js';
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

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { plan: { type: 'string' }, threads: { type: 'string' }, size: { type: 'string' }, width: { type: 'string' } } });
  const threads = Number(values.threads ?? 2);
  const size = Number(values.size ?? 512);
  const width = Number(values.width ?? 1);
  configureEngine({ threads });
  const plan = (values.plan ?? 'synth:3,loop:6,real:3').split(',');
  const voc = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  const dataset = await vocDataset(voc, { split: 'train' });
  const pipeline = trainPipeline({ size });
  const defaultSharp = sharp.concurrency();
  console.log(`fcn8 width ${width}, ${size}², batch 1, float32, ${threads} threads; ${os.availableParallelism()} cores; sharp.concurrency ${defaultSharp}; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  const model = new FCN({ kind: 'fcn8', width });
  model.initialize(0);
  const synthTimes: number[] = [];
  const summary: string[] = [];
  let seed = 0;

  const bare = (x: Tensor, y: Tensor, n: number, label: string) => {
    const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
    const times: number[] = [];
    const c0 = process.cpuUsage();
    try {
      for (let i = 0; i <= n; i++) {
        const t0 = performance.now();
        trainStep(model, opt, x, y, { precision: 'float32', seed: seed++ });
        if (i > 0) times.push(performance.now() - t0); // step 0: the new optimiser's moments
      }
    } finally {
      opt.dispose();
    }
    const cpu = process.cpuUsage(c0);
    const line = `${label.padEnd(22)} step median ${f0(median(times))} ms [${times.map(f0).join(' ')}]  cpu/step ${f0((cpu.user + cpu.system) / 1000 / (n + 1))} ms  load ${os.loadavg()[0]!.toFixed(2)}`;
    console.log(line);
    summary.push(line);
    return times;
  };

  for (const phase of plan) {
    const [kind, count, opts = ''] = phase.split(':');
    const n = Number(count ?? 3);
    if (kind === 'synth') {
      const [x, y] = synthetic(size);
      synthTimes.push(...bare(x, y, n, 'synth'));
      x.dispose();
      y.dispose();
    } else if (kind === 'real') {
      const l = new DataLoader({ dataset, pipeline, batchSize: 1, workers: 0, seed: 1 });
      const it = l.epoch(0);
      const b = (await it.next()).value!;
      await it.return(undefined);
      const x = native.fromArray([b.n, 3, b.height, b.width], b.images), y = native.fromArray([b.n, b.height, b.width], b.labels);
      bare(x, y, n, `real ${b.ids[0]}`);
      x.dispose();
      y.dispose();
    } else if (kind === 'loop') {
      const o = Object.fromEntries(opts.split('+').filter(Boolean).map((s) => [s[0], Number(s.slice(1))]));
      const workers = o.w ?? 1, prefetch = o.p ?? 2;
      if (o.s !== undefined) sharp.concurrency(o.s);
      const loader = new DataLoader({ dataset, pipeline, batchSize: 1, workers, prefetch, seed: 1 });
      const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
      const rec = { wait: [] as number[], from: [] as number[], step: [] as number[], free: [] as number[], total: [] as number[] };
      let t0 = 0, images = 0;
      const c0 = process.cpuUsage();
      let cStart = c0;
      try {
        const it = loader.epoch(0);
        for (let i = 0; i <= n; i++) {
          const ta = performance.now();
          const next = await it.next();
          if (next.done) break;
          const tb = performance.now();
          if (i === 1) {
            t0 = ta;
            cStart = process.cpuUsage();
          }
          const b = next.value;
          const x = native.fromArray([b.n, 3, b.height, b.width], b.images), y = native.fromArray([b.n, b.height, b.width], b.labels);
          const tc = performance.now();
          trainStep(model, opt, x, y, { precision: 'float32', seed: seed++ });
          const td = performance.now();
          x.dispose();
          y.dispose();
          const te = performance.now();
          if (i >= 1) {
            images += b.n;
            rec.wait.push(tb - ta);
            rec.from.push(tc - tb);
            rec.step.push(td - tc);
            rec.free.push(te - td);
            rec.total.push(te - ta);
          }
        }
        await it.return(undefined);
      } finally {
        await loader.close();
        opt.dispose();
        if (o.s !== undefined) sharp.concurrency(defaultSharp);
      }
      const span = performance.now() - t0;
      const cpu = process.cpuUsage(cStart);
      const imgS = images / (span / 1000);
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      const line =
        `loop ${opts || 'default'} (w${workers} p${prefetch}${o.s !== undefined ? ` s${o.s}` : ''})`.padEnd(22) +
        ` ${imgS.toFixed(4)} img/s; per step median: wait ${f0(median(rec.wait))} fromArray ${f0(median(rec.from))} step ${f0(median(rec.step))} dispose ${f0(median(rec.free))} total ${f0(median(rec.total))} ms; ` +
        `wait share ${((100 * sum(rec.wait)) / span).toFixed(2)}%; steps [${rec.step.map(f0).join(' ')}] waits [${rec.wait.map(f0).join(' ')}]  cpu/step ${f0((cpu.user + cpu.system) / 1000 / images)} ms  load ${os.loadavg()[0]!.toFixed(2)}`;
      console.log(line);
      summary.push(line);
      if (synthTimes.length) {
        const r = `  ratio img/s ÷ (1 / synth median ${f0(median(synthTimes))} ms) = ${(imgS * median(synthTimes) / 1000).toFixed(3)}; loop step median ÷ synth median = ${(median(rec.step) / median(synthTimes)).toFixed(3)}`;
        console.log(r);
        summary.push(r);
      }
    } else if (kind === 'mix') {
      // Rounds of: one step of the loader loop (its wait included), one bare step on the fixed
      // synthetic input, one on a fixed real batch. Per-round ratios cancel the load drift.
      const [xs, ys] = synthetic(size);
      const l0 = new DataLoader({ dataset, pipeline, batchSize: 1, workers: 0, seed: 1 });
      const i0 = l0.epoch(1);
      const rb = (await i0.next()).value!;
      await i0.return(undefined);
      const xr = native.fromArray([1, 3, rb.height, rb.width], rb.images), yr = native.fromArray([1, rb.height, rb.width], rb.labels);
      const o = Object.fromEntries(opts.split('+').filter(Boolean).map((s) => [s[0], Number(s.slice(1))]));
      const loader = new DataLoader({ dataset, pipeline, batchSize: 1, workers: o.w ?? 1, prefetch: o.p ?? 2, seed: 1 });
      const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
      const L: number[] = [], S: number[] = [], R: number[] = [], W: number[] = [];
      try {
        const it = loader.epoch(0);
        for (let i = 0; i <= n; i++) {
          const ta = performance.now();
          const next = await it.next();
          if (next.done) break;
          const tw = performance.now() - ta;
          const b = next.value;
          const x = native.fromArray([b.n, 3, b.height, b.width], b.images), y = native.fromArray([b.n, b.height, b.width], b.labels);
          trainStep(model, opt, x, y, { precision: 'float32', seed: seed++ });
          x.dispose();
          y.dispose();
          const tl = performance.now() - ta;
          const tb = performance.now();
          trainStep(model, opt, xs, ys, { precision: 'float32', seed: seed++ });
          const tsyn = performance.now() - tb;
          const tc = performance.now();
          trainStep(model, opt, xr, yr, { precision: 'float32', seed: seed++ });
          const treal = performance.now() - tc;
          if (i === 0) continue; // warm-up (the optimiser's moments, first decode)
          L.push(tl), S.push(tsyn), R.push(treal), W.push(tw);
          console.log(`  round ${i}: loop ${f0(tl)} (wait ${f0(tw)})  synth ${f0(tsyn)}  real ${f0(treal)}  load ${os.loadavg()[0]!.toFixed(2)}`);
        }
        await it.return(undefined);
      } finally {
        await loader.close();
        opt.dispose();
        for (const t of [xs, ys, xr, yr]) t.dispose();
      }
      const ratio = (a: number[], b: number[]) => median(a.map((v, i) => v / b[i]!)).toFixed(3);
      const line = `mix ${opts || 'default'} ${L.length} rounds: medians loop ${f0(median(L))} (wait ${f0(median(W))}) synth ${f0(median(S))} real ${f0(median(R))} ms; per-round median ratios loop/synth ${ratio(L, S)} loop/real ${ratio(L, R)} real/synth ${ratio(R, S)}`;
      console.log(line);
      summary.push(line);
    } else throw new Error(`unknown phase ${phase}`);
  }
  model.dispose();
  console.log('\n' + summary.join('\n'));
}

main().catch((e) => {
  console.error(`epoch: ${(e as Error).stack}`);
  process.exitCode = 1;
});
