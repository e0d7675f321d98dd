// The optimiser update on its own: full-width FCN-8s after one 256² training step (the packed
// copies the step made are those a 512² step keeps), then Adam timed over every parameter at
// once and per parameter, with the bytes each moves and the rate that makes, beside a
// measured copy rate of this machine (a large typed-array copy, read + write). Beside each wall
// time, the process's CPU time (user + system): on a shared, loaded machine the wall time
// counts other processes' turns; run with OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive for the
// work alone.
//
//   node --import tsx bench/update-profile.ts [--precision bfloat16|float32] [--reps N] [--size 256|512]
//
// The step's size decides some kernels (and so the gradients' layouts): 512 is the bench's.
import { benchArgs } from './args.js';
import { native } from '../src/engine/binding.js';
import { FCN } from '../src/models/fcn.js';
import { Adam } from '../src/train/optim.js';
import { computeGradients } from '../src/train/step.js';

const { values } = benchArgs(import.meta.url, { options: { precision: { type: 'string' }, reps: { type: 'string' }, size: { type: 'string' } } });
const precision = (values.precision ?? 'bfloat16') as 'bfloat16' | 'float32';
const reps = Number(values.reps ?? 5);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

function copyGbps(): number {
  const n = 1 << 27; // 512 MB of float32 each side
  const a = new Float32Array(n).fill(1), b = new Float32Array(n);
  const t: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    b.set(a);
    t.push(performance.now() - t0);
  }
  return (2 * 4 * n) / median(t) / 1e6;
}

const size = Number(values.size ?? 256);
const model = new FCN({ kind: 'fcn8', width: 1 });
const x = native.fromArray([1, 3, size, size], Float32Array.from({ length: 3 * size * size }, (_, i) => Math.sin(i)));
const y = native.fromArray([1, size, size], Uint8Array.from({ length: size * size }, (_, i) => i % 21));
const opt = new Adam({ lr: 1e-7, l2: 1e-6 });
computeGradients(model, x, y, { precision, seed: 0 });
const params = model.params().filter((p) => p.trainable && p.grad);
opt.step(params);
const all: number[] = [], allCpu: number[] = [];
for (let r = 0; r < reps; r++) {
  const t0 = performance.now(), c0 = cpuMs();
  opt.step(params);
  all.push(performance.now() - t0);
  allCpu.push(cpuMs() - c0);
}
let bytes = 0;
const rows: string[] = [];
for (const p of params) {
  const n = p.dims.reduce((a, b) => a * b, 1);
  const packs = p.packedCopies();
  // master, m, v read and written; the gradient read; each copy written
  const b = n * (4 * 7 + packs.reduce((s, c) => s + (c.tensor.dtype === 'bfloat16' ? 2 : 4), 0));
  bytes += b;
  if (n < 1e6) continue;
  const t: number[] = [], c: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now(), c0 = cpuMs();
    opt.step([p]);
    t.push(performance.now() - t0);
    c.push(cpuMs() - c0);
  }
  const ms = median(t);
  rows.push(`${p.name.padEnd(24)} ${String(n).padStart(10)} ${ms.toFixed(1).padStart(8)} ms ${(b / ms / 1e6).toFixed(1).padStart(6)} GB/s cpu ${median(c).toFixed(1).padStart(8)} ms  grad ${p.grad!.layout}; copies ${packs.map((c) => `${c.tensor.dtype} ${c.tensor.layout}${c.flipped ? ' flipped' : ''}`).join(', ')}`);
}
const ms = median(all);
console.log(`precision ${precision}; all ${params.length} parameters: ${ms.toFixed(1)} ms (cpu ${median(allCpu).toFixed(1)} ms) for ${(bytes / 1e9).toFixed(2)} GB = ${(bytes / ms / 1e6).toFixed(1)} GB/s`);
console.log(rows.join('\n'));
console.log(`typed-array copy: ${copyGbps().toFixed(1)} GB/s (read + write)`);
