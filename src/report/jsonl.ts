// Append-only JSON Lines logs (training steps and epochs). Each record is one write(2) of a
// whole line, issued synchronously, so a crash loses at most the line being written and the
// OS holds everything before it. A crash mid-write can leave a torn last line: readers skip
// it, and reopening for append first cuts it off so the next record starts on a fresh line.
import { closeSync, ftruncateSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';

export interface JsonlLog {
  /** Appends one record as a line. */
  write(record: unknown): void;
  close(): void;
  readonly path: string;
}

function isParsable(line: string): boolean {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
}

/** Makes the file end at a line boundary: a torn tail is cut off, and a tail that is a whole
 * record which only lost its newline gets the newline back. */
function repairTail(fd: number): void {
  const size = fstatSync(fd).size;
  if (size === 0) return;
  // Scan backwards in chunks for the last newline.
  const chunk = Buffer.alloc(64 * 1024);
  let end = size, lastNewline = -1;
  while (end > 0 && lastNewline < 0) {
    const start = Math.max(0, end - chunk.length);
    const n = readSync(fd, chunk, 0, end - start, start);
    const at = chunk.subarray(0, n).lastIndexOf(0x0a);
    if (at >= 0) lastNewline = start + at;
    end = start;
  }
  if (lastNewline === size - 1) return;
  const tailStart = lastNewline + 1;
  const tail = Buffer.alloc(size - tailStart);
  readSync(fd, tail, 0, tail.length, tailStart);
  if (isParsable(tail.toString('utf8'))) writeSync(fd, '\n', size);
  else ftruncateSync(fd, tailStart);
}

/** Opens (creating if needed) a JSONL file for appending. */
export function openJsonl(path: string): JsonlLog {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'a+');
    repairTail(fd);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    throw new Error(`${path}: cannot open log (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const handle = fd;
  let closed = false;
  return {
    path,
    write(record: unknown) {
      if (closed) throw new Error(`${path}: log is closed`);
      const line = JSON.stringify(record);
      if (line === undefined) throw new Error(`${path}: cannot log ${String(record)}`);
      // One buffer, one call: the line is never interleaved or split by our own writes.
      const bytes = Buffer.from(line + '\n', 'utf8');
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(handle, bytes, offset, bytes.length - offset);
    },
    close() {
      if (closed) return;
      closed = true;
      closeSync(handle);
    },
  };
}
