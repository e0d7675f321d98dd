// Checks of the paths given on the command line, made before any model is loaded or any work
// starts, so that a bad path fails at once, in one line that names the path and the real
// reason: a missing input, a file where a folder should be, a folder that cannot be written,
// or a kernel pseudo filesystem. A weights argument may also be a known name (vgg16, fcn8s…)
// standing for a file in the weights cache.
//
// Output folders are created here one level at a time rather than with
// mkdirSync({ recursive: true }): under /proc, mkdir of a missing name fails with ENOENT even
// though its parent exists, and Node's recursive mkdir answers ENOENT by creating the parent
// and retrying — for ever, at 100% CPU. Creating each missing level ourselves turns any such
// failure into an error naming the level, and /proc and /sys are refused before that anyway.
import { accessSync, constants, lstatSync, mkdirSync, realpathSync, statSync, statfsSync, type Stats } from 'node:fs';
import path from 'node:path';
import { FcnError } from '../errors.js';
import { isKnownWeights, resolveWeights } from '../io/weights-cache.js';
import { UsageError } from './args.js';

/**
 * Kernel pseudo filesystems by their statfs magic number (linux/magic.h): they expose kernel
 * state, hold no user files, and some make recursive mkdir spin (see above).
 */
const PSEUDO_FILESYSTEMS = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x6165676c, 'pstore'],
  [0x62656570, 'configfs'],
  [0xde5e81e4, 'efivarfs'],
  [0x42494e4d, 'binfmt_misc'],
  [0x65735543, 'fusectl'],
]);

/**
 * /proc and /sys by path as well as by filesystem type: a sandbox may mount something else
 * under them (here /sys/fs/cgroup can be a tmpfs), and nothing of ours belongs there.
 */
const PSEUDO_ROOTS = ['/proc', '/sys'];

const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only filesystem',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  ENAMETOOLONG: 'name too long',
  ELOOP: 'too many levels of symbolic links',
  EIO: 'input/output error',
};

const reasonOf = (e: unknown): string => {
  const code = (e as NodeJS.ErrnoException).code;
  return code ? (REASONS[code] ? `${REASONS[code]}, ${code}` : code) : (e as Error).message;
};

/** "fcn <cmd>: --flag 'path': reason", or "fcn <cmd>: path: reason" for a positional argument (flag ''). */
function fail(cmd: string, flag: string, given: string, reason: string): never {
  throw new UsageError(reason, { op: `fcn ${cmd}`, subject: flag ? `--${flag} '${given}'` : given });
}

/** The pseudo filesystem `existing` (an existing path) lies on, if any. */
function pseudoFilesystem(existing: string): string | undefined {
  let real = existing;
  try {
    real = realpathSync(existing);
  } catch { /* judged by the path as given */ }
  for (const root of PSEUDO_ROOTS) {
    if (real === root || real.startsWith(`${root}/`)) return `${root}, a kernel pseudo filesystem`;
  }
  try {
    const type = PSEUDO_FILESYSTEMS.get(Number(statfsSync(existing).type));
    if (type) return `a kernel pseudo filesystem (${type})`;
  } catch { /* statfs unavailable: the path check above stands */ }
  return undefined;
}

/**
 * Walks up from `given` (absolute: `abs`) to the first path that exists: `existing`, the
 * deepest of `abs` and its ancestors that exists, its stats, and the names below it that do
 * not exist yet (`missing`, outermost first).
 */
function locate(cmd: string, flag: string, given: string): { abs: string; existing: string; stats: Stats; missing: string[] } {
  const abs = path.resolve(given);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return { abs, existing: cur, stats: statSync(cur), missing };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') fail(cmd, flag, given, `cannot look up '${cur}' (${reasonOf(e)})`);
      // A link to nothing exists for lstat only; creating through it would fail obscurely.
      let dangling = false;
      try {
        dangling = lstatSync(cur).isSymbolicLink();
      } catch { /* really missing */ }
      if (dangling) fail(cmd, flag, given, `'${cur}' is a symbolic link to a path that does not exist`);
      const parent = path.dirname(cur);
      if (parent === cur) fail(cmd, flag, given, 'no part of this path exists');
      missing.unshift(path.basename(cur));
      cur = parent;
    }
  }
}

function checkWritableDir(cmd: string, flag: string, given: string, dir: string): void {
  const pseudo = pseudoFilesystem(dir);
  if (pseudo) fail(cmd, flag, given, `'${dir}' lies on ${pseudo} that holds no files`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    fail(cmd, flag, given, `cannot write in '${dir}' (${reasonOf(e)})`);
  }
}

/** Creates the missing folders `names` below `from`, one level at a time. */
function createFolders(cmd: string, flag: string, given: string, from: string, names: readonly string[]): void {
  let cur = from;
  for (const name of names) {
    cur = path.join(cur, name);
    try {
      mkdirSync(cur);
    } catch (e) {
      // Made meanwhile by someone else: fine if it is a folder.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && statSync(cur, { throwIfNoEntry: false })?.isDirectory()) continue;
      fail(cmd, flag, given, `cannot create the folder '${cur}' (${reasonOf(e)})`);
    }
  }
}

/** An input file (weights, an image, a list): it must exist, be a regular file, and be readable. */
export function checkInputFile(cmd: string, flag: string, file: string): void {
  checkInput(cmd, flag, file, false);
}

/** An input folder (a dataset root, a folder of predictions): it must exist and be readable. */
export function checkInputDir(cmd: string, flag: string, dir: string): void {
  checkInput(cmd, flag, dir, true);
}

function checkInput(cmd: string, flag: string, given: string, folder: boolean): void {
  let stats: Stats;
  try {
    stats = statSync(given);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(cmd, flag, given, code === 'ENOENT' || code === 'ENOTDIR' ? `no such ${folder ? 'folder' : 'file'}` : `cannot read it (${reasonOf(e)})`);
  }
  if (folder && !stats.isDirectory()) fail(cmd, flag, given, 'is a file, not a folder');
  if (!folder && stats.isDirectory()) fail(cmd, flag, given, 'is a folder, not a file');
  if (!folder && !stats.isFile()) fail(cmd, flag, given, 'is not a regular file');
  try {
    accessSync(given, folder ? constants.R_OK | constants.X_OK : constants.R_OK);
  } catch (e) {
    fail(cmd, flag, given, `cannot read it (${reasonOf(e)})`);
  }
}

/**
 * An output file: creates its folder if needed and checks that the file can be written there
 * (not a folder, not under a file, not on a pseudo filesystem, the folder writable).
 */
export function prepareOutputFile(cmd: string, flag: string, file: string): void {
  const located = locate(cmd, flag, file);
  if (located.missing.length === 0) {
    // The file exists: it is overwritten, by a rename into its folder (see io/atomic.ts).
    if (located.stats.isDirectory()) fail(cmd, flag, file, 'is a folder, not a file');
    const dir = path.dirname(located.abs);
    checkWritableDir(cmd, flag, file, dir);
    try {
      accessSync(located.abs, constants.W_OK);
    } catch (e) {
      fail(cmd, flag, file, `cannot overwrite it (${reasonOf(e)})`);
    }
    return;
  }
  // The deepest path that exists on the way must be a folder.
  if (!located.stats.isDirectory()) fail(cmd, flag, file, `'${located.existing}' is a file, not a folder`);
  checkWritableDir(cmd, flag, file, located.existing);
  createFolders(cmd, flag, file, located.existing, located.missing.slice(0, -1));
}

/**
 * An output folder: creates it (and its parents) if needed and checks that files can be
 * written in it.
 */
export function prepareOutputDir(cmd: string, flag: string, dir: string): void {
  const located = locate(cmd, flag, dir);
  if (located.missing.length === 0 && !located.stats.isDirectory()) fail(cmd, flag, dir, 'is a file, not a folder');
  if (!located.stats.isDirectory()) fail(cmd, flag, dir, `'${located.existing}' is a file, not a folder`);
  checkWritableDir(cmd, flag, dir, located.existing);
  createFolders(cmd, flag, dir, located.existing, located.missing);
}

/**
 * A weights file from a `--weights`-like argument (a path or a known name), as resolveWeights
 * finds it, with the command that downloads known weights not fetched yet.
 */
export function resolveWeightsArgument(value: string): string {
  try {
    return resolveWeights(value);
  } catch (e) {
    if (!(e instanceof FcnError) || e.code !== 'WEIGHTS_NOT_DOWNLOADED') throw e;
    // After the first line: the lines below it say how to fetch the file by hand.
    const problem = e.problem.replace(/\n|$/, `; run: fcn weights fetch ${value}$&`);
    throw new FcnError(e.code, problem, { op: e.op, subject: e.subject }, { cause: e });
  }
}

/**
 * Checks a `--weights`/`--init` argument before any work starts: a known name must be in the
 * cache (the error says how to fetch it), anything else must be a readable file. Returns the
 * file to load.
 */
export function checkWeightsArgument(cmd: string, flag: string, value: string): string {
  if (!isKnownWeights(value)) {
    checkInputFile(cmd, flag, value);
    return value;
  }
  try {
    return resolveWeightsArgument(value);
  } catch (e) {
    throw new UsageError((e as Error).message, { op: `fcn ${cmd}`, subject: `--${flag} '${value}'` }, { cause: e });
  }
}
