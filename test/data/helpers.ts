// Shared test helpers: where the shared real data lives, and temp folders.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The shared read-only material, next to the repository. */
export const sharedRoot = resolve(repoRoot, '..', 'shared');
export const sharedData = join(sharedRoot, 'data');
export const vocRoot = join(sharedData, 'VOCdevkit', 'VOC2012');
export const sbdRoot = join(sharedData, 'benchmark_RELEASE', 'dataset');

/** A skip reason for node:test when the shared data is absent, else false. */
export function needShared(...paths: string[]): string | false {
  const missing = [sharedData, ...paths].find((p) => !existsSync(p));
  return missing ? `shared data not found at ${missing} (tests using the real VOC/SBD samples are skipped)` : false;
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `fcn-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
