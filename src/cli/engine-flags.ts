// The engine flags every model-running command accepts (--threads, --precision), parsed the
// same way as the other commands do, and checks of paths given on the command line, so that a
// bad argument fails in one line before any model is loaded or image decoded.
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { configureEngine, type PrecisionChoice } from '../engine/config.js';
import { UsageError, parseNumber } from './args.js';

export const engineFlags = { threads: { type: 'string' }, precision: { type: 'string' } } as const;

export function applyEngineFlags(command: string, values: { threads?: string; precision?: string }): void {
  const threads = parseNumber(command, values.threads, 'threads', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const precision = values.precision;
  if (precision !== undefined && precision !== 'float32' && precision !== 'bfloat16' && precision !== 'auto') throw new UsageError(`fcn ${command}: --precision must be float32, bfloat16 or auto, got '${precision}'`);
  configureEngine({ threads, precision: precision as PrecisionChoice | undefined });
}

/** A file that must exist (a weights file, an image). */
export function requireFile(command: string, file: string, what: string): void {
  let ok = false;
  try {
    ok = statSync(file).isFile();
  } catch {
    throw new UsageError(`fcn ${command}: ${what} '${file}' not found`);
  }
  if (!ok) throw new UsageError(`fcn ${command}: ${what} '${file}' is not a file`);
}

/** A folder that must exist (a dataset root, a folder of predictions). */
export function requireDir(command: string, dir: string, what: string): void {
  let ok = false;
  try {
    ok = statSync(dir).isDirectory();
  } catch {
    throw new UsageError(`fcn ${command}: ${what} '${dir}' not found`);
  }
  if (!ok) throw new UsageError(`fcn ${command}: ${what} '${dir}' is not a folder`);
}

/** Creates `dir` if needed and checks that files can be written in it (before the long work starts). */
export function writableDir(command: string, dir: string, flag: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' });
    accessSync(dir, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // mkdir reports a file in the way as EEXIST or ENOTDIR: say so plainly.
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way of this folder' : code ?? (e as Error).message;
    throw new UsageError(`fcn ${command}: --${flag}: cannot write in '${dir}' (${why})`);
  }
}

/** Checks that `file` can be created: its folder is made if needed and must be writable. */
export function writableFile(command: string, file: string, flag: string): void {
  writableDir(command, path.dirname(path.resolve(file)), flag);
  try {
    if (statSync(file).isDirectory()) throw new UsageError(`fcn ${command}: --${flag}: '${file}' is a folder, not a file`);
  } catch (e) {
    if (e instanceof UsageError) throw e;
  }
}
