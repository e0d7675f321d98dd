// The speed benchmark: our engine and its peers on the same network and input, in one run.
//
//   npm run bench [-- --only ID[,ID…]] [--reps N] [--threads N]
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
import { native } from '../src/engine/binding.js';
import { configureEngine } from '../src/engine/config.js';
import { FCN } from '../src/models/fcn.js';
import { saveWeights } from '../src/models/weights.js';
import { exportOnnx, ortForward, torchPython } from './peers.js';

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
function oursForward(model: FCN, size: number, batch: number, precision: 'float32' | 'bfloat16', warmup: number, reps: number): number {
  const input = benchInput(batch * 3 * size * size);
  const once = () => {
    const x = native.fromArray([batch, 3, size, size], input);
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
  mkdirSync(work, { recursive: true });
  const rows: Row[] = [];
  const size = 512;

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

  if (want('fwd512_fp32_vs_ort') && onnx) {
    const ours = oursForward(model, size, 1, 'float32', 2, reps);
    const peer = await ortForward({ onnxPath: onnx, height: size, width: size, threads, warmup: 2, reps });
    rows.push({ id: 'fwd512_fp32_vs_ort', ours_ms: ours, peer: `onnxruntime-node ${ortVersion} fp32`, peer_ms: peer.ms, ratio: ours / peer.ms });
  }
  model.dispose();

  const result = { machine: { ...machine(threads), onnxruntime: ortVersion }, rows };
  writeFileSync(path.join(here, 'results.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`\n${'id'.padEnd(26)} ${'ours ms'.padStart(9)} ${'peer ms'.padStart(9)} ${'ratio'.padStart(6)}  peer`);
  for (const r of rows) {
    if (r.value !== undefined) console.log(`${r.id.padEnd(26)} ${String(r.value).padStart(9)}`);
    else console.log(`${r.id.padEnd(26)} ${r.ours_ms!.toFixed(0).padStart(9)} ${r.peer_ms!.toFixed(0).padStart(9)} ${r.ratio!.toFixed(2).padStart(6)}  ${r.peer}`);
  }
  console.log(`\nwrote ${path.join('bench', 'results.json')}`);
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exitCode = 1;
});
