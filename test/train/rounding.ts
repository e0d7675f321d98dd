// Two trainings that differ only in the order of their float32 sums (2 ranks vs 1 process,
// another thread count, a resumed run) end equal within rounding, and rounding differs per CPU
// and kernel family: oneDNN's AVX-512 kernels block the sums otherwise than its AVX2 ones, and
// otherwise at 1 thread than at 2. So an equivalence test measures its floor, the same run on
// another thread count, and allows a stated multiple of it; never bitwise equality.
//
// Measured on a Zen 5 under both kernel families (float32; per tensor, largest |a − b| over
// largest |a|), on the small configurations of test/train:
//  - SGD: floors 3e-7…3e-6. Adam: floors 7e-6…3e-4 (a gradient at the level of rounding noise
//    still gets a full-size step).
//  - 2 ranks vs 1 process, or 2 ranks then 1 process resuming: at most 3.1× the floor measured
//    on 1 vs 2 threads. FLOOR_FACTOR leaves room over that.
//  - A trajectory can branch: where a ReLU or max-pool decision flips, the loss's gradient
//    jumps, so weights 1e-6 apart got gradients 1e-2 apart in one step. With SGD at lr 0.01
//    and momentum 0.9 every run did, and runs ended in clusters 1e-2…0.7 apart; with SGD at
//    3e-3 or 1e-4, or Adam at 1e-3, some thread counts did and others did not. Which run
//    branches is a lottery of the kernels' rounding that no tolerance covers: the tests use
//    settings measured not to branch on either kernel family, and a floor above MAX_FLOOR
//    fails as a branched trajectory instead of loosening the comparison.
import assert from 'node:assert/strict';
import { configureEngine, engineConfig } from '../../src/engine/config.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import type { TrainConfig } from '../../src/train/config.js';
import { train, type TrainOutcome } from '../../src/train/trainer.js';

export type Tensors = Map<string, Float32Array>;

/** Tolerance = FLOOR_FACTOR × the floor. */
export const FLOOR_FACTOR = 10;
/**
 * A floor is never taken below 2^-20 (8 float32 units of roundoff): two runs whose kernels
 * happen to split no sum differently say nothing about a third that does.
 */
export const MIN_FLOOR = 2 ** -20;
/** Above this a floor is no rounding: the trajectory branched (branches seen: 7e-3 and more). */
export const MAX_FLOOR = 2e-3;

/** A checkpoint's tensors: the weights, and with `optimizer` also the optimiser's state. */
export function checkpointTensors(file: string, { optimizer = false } = {}): Tensors {
  const all = [...readSafetensors(file).tensors].filter(([k]) => optimizer || !k.startsWith('optimizer.'));
  return new Map(all.map(([k, t]) => [k, t.data as Float32Array]));
}

/** The largest |a − b| over each tensor's largest |a|, of the worst tensor. */
export function worstDifference(a: Tensors, b: Tensors): { name: string; rel: number } {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let worst = { name: '', rel: 0 };
  for (const [name, x] of a) {
    const y = b.get(name)!;
    let mx = 0, d = 0;
    for (let i = 0; i < x.length; i++) {
      mx = Math.max(mx, Math.abs(x[i]!));
      d = Math.max(d, Math.abs(x[i]! - y[i]!));
    }
    const rel = d / (mx || 1);
    if (rel > worst.rel) worst = { name, rel };
  }
  return worst;
}

/** Trains `config` on `threads` threads, then restores the thread count in force. */
export async function trainOnThreads(config: TrainConfig, dir: string, threads: number): Promise<TrainOutcome> {
  const before = engineConfig().threads;
  configureEngine({ threads });
  try {
    return await train(config, dir, { progress: null });
  } finally {
    configureEngine({ threads: before });
  }
}

export interface Floor {
  /** The measured difference (worst tensor) and what was measured. */
  rel: number;
  name: string;
  what: string;
  /** What a comparison within this floor allows. */
  tolerance: number;
}

/**
 * The rounding floor of a computation: the difference between two runs of it that differ only
 * in summation order (`reference` and `other`, e.g. on 1 and 2 threads). Fails if it is too
 * large to be rounding.
 */
export function roundingFloor(reference: Tensors, other: Tensors, what: string): Floor {
  const { name, rel } = worstDifference(reference, other);
  assert.ok(rel < MAX_FLOOR, `${what}: ${name} differs by ${rel} of its largest value, beyond rounding (${MAX_FLOOR}): the trajectory branched, so this comparison would test nothing`);
  return { name, rel, what, tolerance: FLOOR_FACTOR * Math.max(rel, MIN_FLOOR) };
}

/** Asserts `a` equals `b` within the floor's tolerance; returns a line of the numbers for the test's diagnostics. */
export function assertWithinFloor(a: Tensors, b: Tensors, floor: Floor, what: string): string {
  const w = worstDifference(a, b);
  const e = (x: number) => x.toExponential(2);
  const line = `${what}: ${w.rel === 0 ? 'equal bit for bit' : `${w.name} differs by ${e(w.rel)} of its largest value`}; floor ${e(floor.rel)} (${floor.what}: ${floor.name}), tolerance ${e(floor.tolerance)}`;
  assert.ok(w.rel <= floor.tolerance, `${line}: beyond ${FLOOR_FACTOR}× the floor (at least ${e(MIN_FLOOR)})`);
  return line;
}
