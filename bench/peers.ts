// Timings of other engines on the same network, for the speed benchmark: onnxruntime-node on an
// ONNX export of the PyTorch reference, and PyTorch itself (scripts/torch_bench.py) in a
// subprocess. Both return numbers and print nothing; failures throw with the peer's stderr.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const SCRIPTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts');

export interface PeerTiming {
  /** Median milliseconds per iteration. */
  ms: number;
  /** Every timed iteration, in order. */
  allMs: number[];
  /** PyTorch int8 only: the quantized engine it ran (fbgemm, onednn). */
  quantizedEngine?: string;
  /** PyTorch int8 only: ‖int8 logits − float logits‖ / ‖float logits‖ on the timed input. */
  int8RelErr?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface OrtForwardOptions {
  onnxPath: string;
  height: number;
  width: number;
  batch?: number;
  threads: number;
  warmup?: number;
  reps?: number;
}

/**
 * Forward timing of an ONNX model with onnxruntime-node, in a process of its own (as PyTorch
 * runs): neither engine's threads spin or hold memory while the other is timed.
 */
export async function ortForward(opts: OrtForwardOptions): Promise<PeerTiming> {
  const child = join(dirname(fileURLToPath(import.meta.url)), 'ort-forward.ts');
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, JSON.stringify(opts)], { encoding: 'utf8', timeout: 1_800_000, maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`onnxruntime-node on ${opts.onnxPath} failed (${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as PeerTiming;
}

/** Forward timing of an ONNX model with onnxruntime-node here (its first input, (N, 3, H, W) float32). */
export async function ortForwardInProcess(opts: OrtForwardOptions): Promise<PeerTiming> {
  const { onnxPath, height, width, batch = 1, threads, warmup = 1, reps = 5 } = opts;
  // Imported lazily: onnxruntime-node is a dev dependency and only the benchmark needs it.
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(onnxPath, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  try {
    const n = batch * 3 * height * width;
    const data = new Float32Array(n);
    // Values of preprocessed-image magnitude, so no path is special-cased on zeros.
    let s = 12345;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      data[i] = (s / 2 ** 32 - 0.5) * 200;
    }
    const feeds = { [session.inputNames[0] ?? 'input']: new ort.Tensor('float32', data, [batch, 3, height, width]) };
    for (let i = 0; i < warmup; i++) await session.run(feeds);
    const allMs: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await session.run(feeds);
      allMs.push(performance.now() - t0);
    }
    return { ms: median(allMs), allMs };
  } finally {
    await session.release();
  }
}

let pythonCache: string | null | undefined;

/** A Python 3 with torch: FCN_PYTHON, else the first of python3, /usr/bin/python3 that imports it. */
export function torchPython(): string | null {
  if (pythonCache !== undefined) return pythonCache;
  pythonCache = null;
  for (const c of [process.env.FCN_PYTHON, 'python3', '/usr/bin/python3']) {
    if (c && spawnSync(c, ['-c', 'import torch, numpy'], { stdio: 'ignore', timeout: 60_000 }).status === 0) {
      pythonCache = c;
      break;
    }
  }
  return pythonCache;
}

export interface TorchBenchOptions {
  mode: 'forward' | 'train';
  /** int8: PyTorch's static quantization (scripts/torch_int8.py), a forward of fcn8 only. */
  precision: 'fp32' | 'bf16' | 'int8';
  channelsLast?: boolean;
  model: 'fcn32' | 'fcn16' | 'fcn8';
  /** Channel width multiplier (1 = VGG16). */
  width: number;
  /** Input height and width in pixels. */
  size: number;
  batch?: number;
  threads: number;
  warmup?: number;
  reps?: number;
}

/** Runs scripts/torch_bench.py in a subprocess (torch.set_num_threads(threads), OMP_NUM_THREADS too). */
export function torchBench(opts: TorchBenchOptions): Promise<PeerTiming> {
  const py = torchPython();
  if (!py) return Promise.reject(new Error('torchBench: no python3 with torch found (apt-get install python3-torch, or set FCN_PYTHON)'));
  const args = [
    join(SCRIPTS, 'torch_bench.py'),
    '--mode', opts.mode,
    '--precision', opts.precision,
    '--model', opts.model,
    '--width', String(opts.width),
    '--size', String(opts.size),
    '--batch', String(opts.batch ?? 1),
    '--threads', String(opts.threads),
    '--warmup', String(opts.warmup ?? 1),
    '--reps', String(opts.reps ?? 3),
  ];
  if (opts.channelsLast) args.push('--channels-last');
  const env = { ...process.env, OMP_NUM_THREADS: String(opts.threads), MKL_NUM_THREADS: String(opts.threads) };
  return new Promise((resolve, reject) => {
    const child = spawn(py, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`torch_bench.py exited with ${code}: ${err.trim().split('\n').slice(-5).join('\n')}`));
        return;
      }
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(line) as { ms: number; all_ms: number[]; quantized_engine?: string | null; int8_rel_err?: number | null };
        const int8 = r.quantized_engine ? { quantizedEngine: r.quantized_engine, int8RelErr: r.int8_rel_err ?? NaN } : {};
        resolve({ ms: r.ms, allMs: r.all_ms, ...int8 });
      } catch {
        reject(new Error(`torch_bench.py printed no result: ${out.slice(-500)}`));
      }
    });
  });
}

/** Exports the reference network to ONNX with scripts/torch_fcn.py (random weights unless given). */
export function exportOnnx(opts: { model: 'fcn32' | 'fcn16' | 'fcn8'; width: number; height: number; widthPx: number; out: string; weights?: string; seed?: number }): void {
  const py = torchPython();
  if (!py) throw new Error('exportOnnx: no python3 with torch found (apt-get install python3-torch, or set FCN_PYTHON)');
  const args = [join(SCRIPTS, 'torch_fcn.py'), 'export-onnx', '--model', opts.model, '--width', String(opts.width), '--height', String(opts.height), '--width-px', String(opts.widthPx), '--out', opts.out];
  if (opts.weights) args.push('--weights', opts.weights);
  else args.push('--seed', String(opts.seed ?? 0));
  const r = spawnSync(py, args, { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`torch_fcn.py export-onnx failed: ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
}
