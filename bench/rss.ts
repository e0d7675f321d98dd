// Peak resident memory of one job in a process of its own (run by bench/run.ts):
//
//   node --import tsx bench/rss.ts train|infer [--precision float32|bfloat16] [--size 512] [--steps 3]
//   node --import tsx bench/rss.ts photo [--size 4000x3000] [--style keras|caffe] [--precision P]
//   node --import tsx bench/rss.ts eval --data VOC_ROOT [--weights FILE] [--limit N] [--precision P]
//
// train: full-width FCN-8s, Adam with L2, `steps` training steps at size² (batch 1);
// infer: the same network, `steps` forward passes;
// photo: the same network (seeded, not trained) segments a JPEG of that size made from the
// shared sample photo, through segment() as fcn predict does (decode, pixel limit, tiles);
// eval: `fcn eval` on the split's val images with the given weights (saved from the seeded
// network if the file is missing), as the command runs it.
// Prints one JSON line with maxRssMb (VmHWM of /proc/self/status), the time and the engine's
// pool statistics.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './args.js';
import sharp from 'sharp';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine, trainingPrecision } from '../src/engine/config.js';
import { FCN, type FcnStyle } from '../src/models/fcn.js';
import { segment } from '../src/infer/inference.js';
import { saveWeights } from '../src/models/weights.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values, positionals } = benchArgs(import.meta.url, {
  allowPositionals: true,
  options: { precision: { type: 'string' }, size: { type: 'string' }, steps: { type: 'string' }, threads: { type: 'string' }, style: { type: 'string' }, data: { type: 'string' }, weights: { type: 'string' }, limit: { type: 'string' } },
});
const mode = positionals[0];
if (mode !== 'train' && mode !== 'infer' && mode !== 'photo' && mode !== 'eval') throw new Error('usage: rss.ts train|infer|photo|eval [--precision P] [--size S] [--steps N] [--data VOC_ROOT]');
const cfg = configureEngine({ threads: values.threads ? Number(values.threads) : undefined, precision: (values.precision as Precision | undefined) ?? 'auto' });

/** This process's peak resident memory in MB. */
function peakRssMb(): number {
  // VmHWM (Linux) is this process's own peak; getrusage's maxRSS can carry the parent's
  // high-water mark across fork/exec.
  try {
    const hwm = /^VmHWM:\s*(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS / 1024;
}

function report(fields: Record<string, unknown>): void {
  const stats = native.poolStats();
  console.log(JSON.stringify({ mode, precision: cfg.precision, ...fields, maxRssMb: peakRssMb(), liveMb: stats.liveBytes / 2 ** 20, pooledMb: stats.pooledBytes / 2 ** 20 }));
}

if (mode === 'photo') {
  const [w, h] = (values.size ?? '4000x3000').split('x').map(Number) as [number, number];
  const dir = mkdtempSync(path.join(tmpdir(), 'fcn-rss-photo-'));
  try {
    const photo = path.join(dir, `photo-${w}x${h}.jpg`);
    await sharp(path.join(here, '..', '..', 'shared', 'data', 'images', 'rider.jpg')).resize(w, h, { fit: 'fill' }).jpeg({ quality: 90 }).toFile(photo);
    const model = new FCN({ kind: 'fcn8', width: 1, style: (values.style as FcnStyle | undefined) ?? 'keras' });
    model.initialize(0);
    const t0 = performance.now(), cpu0 = process.cpuUsage();
    const result = await segment(model, photo, { precision: cfg.precision });
    const cpu = process.cpuUsage(cpu0);
    report({ size: `${w}x${h}`, style: model.style, ms: Math.round(performance.now() - t0), cpuMs: Math.round((cpu.user + cpu.system) / 1000), plan: result.plan });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

if (mode === 'eval') {
  if (!values.data) throw new Error('rss.ts eval: --data VOC_ROOT is required');
  const weights = values.weights ?? path.join(here, '.work', 'fcn8-w1-seed0.safetensors');
  if (!existsSync(weights)) {
    mkdirSync(path.dirname(weights), { recursive: true });
    const model = new FCN({ kind: 'fcn8', width: 1 });
    model.initialize(0);
    saveWeights(weights, model);
    model.dispose();
  }
  const { evalCommand } = await import('../src/cli/eval.js');
  const t0 = performance.now();
  const code = await evalCommand(['--weights', weights, '--data', values.data, '--split', 'val', '--precision', cfg.precision, '--json', ...(values.limit ? ['--limit', values.limit] : [])].filter((a) => a !== ''));
  if (code !== 0) throw new Error(`rss.ts eval: fcn eval exited with ${code}`);
  report({ data: values.data, ms: Math.round(performance.now() - t0) });
  process.exit(0);
}

const size = Number(values.size ?? 512), steps = Number(values.steps ?? 3);
const model = new FCN({ kind: 'fcn8', width: 1 });
model.initialize(0);
const x = native.fromArray([1, 3, size, size], Float32Array.from({ length: 3 * size * size }, (_, i) => Math.sin(i * 0.37) * 60));
const y = native.fromArray([1, size, size], Uint8Array.from({ length: size * size }, (_, i) => (i % 7 === 0 ? 255 : (i >> 9) % 21)));
const opt = new Adam({ lr: 1e-6, l2: 1e-6 });
for (let i = 0; i < steps; i++) {
  if (mode === 'train') trainStep(model, opt, x, y, { precision: trainingPrecision(cfg.precision), seed: i });
  else model.predictLogits(x, cfg.precision).dispose();
}
report({ size, steps });
