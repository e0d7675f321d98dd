// The fastest kernel per layer and pass, chosen by measuring (as cuDNN's benchmark mode):
// each candidate runs once per shape, precision and thread count on this CPU, and the winner
// is kept in memory and on disk, so the next process starts with it. Candidates compute the
// same thing within float32 rounding (direct convolution, Winograd's algorithm, im2col and a
// matrix product); the off switch (FCN_KERNEL_CHOICE=off, or setKernelChoice('off')) keeps the
// fixed defaults for runs that must repeat bit for bit.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { native } from './binding.js';
import { cpuFeatures } from './config.js';

/**
 * 'measure': time the candidates once and keep the fastest (the default); 'off': the fixed
 * defaults; 'winograd' / 'winograd-gemm': oneDNN's or the addon's own Winograd algorithm wherever
 * a layer allows it; 'matmul': the gradients' matrix products wherever allowed (for comparisons).
 */
export type KernelChoiceMode = 'measure' | 'off' | 'winograd' | 'winograd-gemm' | 'matmul';

export interface KernelChoice {
  /** Pass, precision, shapes and threads: `fwd f32 x1x64x128x128 w64x64x3x3 p1 t2`. */
  key: string;
  choice: string;
  /** Milliseconds per candidate (Infinity: refused on this CPU). */
  times: Record<string, number>;
}

let mode: KernelChoiceMode | null = null;
let loaded: Map<string, KernelChoice> | null = null;

function modeFromEnv(): KernelChoiceMode {
  const raw = process.env.FCN_KERNEL_CHOICE;
  if (raw === undefined || raw === '' || raw === 'measure' || raw === 'on') return 'measure';
  if (raw === 'off' || raw === '0') return 'off';
  if (raw === 'winograd' || raw === 'winograd-gemm' || raw === 'matmul') return raw;
  throw new Error(`FCN_KERNEL_CHOICE must be measure, off, winograd, winograd-gemm or matmul, got '${raw}'`);
}

export function kernelChoiceMode(): KernelChoiceMode {
  return (mode ??= modeFromEnv());
}

export function setKernelChoice(m: KernelChoiceMode): void {
  mode = m;
}

// The revision of the engine's own candidates (winograd-gemm, subpixel, the matmul routes):
// raised when one of them changes speed, so that timings measured with the old code are
// measured again rather than trusted. 2: conv6's 7×7 as F(4×4, 7×7), 1.6× faster than F(2×2, 7×7).
// 3: weight gradients timed without a reorder to plain where the optimiser keeps the master in
// their layout.
const ENGINE_KERNELS = 3;

/** What identifies this CPU's timings: model, oneDNN version, effective ISA and the engine's own kernels. */
export function cpuDescription(): string {
  const n = native.info();
  return `${cpuFeatures().model} | oneDNN ${n.onednnVersion} | ${n.isa} | engine kernels ${ENGINE_KERNELS}`;
}

/** `$FCN_HOME/kernels/<cpu>.json`, else under `$XDG_CACHE_HOME/fcn`, else `~/.cache/fcn`. */
export function kernelChoiceFile(env: NodeJS.ProcessEnv = process.env): string {
  const home = env['FCN_HOME'] || path.join(env['XDG_CACHE_HOME'] || path.join(homedir(), '.cache'), 'fcn');
  const id = createHash('sha256').update(cpuDescription()).digest('hex').slice(0, 16);
  return path.join(home, 'kernels', `${id}.json`);
}

function choices(): Map<string, KernelChoice> {
  if (loaded) return loaded;
  loaded = new Map();
  const file = kernelChoiceFile();
  try {
    if (existsSync(file)) {
      const data = JSON.parse(readFileSync(file, 'utf8')) as { cpu?: string; choices?: KernelChoice[] };
      // A file of another CPU description (a hash collision, or edited) is ignored.
      if (data.cpu === cpuDescription()) for (const c of data.choices ?? []) if (c && typeof c.key === 'string' && typeof c.choice === 'string') loaded.set(c.key, c);
    }
  } catch {
    // An unreadable or corrupt cache is measured again and rewritten.
  }
  return loaded;
}

function save(): void {
  const file = kernelChoiceFile();
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    const times = (c: KernelChoice) => Object.fromEntries(Object.entries(c.times).map(([k, v]) => [k, Number.isFinite(v) ? Math.round(v * 100) / 100 : null]));
    const list = [...choices().values()].map((c) => ({ ...c, times: times(c) }));
    writeFileSync(tmp, JSON.stringify({ cpu: cpuDescription(), choices: list }, null, 1));
    renameSync(tmp, file);
  } catch {
    // A read-only home only costs measuring again in the next process.
  }
}

/** Every choice known to this process (loaded from disk or measured), for `fcn info`. */
export function kernelChoices(): KernelChoice[] {
  return [...choices().values()].sort((a, b) => a.key.localeCompare(b.key));
}

/**
 * The kernel for `key` among `candidates` (the first is the default, used when measuring is
 * off). `run(name)` computes the pass once with that kernel, disposing what it made; a
 * candidate that throws (a kernel this CPU lacks) is never chosen (its time: Infinity).
 * `release(name)`, when given, frees what `run` kept for that candidate between its runs (its
 * packed weights): the candidates are then timed one after another, each released before the
 * next starts, so that no two candidates' copies are held at once (conv6's are 400–540 MB).
 */
export function chooseKernel(key: string, candidates: string[], run: (name: string) => void, release?: (name: string) => void): string {
  const m = kernelChoiceMode();
  if (m === 'off' || candidates.length < 2) return candidates[0]!;
  if (m !== 'measure') return candidates.includes(m) ? m : candidates[0]!;
  // A choice measured before a candidate existed is measured again, with it.
  const known = choices().get(key);
  if (known && candidates.every((c) => c in known.times)) return known.choice;
  const times = release ? timeOneAfterAnother(candidates, run, release) : timeTakingTurns(candidates, run);
  for (const name of candidates) if (Number.isNaN(times[name])) times[name] = Infinity;
  const choice = candidates.reduce((best, c) => (times[c]! < times[best]! ? c : best), candidates[0]!);
  choices().set(key, { key, choice, times });
  save();
  return choice;
}

// Each candidate once to create its primitive and pack its weights (not what is compared; NaN
// when it throws), then three rounds taking turns, each candidate's best kept: the minimum
// shrugs off the pauses another process on the machine causes.
function timeTakingTurns(candidates: string[], run: (name: string) => void): Record<string, number> {
  const times: Record<string, number> = {};
  for (const name of candidates) times[name] = warmUp(name, run);
  for (let round = 0; round < 3; round++) for (const name of candidates) timeOnce(name, run, times);
  return times;
}

// As timeTakingTurns, a candidate at a time: its first run, its best of three, its release.
// Released memory goes back to the system, not idle into the pool: conv6's weights are 400–540 MB
// a candidate, and the next candidate's would pile on top of them.
function timeOneAfterAnother(candidates: string[], run: (name: string) => void, release: (name: string) => void): Record<string, number> {
  const times: Record<string, number> = {};
  for (const name of candidates) {
    try {
      times[name] = warmUp(name, run);
      for (let round = 0; round < 3; round++) timeOnce(name, run, times);
    } finally {
      release(name);
      native.poolTrim();
    }
  }
  return times;
}

function warmUp(name: string, run: (name: string) => void): number {
  try {
    run(name);
    return Infinity;
  } catch {
    return NaN;
  }
}

function timeOnce(name: string, run: (name: string) => void, times: Record<string, number>): void {
  if (Number.isNaN(times[name])) return;
  const t0 = performance.now();
  run(name);
  times[name] = Math.min(times[name]!, performance.now() - t0);
}
