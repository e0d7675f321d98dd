// Progress of a long loop (training steps, evaluated images). On a terminal: one line redrawn
// in place with a bar, count, rate and ETA. Elsewhere (CI logs, pipes, files) carriage returns
// would pile up into one huge line, so plain lines are printed at most every N seconds instead.
import { formatDuration } from '../io/download.js';

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export type ProgressFields = Record<string, number | string>;

export interface ProgressOptions {
  label: string;
  /** Number of items expected; without it there is no bar and no ETA. */
  total?: number;
  stream?: ProgressStream;
  /** Minimum seconds between plain lines when the stream is not a terminal (default 10). */
  intervalSeconds?: number;
  /** Overrides the stream's own isTTY. */
  tty?: boolean;
  /** Item name for the rate, e.g. 'img' → "3.2 img/s" (default 'it'). */
  unit?: string;
  /** Clock in seconds; injectable for tests. */
  now?: () => number;
}

export interface Progress {
  /** Counts `n` more items done (default 1) and records the latest values to show. */
  tick(n?: number, fields?: ProgressFields): void;
  /** Prints the final line (once). */
  done(fields?: ProgressFields): void;
  readonly count: number;
}

function formatValue(value: number | string): string {
  if (typeof value === 'string') return value;
  if (Number.isInteger(value) || !Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 1e4 || Math.abs(value) < 1e-3 ? value.toExponential(3) : value.toPrecision(4);
}

function formatFields(fields: ProgressFields): string {
  return Object.entries(fields).map(([k, v]) => `${k} ${formatValue(v)}`).join('  ');
}

const ttyRedrawSeconds = 0.1; // redrawing faster than the eye reads only costs time
const barWidth = 24;

export function progress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? Boolean(stream.isTTY);
  const interval = options.intervalSeconds ?? 10;
  const unit = options.unit ?? 'it';
  const now = options.now ?? (() => performance.now() / 1000);
  const total = options.total;
  const start = now();
  let count = 0;
  let lastPrint = start;
  let fields: ProgressFields = {};
  let finished = false;

  const describe = (t: number): string => {
    const elapsed = t - start;
    const rate = elapsed > 0 ? count / elapsed : 0;
    const parts = [options.label];
    if (total !== undefined && total > 0) {
      const fraction = Math.min(1, count / total);
      if (tty) {
        const filled = Math.round(fraction * barWidth);
        parts.push(`[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]`);
      }
      parts.push(`${count}/${total}`, `${(100 * fraction).toFixed(0)}%`);
    } else {
      parts.push(String(count));
    }
    parts.push(`${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${unit}/s`);
    if (total !== undefined && !finished) parts.push(`ETA ${rate > 0 ? formatDuration((total - count) / rate) : '?'}`);
    if (finished) parts.push(`in ${formatDuration(elapsed)}`);
    const extra = formatFields(fields);
    if (extra) parts.push(extra);
    return parts.join('  ');
  };

  const draw = (t: number) => {
    let line = describe(t);
    const columns = stream.columns ?? 0;
    if (columns > 1 && line.length > columns - 1) line = line.slice(0, columns - 1);
    // \r returns to the line start; ESC[K clears what a longer previous line left behind.
    stream.write(`\r${line}\x1b[K`);
  };

  return {
    get count() { return count; },
    tick(n = 1, newFields?: ProgressFields) {
      if (finished) return;
      count += n;
      if (newFields) fields = { ...fields, ...newFields };
      const t = now();
      if (tty) {
        if (t - lastPrint >= ttyRedrawSeconds || count === n) { draw(t); lastPrint = t; }
      } else if (t - lastPrint >= interval) {
        stream.write(describe(t) + '\n');
        lastPrint = t;
      }
    },
    done(finalFields?: ProgressFields) {
      if (finished) return;
      finished = true;
      if (finalFields) fields = { ...fields, ...finalFields };
      const t = now();
      if (tty) { draw(t); stream.write('\n'); } else stream.write(describe(t) + '\n');
    },
  };
}
