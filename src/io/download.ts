// Downloads of large public files (datasets, pretrained weights): resumable (HTTP Range on
// a `.part` file), with a progress bar (speed, ETA) on a terminal or periodic plain lines
// otherwise, size and md5 checks, and extraction with npm `tar`.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import * as tar from 'tar';
import { fcnErrorClass } from '../errors.js';

export interface ProgressEvent {
  received: number;
  /** Total bytes, or undefined when the server does not say. */
  total?: number;
  /** Bytes per second over the recent past. */
  speed: number;
  done: boolean;
}

export interface DownloadOptions {
  /** Expected md5 (hex); checked after the download. */
  md5?: string;
  /** Automatic resumes after a dropped connection (default 3). */
  retries?: number;
  /** Size to assume for progress when the server sends none. */
  approxBytes?: number;
  onProgress?: (p: ProgressEvent) => void;
  /** Called with a message when a transfer restarts or resumes. */
  onNote?: (msg: string) => void;
  /** Milliseconds to wait before an automatic retry (default 1000, doubled each time). */
  retryDelayMs?: number;
  /**
   * Exact size of the file in bytes, when known: a server announcing another size is refused
   * before any data is kept, and a finished download of another size is deleted.
   */
  expectedBytes?: number;
}

const TransferError = fcnErrorClass('TRANSFER');
/** The server's file is not the one expected: what was received is deleted, never resumed. */
const WrongFileError = fcnErrorClass('WRONG_FILE');

async function md5File(path: string): Promise<string> {
  const h = createHash('md5');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function get(url: string, headers: Record<string, string>, redirects = 5): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (!URL.canParse(url)) return reject(new Error(`${url}: not a valid URL`));
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : undefined;
    if (!mod) return reject(new Error(`${url}: only http and https are supported`));
    const req = mod.get(u, { headers: { 'user-agent': 'fcn-data-fetch', ...headers } }, (res) => {
      if (![301, 302, 303, 307, 308].includes(res.statusCode ?? 0) || !res.headers.location) return resolve(res);
      res.resume();
      if (redirects <= 0) reject(new Error(`${url}: too many redirects`));
      else resolve(get(new URL(res.headers.location, u).href, headers, redirects - 1));
    });
    req.on('error', (e) => reject(new TransferError(`${url}: ${e.message}`)));
    req.setTimeout(60_000, () => req.destroy(new Error('no data for 60 s')));
  });
}

/** One HTTP transfer into `part`, starting at its current size. Returns when the body is complete. */
async function transfer(url: string, part: string, o: DownloadOptions, note: (m: string) => void): Promise<void> {
  const have = existsSync(part) ? statSync(part).size : 0;
  const res = await get(url, have > 0 ? { range: `bytes=${have}-` } : {});
  const start = resumePoint(res, url, part, have, note);
  if (start === null) return;
  const length = res.headers['content-length'] !== undefined ? Number(res.headers['content-length']) : undefined;
  // The whole file's size as the server states it: Content-Range's total on a resume, else Content-Length.
  const rangeTotal = /\/(\d+)\s*$/.exec(String(res.headers['content-range'] ?? ''));
  const announced = res.statusCode === 206 && rangeTotal ? Number(rangeTotal[1]) : length !== undefined ? start + length : undefined;
  if (o.expectedBytes !== undefined && announced !== undefined && announced !== o.expectedBytes) {
    res.destroy();
    throw new WrongFileError(`the server's file has ${announced} bytes, expected ${o.expectedBytes}`);
  }
  await receiveBody(res, part, start, length, announced ?? o.expectedBytes ?? o.approxBytes, o);
}

/**
 * Where the response's body goes in `part`: its byte offset, or null when there is nothing
 * more to receive. Throws on a status that is neither a whole file nor the resume asked for.
 */
function resumePoint(res: IncomingMessage, url: string, part: string, have: number, note: (m: string) => void): number | null {
  const code = res.statusCode ?? 0;
  if (code === 206) {
    const m = /bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
    const start = m ? Number(m[1]) : -1;
    if (start !== have) {
      res.resume();
      throw new Error(`${url}: server resumed at byte ${start}, expected ${have}`);
    }
    note(`resuming at ${formatBytes(have)}`);
    return start;
  }
  if (code === 416 && have > 0) {
    // Nothing more to send: the part file is already whole (the checksum will tell), unless
    // the server says its file is shorter than what we hold.
    res.resume();
    const whole = /\*\/(\d+)/.exec(String(res.headers['content-range'] ?? ''));
    if (whole && Number(whole[1]) !== have) throw new WrongFileError(`${part} holds ${have} bytes but the file on the server has ${whole[1]}`);
    return null;
  }
  if (code === 200) {
    if (have > 0) note('server does not support resuming; starting over');
    return 0;
  }
  res.resume();
  throw new Error(`${url}: HTTP ${code} ${res.statusMessage ?? ''}`.trim());
}

/** Appends the body to `part` from byte `start`, reporting progress at most every 200 ms. */
async function receiveBody(res: IncomingMessage, part: string, start: number, length: number | undefined, total: number | undefined, o: DownloadOptions): Promise<void> {
  const out = createWriteStream(part, { flags: start > 0 ? 'a' : 'w' });
  let received = start;
  const samples: [number, number][] = [[performance.now(), received]];
  let lastReport = 0;
  const report = (done: boolean) => {
    const now = performance.now();
    samples.push([now, received]);
    while (samples.length > 2 && now - samples[0]![0] > 5000) samples.shift();
    const [t0, b0] = samples[0]!;
    const speed = now > t0 ? ((received - b0) * 1000) / (now - t0) : 0;
    o.onProgress?.({ received, speed, done, ...(total !== undefined ? { total } : {}) });
  };
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (e: Error) => {
      if (failed) return;
      failed = true;
      out.end(() => reject(e));
    };
    res.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (!out.write(chunk)) {
        res.pause();
        out.once('drain', () => res.resume());
      }
      if (performance.now() - lastReport > 200) {
        lastReport = performance.now();
        report(false);
      }
    });
    res.on('aborted', () => fail(new TransferError(`connection lost after ${formatBytes(received)}`)));
    res.on('error', (e) => fail(new TransferError(`connection lost after ${formatBytes(received)} (${e.message})`)));
    res.on('end', () => {
      if (failed) return;
      if (length !== undefined && received < start + length) {
        fail(new TransferError(`connection closed after ${formatBytes(received)} of ${formatBytes(start + length)}`));
        return;
      }
      out.end(() => {
        report(true);
        resolve();
      });
    });
    out.on('error', (e) => fail(new Error(`${part}: cannot write (${e.message})`)));
  });
}

/**
 * Downloads `url` to `dest`, resuming from `dest.part` if present, retrying dropped
 * connections, and checking the md5. A complete file already at `dest` with the right md5
 * is kept as is. On an md5 mismatch the file is deleted and the error says so.
 */
export async function downloadFile(url: string, dest: string, o: DownloadOptions = {}): Promise<{ path: string; md5: string; skipped: boolean }> {
  const want = o.md5?.toLowerCase();
  if (want !== undefined && !/^[0-9a-f]{32}$/.test(want)) throw new Error(`md5 must be 32 hex digits, got "${o.md5}"`);
  const note = o.onNote ?? (() => {});
  if (existsSync(dest) && o.expectedBytes !== undefined && statSync(dest).size !== o.expectedBytes) {
    note(`${dest} exists but has ${statSync(dest).size} bytes, not ${o.expectedBytes}: downloading again`);
    await rm(dest);
  }
  if (existsSync(dest)) {
    const sum = await md5File(dest);
    if (!want || sum === want) return { path: dest, md5: sum, skipped: true };
    note(`${dest} exists but its md5 is ${sum}, not ${want}: downloading again`);
    await rm(dest);
  }
  const part = `${dest}.part`;
  const retries = o.retries ?? 3;
  let delay = o.retryDelayMs ?? 1000;
  for (let attempt = 0; ; attempt++) {
    try {
      await transfer(url, part, o, note);
      break;
    } catch (e) {
      if (e instanceof WrongFileError) {
        await rm(part, { force: true });
        throw new Error(`${url}: download refused (${(e as Error).message}); nothing was kept`);
      }
      const have = existsSync(part) ? statSync(part).size : 0;
      if (!(e instanceof TransferError) || attempt >= retries) {
        const hint = have > 0 ? `; ${formatBytes(have)} kept in ${part}, run again to resume` : '';
        throw new Error(`${url}: download failed (${(e as Error).message.replace(`${url}: `, '')})${hint}`);
      }
      note(`${(e as Error).message}; retrying in ${(delay / 1000).toFixed(0)} s (${attempt + 1}/${retries})`);
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
  }
  const got = statSync(part).size;
  if (o.expectedBytes !== undefined && got !== o.expectedBytes) {
    await rm(part, { force: true });
    throw new Error(`${dest}: size mismatch: got ${got} bytes, expected ${o.expectedBytes}; the download was deleted`);
  }
  const sum = await md5File(part);
  if (want && sum !== want) {
    await rm(part, { force: true });
    throw new Error(`${dest}: md5 mismatch: got ${sum}, expected ${want}; the corrupt download was deleted`);
  }
  await rename(part, dest);
  return { path: dest, md5: sum, skipped: false };
}

/** Extracts a .tar / .tgz / .tar.gz archive into `dir` (gzip is detected). */
export async function extractArchive(archive: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  try {
    await tar.x({ file: archive, cwd: dir, strict: true });
  } catch (e) {
    throw new Error(`${archive}: cannot extract (${(e as Error).message})`);
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** Seconds as m:ss or h:mm:ss (downloads' and training's ETAs). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = h > 0 ? String(m).padStart(2, '0') : String(m);
  return `${h > 0 ? `${h}:` : ''}${mm}:${String(sec).padStart(2, '0')}`;
}

/**
 * A progress reporter: on a terminal, one bar redrawn in place (percentage, bytes, speed,
 * ETA); otherwise a plain line every `intervalMs` (default 10 s) and at the end.
 */
export function progressPrinter(label: string, stream: NodeJS.WriteStream = process.stderr, intervalMs = 10_000): (p: ProgressEvent) => void {
  const tty = Boolean(stream.isTTY);
  let last = -Infinity;
  return (p) => {
    const now = performance.now();
    if (!tty && !p.done && now - last < intervalMs) return;
    last = now;
    const frac = p.total ? Math.min(1, p.received / p.total) : undefined;
    const eta = p.total && p.speed > 0 ? formatDuration((p.total - p.received) / p.speed) : '--';
    const amount = `${formatBytes(p.received)}${p.total ? ` / ${formatBytes(p.total)}` : ''}`;
    const speed = `${formatBytes(p.speed)}/s`;
    const pct = frac !== undefined ? `${(100 * frac).toFixed(1).padStart(5)}%` : '';
    if (tty) {
      const width = 24;
      const fill = frac !== undefined ? Math.round(frac * width) : 0;
      const bar = frac !== undefined ? `[${'#'.repeat(fill)}${'-'.repeat(width - fill)}]` : '';
      stream.write(`\r${label} ${pct} ${bar} ${amount}  ${speed}  ETA ${eta}\x1b[K${p.done ? '\n' : ''}`);
    } else {
      stream.write(`${label}: ${pct ? `${pct.trim()}, ` : ''}${amount}, ${speed}${p.done ? ', done' : `, ETA ${eta}`}\n`);
    }
  };
}
