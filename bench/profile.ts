// Where the time goes: full-width FCN-8s at 512² (batch 1), forward and training step in
// fp32 and bf16 (and the int8 forward of the model quantized on this input), timed end to end; with ONEDNN_VERBOSE=1 set, the oneDNN primitive log of the
// last repetition can be summarised with bench/verbose_summary.ts. fwd_* times predictLogits
// alone; fwd_*_io times what bench/run.ts's forward rows time (and the peers do): the input
// copied in from a JS array, the forward, the logits copied out to one.
//
//   node --import tsx bench/profile.ts [--size 512] [--reps 3] [--threads 2] [--only fwd_fp32,train_bf16,fwd_int8,fwd_int8_io] [--calls]
//
// --calls: the wall time and minor page faults of the last repetition per native function
// (oneDNN's primitives and our own passes alike: the update, the loss, ReLU and pooling
// backward; the logits' toArray too), and what is left, the time in JavaScript between the calls.
import { benchArgs } from './args.js';
import { native, type Precision } from '../src/engine/binding.js';
import { configureEngine, type InferencePrecision } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { calibrate, quantizeModel } from '../src/quant/quantize.js';
import { Adam } from '../src/train/optim.js';
import { trainStep } from '../src/train/step.js';

const { values } = benchArgs(import.meta.url, { options: { size: { type: 'string' }, reps: { type: 'string' }, threads: { type: 'string' }, only: { type: 'string' }, calls: { type: 'boolean' }, width: { type: 'string' }, batch: { type: 'string' } } });
const size = Number(values.size ?? 512), reps = Number(values.reps ?? 3), threads = Number(values.threads ?? 2);
const width = Number(values.width ?? 1), batch = Number(values.batch ?? 1);
const only = values.only ? new Set(values.only.split(',')) : null;
configureEngine({ threads });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const model = new FCN({ kind: 'fcn8', width });
model.initialize(0);
const opt = new Adam({ lr: 1e-6, l2: 1e-6 });
const input = Float32Array.from({ length: batch * 3 * size * size }, (_, i) => Math.sin(i * 0.37) * 60);
const labels = Uint8Array.from({ length: batch * size * size }, (_, i) => (i % 7 === 0 ? 255 : (i >> 9) % 21));
const x = native.fromArray([batch, 3, size, size], input);
const y = native.fromArray([batch, size, size], labels);

// Every native function wrapped to add its wall time and minor page faults (fresh pages the
// kernel hands in: what allocating outside the pool costs) under its name while `calls` is set.
type CallStats = { ms: number; n: number; faults: number };
let calls: Map<string, CallStats> | null = null;
const faults = () => process.resourceUsage().minorPageFault;
function timed(name: string, f: (...a: unknown[]) => unknown): (this: unknown, ...args: unknown[]) => unknown {
  return function (this: unknown, ...args: unknown[]) {
    if (!calls) return f.apply(this, args);
    const t0 = performance.now(), f0 = faults();
    try {
      return f.apply(this, args);
    } finally {
      const e = calls.get(name) ?? { ms: 0, n: 0, faults: 0 };
      e.ms += performance.now() - t0;
      e.faults += faults() - f0;
      e.n++;
      calls.set(name, e);
    }
  };
}
if (values.calls) {
  const table = native as unknown as Record<string, unknown>;
  for (const [name, f] of Object.entries(table)) if (typeof f === 'function' && name !== 'Tensor') table[name] = timed(name, f as (...a: unknown[]) => unknown);
}

function printCalls(name: string, total: number, allFaults: number, table: Map<string, CallStats>): void {
  let inside = 0;
  for (const e of table.values()) inside += e.ms;
  console.log(`${name}: ${total.toFixed(0)} ms, ${allFaults} page faults; ${inside.toFixed(0)} ms in native calls, ${(total - inside).toFixed(0)} ms in JavaScript between them`);
  for (const [k, e] of [...table].sort((a, b) => b[1].ms - a[1].ms)) console.log(`  ${e.ms.toFixed(1).padStart(8)} ms ×${String(e.n).padEnd(4)} ${String(e.faults).padStart(7)} faults  ${k}`);
}

function time(name: string, f: () => void): void {
  if (only && !only.has(name)) return;
  console.error(`--- ${name} warm-up`);
  f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const last = i === reps - 1;
    if (last) console.error(`--- ${name} last`);
    if (last && values.calls) calls = new Map();
    const t0 = performance.now(), f0 = faults();
    f();
    ts.push(performance.now() - t0);
    if (last && calls) {
      printCalls(name, ts[ts.length - 1]!, faults() - f0, calls);
      calls = null;
    }
  }
  console.log(`${name.padEnd(12)} median ${median(ts).toFixed(0)} ms  (${ts.map((t) => t.toFixed(0)).join(', ')})`);
}

/** The forward as the bench's rows time it: JS array in, JS array out. */
function forwardWithCopies(p: InferencePrecision): void {
  const xi = native.fromArray([batch, 3, size, size], input);
  const logits = model.predictLogits(xi, p);
  timed('toArray', () => logits.toArray())();
  xi.dispose();
  logits.dispose();
}

for (const p of ['float32', 'bfloat16'] as Precision[]) {
  const tag = p === 'float32' ? 'fp32' : 'bf16';
  time(`fwd_${tag}`, () => model.predictLogits(x, p).dispose());
  time(`fwd_${tag}_io`, () => forwardWithCopies(p));
  time(`train_${tag}`, () => void trainStep(model, opt, x, y, { precision: p }));
}
if (!only || only.has('fwd_int8') || only.has('fwd_int8_io')) {
  quantizeModel(model, calibrate(model, [x]));
  time('fwd_int8', () => model.predictLogits(x, 'int8').dispose());
  time('fwd_int8_io', () => forwardWithCopies('int8'));
}
console.log(JSON.stringify(native.poolStats()));
x.dispose();
y.dispose();
opt.dispose();
model.dispose();
