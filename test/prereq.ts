// Prerequisites of tests (shared data, PyTorch, h5py, protoc, Chromium, MPI…). Locally a test
// whose prerequisite is missing skips with the reason; in CI (CI=true) it fails with it, so a
// green CI run means every check ran.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16Available } from '../src/engine/config.js';

/**
 * The `skip` option for node:test: false when `ok`; otherwise the reason (locally), or — in
 * CI — false, after registering a failing test that names the reason.
 */
export function requires(ok: boolean, reason: string): string | false {
  if (ok) return false;
  if (process.env.CI === 'true') {
    test(`prerequisite: ${reason}`, () => {
      throw new Error(`missing prerequisite in CI: ${reason}`);
    });
    // The dependent tests still skip (they cannot run), but the run fails.
  }
  return reason;
}

/**
 * Whether this CPU runs bfloat16 (oneDNN's bf16 primitives need AVX-512). Where it does not, a
 * bf16 test checks the refusal instead of skipping: every bf16 path must then fail at once
 * with the one clear message, never a bare oneDNN status.
 */
export const bf16Runs = (): boolean => bf16Available();

/** Asserts that `run` is refused as a CPU without bf16 refuses it. */
export function assertBf16Refused(run: () => unknown): void {
  assert.throws(run, /bfloat16 needs a CPU with AVX-512/);
}
