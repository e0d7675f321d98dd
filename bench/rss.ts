// Peak resident memory of one job in a process of its own (run by bench/run.ts):
//
//   node --import tsx bench/rss.ts train|infer [--precision float32|bfloat16] [--size 512] [--steps 3]
//
// train: full-width FCN-8s, Adam with L2, `steps` training steps at size² (batch 1);
// infer: the same network, `steps` forward passes. Prints one JSON line with maxRssMb
// (VmHWM of /proc/self/status) and the engine's pool statistics.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { precision: { type: 'string' }, size: { type: 'string' }, steps: { type: 'string' }, threads: { type: 'string' } } });
const mode = positionals[0];
if (mode !== 'train' && mode !== 'infer') throw new Error('usage: rss.ts train|infer [--precision P] [--size S] [--steps N]');
const cfg = configureEngine({ threads: values.threads ? Number(values.threads) : undefined, precision: (values.precision as Precision | undefined) ?? 'auto' });
const size = Number(values.size ?? 512), steps = Number(values.steps ?? 3);
const model = new FCN({ kind: 'fcn8', width: 1 });
model.initialize(0);
const x = native.fromArray([1, 3, size, size], Float32Array.from({ length: 3 * size * size }, (_, i) => Math.sin(i * 0.37) * 60));
const y = native.fromArray([1, size, size], Uint8Array.from({ length: size * size }, (_, i) => (i % 7 === 0 ? 255 : (i >> 9) % 21)));
const opt = new Adam({ lr: 1e-6, l2: 1e-6 });
for (let i = 0; i < steps; i++) {
  if (mode === 'train') trainStep(model, opt, x, y, { precision: cfg.precision, seed: i });
  else model.predictLogits(x, cfg.precision).dispose();
}
const stats = native.poolStats();
// VmHWM (Linux) is this process's own peak; getrusage's maxRSS can carry the parent's
// high-water mark across fork/exec.
let maxRssMb = process.resourceUsage().maxRSS / 1024;
try {
  const hwm = /^VmHWM:\s*(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (hwm) maxRssMb = Number(hwm[1]) / 1024;
} catch {
  // not Linux
}
console.log(JSON.stringify({ mode, precision: cfg.precision, size, steps, maxRssMb, liveMb: stats.liveBytes / 2 ** 20, pooledMb: stats.pooledBytes / 2 ** 20 }));
