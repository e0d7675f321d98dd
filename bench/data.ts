// Data pipeline throughput: decode + augment images/s on the real VOC sample.
//
//   node --import tsx bench/data.ts [--images N] [--size S] [--step-ms MS] [--json]
//
// Per core: one thread (sharp/libvips limited to one thread) decodes and transforms the
// images one after another, for (a) decode only, (b) Keras-FCN's resize-with-pad to S×S and
// (c) training augmentation (random scale 0.5-2, random S×S crop, flip). Then the loader
// itself with 1 and 2 worker threads (batch 8, prefetch 2). The comparison is with what one
// training step consumes: one image per --step-ms milliseconds (default 356 ms: the fastest
// measured FCN training step at 512², oneDNN bf16 forward + backward at batch 1).
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './args.js';
import sharp from 'sharp';
import { readSample, vocDataset, type Dataset } from '../src/data/datasets.js';
import { DataLoader } from '../src/data/loader.js';
import { mixSeed, Rng } from '../src/data/prng.js';
import { applyPipeline, evalPipeline, trainPipeline, type PipelineSpec } from '../src/data/transforms.js';

export interface DataBenchResult {
  images: number;
  size: number;
  /** Images per second on one core. */
  perCore: { decode: number; resizeWithPad: number; trainAugment: number };
  /** Images per second through the DataLoader with this many worker threads. */
  loader: { workers: number; imagesPerSecond: number }[];
  stepMs: number;
  /** trainAugment per core ÷ images per second one training step consumes. */
  headroom: number;
}

async function perCore(ds: Dataset, pipeline: PipelineSpec | null): Promise<number> {
  const t0 = performance.now();
  let i = 0;
  for (const e of ds.entries) {
    const raw = await readSample(e, ds.classes);
    if (pipeline) applyPipeline(raw, pipeline, new Rng(mixSeed(1, i++)));
  }
  return ds.entries.length / ((performance.now() - t0) / 1000);
}

async function throughLoader(ds: Dataset, pipeline: PipelineSpec, workers: number): Promise<number> {
  const l = new DataLoader({ dataset: ds, pipeline, batchSize: 8, workers, seed: 1, prefetch: 2 });
  try {
    // Warm-up: start the workers (and, from source, compile the worker) before timing.
    const warm = l.epoch(99);
    await warm.next();
    await warm.return(undefined);
    const t0 = performance.now();
    let n = 0;
    for await (const b of l.epoch(0)) n += b.n;
    return n / ((performance.now() - t0) / 1000);
  } finally {
    await l.close();
  }
}

export async function benchData(o: { vocRoot: string; images?: number; size?: number; stepMs?: number }): Promise<DataBenchResult> {
  const size = o.size ?? 512;
  const stepMs = o.stepMs ?? 356;
  const full = await vocDataset(o.vocRoot, { split: 'trainval' });
  const ds: Dataset = { ...full, entries: full.entries.slice(0, o.images ?? 200) };
  const threads = sharp.concurrency();
  sharp.concurrency(1);
  let decode: number, pad: number, train: number;
  try {
    await perCore({ ...ds, entries: ds.entries.slice(0, 10) }, null); // warm-up
    decode = await perCore(ds, null);
    pad = await perCore(ds, evalPipeline({ size }));
    train = await perCore(ds, trainPipeline({ size }));
  } finally {
    sharp.concurrency(threads);
  }
  const loader = [];
  for (const workers of [1, 2]) loader.push({ workers, imagesPerSecond: await throughLoader(ds, trainPipeline({ size }), workers) });
  return {
    images: ds.entries.length, size,
    perCore: { decode, resizeWithPad: pad, trainAugment: train },
    loader, stepMs, headroom: train / (1000 / stepMs),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { values } = benchArgs(import.meta.url, { options: { images: { type: 'string' }, size: { type: 'string' }, 'step-ms': { type: 'string' }, json: { type: 'boolean' }, voc: { type: 'string' } } });
  const repo = resolve(fileURLToPath(import.meta.url), '..', '..');
  const vocRoot = values.voc ?? join(repo, '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
  const r = await benchData({
    vocRoot,
    ...(values.images ? { images: Number(values.images) } : {}),
    ...(values.size ? { size: Number(values.size) } : {}),
    ...(values['step-ms'] ? { stepMs: Number(values['step-ms']) } : {}),
  });
  if (values.json) {
    console.log(JSON.stringify(r, null, 2));
  } else {
    const f = (v: number) => v.toFixed(1).padStart(7);
    console.log(`data pipeline on ${r.images} VOC images (${vocRoot}), output ${r.size}×${r.size}`);
    console.log(`per core (1 thread):  decode ${f(r.perCore.decode)} img/s   + resize-with-pad ${f(r.perCore.resizeWithPad)} img/s   + scale/crop/flip ${f(r.perCore.trainAugment)} img/s`);
    for (const l of r.loader) console.log(`DataLoader, ${l.workers} worker${l.workers > 1 ? 's' : ' '}, batch 8, scale/crop/flip: ${f(l.imagesPerSecond)} img/s`);
    console.log(`a training step at ${r.stepMs} ms/image consumes ${(1000 / r.stepMs).toFixed(2)} img/s: one core of augmentation covers it ${r.headroom.toFixed(1)}×`);
  }
}
