// Prerequisites of tests (shared data, PyTorch, h5py, protoc, Chromium, MPI…). Locally a test
// whose prerequisite is missing skips with the reason; in CI (CI=true) it fails with it, so a
// green CI run means every check ran.
import { test } from 'node:test';
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
 * The `skip` option of tests that run bfloat16: a CPU without AVX-512 cannot run oneDNN's
 * bf16 primitives. Hardware, not an install, so this skips in CI too, saying why.
 */
export function bf16Skip(): string | false {
  return bf16Available() ? false : 'this CPU has no AVX-512: oneDNN runs no bfloat16 primitive on it (hardware, not a missing install)';
}
