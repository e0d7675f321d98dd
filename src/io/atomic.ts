// Atomic file writes: a reader (or a crash) must never see half a checkpoint. The data goes
// to a temporary file in the destination's directory (same file system, so the rename is
// atomic), is fsynced, and only then renamed over the destination.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** What can be written: a string (UTF-8), one byte array, or a sequence of chunks written in order. */
export type AtomicData = string | Uint8Array | Iterable<Uint8Array>;

// The rename itself lives in the directory entry; fsync the directory so it survives a power cut.
// Some platforms (and some file systems) refuse to fsync a directory: that only weakens durability.
function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* best effort */
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function describe(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err.code ? `${err.code}: ${err.message}` : String(e);
}

/**
 * Writes `data` to `path` atomically (temp file in the same directory, fsync, rename).
 * Synchronous on purpose: callers that `await` it still work, and a forgotten `await`
 * cannot leave a write running behind the caller's back.
 */
export function writeFileAtomic(path: string, data: AtomicData): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o644);
    for (const chunk of chunks) {
      let off = 0;
      // writeSync may write less than asked for large chunks.
      while (off < chunk.byteLength) off += writeSync(fd, chunk, off, chunk.byteLength - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try { closeSync(fd); } catch { /* already failing */ }
    }
    try { unlinkSync(tmp); } catch { /* may not exist */ }
    throw new Error(`${path}: cannot write file (${describe(e)})`);
  }
  fsyncDirSync(dirname(path));
}
