// The one place that chooses threads (and, with the speed work, precision and layouts).
import os from 'node:os';
import { native, type Precision } from './binding.js';

export interface EngineConfig {
  threads: number;
  precision: Precision;
}

let current: EngineConfig | null = null;

function threadsFromEnv(): number | undefined {
  const raw = process.env.FCN_THREADS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`FCN_THREADS must be a positive integer, got '${raw}'`);
  return n;
}

/** Sets the engine's thread count (default: FCN_THREADS, else every core) and precision. */
export function configureEngine(options: Partial<EngineConfig> = {}): EngineConfig {
  const threads = options.threads ?? threadsFromEnv() ?? os.availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
  native.setThreads(threads);
  current = { threads, precision: options.precision ?? current?.precision ?? 'float32' };
  return current;
}

/** The configuration in force (configuring with defaults on first use). */
export function engineConfig(): EngineConfig {
  return current ?? configureEngine();
}
