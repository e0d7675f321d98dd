// Prerequisites of tests (shared data, PyTorch, h5py, protoc, Chromium, MPI…). Locally a test
// whose prerequisite is missing skips with the reason; in CI (CI=true) it fails with it, so a
// green CI run means every check ran.
import { test } from 'node:test';

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
