// Reading whole input files with the one error message every reader gives when a file cannot
// be read: `<path>: cannot read <what> (<errno code>)`.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';

/** A typed array's constructor over a buffer. */
export type ArrayViewCtor<T> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number };

/**
 * `bytes` as a typed array: a view into their buffer when aligned for the type, so that a large
 * file is held once, else a copy (a format may place values at any offset; typed arrays
 * cannot view them there).
 */
export function typedView<T>(Ctor: ArrayViewCtor<T>, bytes: Uint8Array): T {
  const count = bytes.byteLength / Ctor.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(bytes.buffer, bytes.byteOffset, count);
  return new Ctor(new Uint8Array(bytes).buffer, 0, count);
}

// Typed arrays use the host's byte order; the formats read here are little-endian. Every platform
// Node 20 ships for is little-endian, so refuse loudly rather than carry an untested byte-swapping path.
export function assertLittleEndianHost(format: string): void {
  if (endianness() !== 'LE') throw new Error(`${format}: big-endian hosts are not supported`);
}

/** The error for a file that cannot be opened or read, naming it and the system's reason. */
export function cannotRead(path: string, e: unknown, what = 'file'): Error {
  return new Error(`${path}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
}

/** The file's bytes, or an error naming it. */
export async function readInput(path: string, what?: string): Promise<Buffer>;
export async function readInput(path: string, what: string, encoding: 'utf8'): Promise<string>;
export async function readInput(path: string, what = 'file', encoding?: 'utf8'): Promise<Buffer | string> {
  try {
    return encoding ? await readFile(path, encoding) : await readFile(path);
  } catch (e) {
    throw cannotRead(path, e, what);
  }
}

/** A file descriptor for reading the file, or an error naming it. */
export function openInputSync(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw cannotRead(path, e);
  }
}

/** The file's bytes, synchronously; readFileSync stops at 2 GiB, so larger files are read in chunks. */
export function readInputSync(path: string): Buffer {
  const fd = openInputSync(path);
  try {
    const size = fstatSync(fd).size;
    if (size < 2 ** 31 - 1) return readFileSync(fd);
    const buf = Buffer.allocUnsafe(size);
    for (let off = 0; off < size; ) {
      const n = readSync(fd, buf, off, Math.min(1 << 30, size - off), off);
      if (n === 0) throw Object.assign(new Error('file shrank while reading'), { code: 'EIO' });
      off += n;
    }
    return buf;
  } catch (e) {
    throw cannotRead(path, e);
  } finally {
    closeSync(fd);
  }
}
