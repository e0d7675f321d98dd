// Shared test helpers: where the shared real data lives, and temp folders.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dataCommand } from '../../src/cli/data.js';
import { requires } from '../prereq.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The shared read-only material, next to the repository. */
export const sharedRoot = resolve(repoRoot, '..', 'shared');
export const sharedData = join(sharedRoot, 'data');
export const vocRoot = join(sharedData, 'VOCdevkit', 'VOC2012');
export const sbdRoot = join(sharedData, 'benchmark_RELEASE', 'dataset');

/**
 * The `skip` option of a test that reads the shared real data: false when every path exists;
 * otherwise the reason, and in CI a failing test (see test/prereq.ts): CI always has the data.
 */
export function needShared(...paths: string[]): string | false {
  const missing = [sharedData, ...paths].find((p) => !existsSync(p));
  return requires(missing === undefined, `shared data not found at ${missing} (tests using the real VOC/SBD samples need it)`);
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `fcn-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Captures what `run` writes to stdout and stderr; the test runner's own binary reports pass through. */
export async function captureOutput(run: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const ow = process.stdout.write.bind(process.stdout), ew = process.stderr.write.bind(process.stderr);
  const capture = (orig: typeof ow, add: (s: string) => void) => ((c: string | Uint8Array, ...rest: never[]) => {
    if (typeof c !== 'string') return orig(c, ...rest);
    add(c);
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture(ow, (s) => { out += s; });
  process.stderr.write = capture(ew, (s) => { err += s; });
  try {
    const code = await run();
    return { code, out, err };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

/** Runs `fcn data ...` in-process, capturing its output. */
export const runData = (...argv: string[]) => captureOutput(() => dataCommand(argv));

