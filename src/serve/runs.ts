// Training runs as the Training page sees them: found under the run roots (a folder holding
// config.json is a run), summarised from their config.json and log.jsonl — what `fcn train`
// writes as it goes, so a run followed here may be training in another process right now.
// Only a run found by the scan can be named, and only its plots/ and samples/ images are
// served: a name or file the scan did not produce is unknown (404), whatever its spelling.
import { readdirSync, statSync, readFileSync, existsSync, openSync, readSync, closeSync, fstatSync, realpathSync } from 'node:fs';
import path from 'node:path';
import type { EpochRecord } from '../train/checkpoint.js';

export interface RunRef {
  /** The run's name in URLs: its path under its root, '/'-separated. */
  name: string;
  dir: string;
}

/** Folders below a root searched for runs (runs/demo-<date>/run is two levels down). */
const MAX_DEPTH = 3;
/** Folders looked at per scan, so a huge tree cannot stall a request. */
const MAX_FOLDERS = 2000;

const isRun = (dir: string) => existsSync(path.join(dir, 'config.json'));

/**
 * f()'s value, or `fallback` when it throws: a run's files may be missing, half written or
 * unreadable while `fcn train` works on them, and the page shows what it can.
 */
export function orElse<T>(f: () => T, fallback: T): T {
  try {
    return f();
  } catch {
    return fallback;
  }
}

/** Every run under the roots (a root that is itself a run counts, named by its folder). */
export function findRuns(roots: readonly string[]): RunRef[] {
  const found = new Map<string, RunRef>();
  let budget = MAX_FOLDERS;
  const add = (name: string, dir: string) => {
    let unique = name;
    for (let k = 2; found.has(unique); k++) unique = `${name}~${k}`;
    found.set(unique, { name: unique, dir });
  };
  for (const root of roots) {
    const abs = path.resolve(root);
    if (isRun(abs)) {
      add(path.basename(abs), abs);
      continue;
    }
    const walk = (dir: string, rel: string, depth: number) => {
      if (depth > MAX_DEPTH || budget <= 0) return;
      const entries = orElse(() => readdirSync(dir, { withFileTypes: true }), []);
      for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
        // Symbolic links are not followed: a run is a real folder under a root.
        if (!e.isDirectory() || e.name.startsWith('.') || --budget <= 0) continue;
        const sub = path.join(dir, e.name), subRel = rel ? `${rel}/${e.name}` : e.name;
        if (isRun(sub)) add(subRel, sub);
        else walk(sub, subRel, depth + 1);
      }
    };
    walk(abs, '', 1);
  }
  return [...found.values()];
}

/** The folders of a run whose images are served. */
export const RUN_FOLDERS = ['samples', 'plots'] as const;
export type RunFolder = (typeof RUN_FOLDERS)[number];
const SERVED_FILE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\.(png|svg)$/;

/** The file's path if `folder/file` is an image the run really has, else undefined. */
export function runFile(run: RunRef, folder: string, file: string): { root: string; file: string } | undefined {
  if (!(RUN_FOLDERS as readonly string[]).includes(folder) || !SERVED_FILE.test(file)) return undefined;
  const root = path.join(run.dir, folder);
  if (!orElse(() => readdirSync(root), []).includes(file)) return undefined;
  // A link out of the run (samples/x.png → /etc/passwd) is not the run's file.
  const inside = orElse(() => {
    const real = realpathSync(path.join(root, file));
    return real.startsWith(realpathSync(run.dir) + path.sep) && statSync(real).isFile();
  }, false);
  return inside ? { root, file } : undefined;
}

function listImages(run: RunRef, folder: RunFolder): string[] {
  return orElse(() => readdirSync(path.join(run.dir, folder)), []).filter((f) => SERVED_FILE.test(f)).sort();
}

type LogRecord = { type: string; [key: string]: unknown };

/** A run's log read incrementally: only the bytes appended since the last read are parsed. */
export class LogTail {
  private offset = 0;
  private partial = '';
  private identity = '';
  readonly records: LogRecord[] = [];

  constructor(readonly file: string) {}

  /** Reads what was appended; returns whether anything new was parsed. A log that shrank or was replaced is read again from the start. */
  poll(): boolean {
    const fd = orElse(() => openSync(this.file, 'r'), null);
    if (fd === null) return false;
    try {
      const st = fstatSync(fd);
      const identity = `${st.dev}:${st.ino}`;
      if (identity !== this.identity || st.size < this.offset) {
        this.identity = identity;
        this.offset = 0;
        this.partial = '';
        this.records.length = 0;
      }
      if (st.size === this.offset) return false;
      // At most 8 MB per poll: a huge log is caught up over several polls.
      const length = Math.min(st.size - this.offset, 8 * 2 ** 20);
      const buf = Buffer.alloc(length);
      const n = readSync(fd, buf, 0, length, this.offset);
      this.offset += n;
      const lines = (this.partial + buf.subarray(0, n).toString('utf8')).split('\n');
      // The last piece has no newline yet: it is a record still being written.
      this.partial = lines.pop() ?? '';
      let added = false;
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          this.records.push(JSON.parse(line) as LogRecord);
          added = true;
        } catch {
          // A damaged line is skipped; the rest of the log still tells the story.
        }
      }
      return added;
    } finally {
      closeSync(fd);
    }
  }
}

export interface StageSummary {
  model: string;
  epochs: number;
  trainable: unknown;
  lr?: number;
}

type Metrics = { pixelAccuracy: number; meanAccuracy: number; meanIoU: number; frequencyWeightedIoU: number };

export interface RunSummary {
  name: string;
  status: 'starting' | 'running' | 'completed' | 'interrupted' | 'failed' | 'stopped';
  /** Last change of the log, ISO time. */
  updated: string | null;
  config: { stages: StageSummary[]; width: number | null; batchSize: number | null; size: number | null; optimizer: string | null; lr: number | null; data: string | null };
  images: { train: number | null; val: number | null };
  /** epoch/epochs: within the stage, from 1; globalEpoch/totalEpochs: over the whole run. */
  current: {
    stage: number; stages: number; model: string | null; epoch: number; epochs: number; globalEpoch: number; totalEpochs: number;
    step: number; batch: number; batchesPerEpoch: number | null; loss: number | null; imagesPerSecond: number | null; etaSeconds: number | null;
  };
  epochs: EpochRecord[];
  /** Training loss per logged step (thinned to at most MAX_STEPS points). */
  steps: { step: number; stage: number; epoch: number; loss: number }[];
  best: { meanIoU: number; epoch: number; stage: number } | null;
  samples: { file: string; url: string }[];
  plots: { file: string; url: string }[];
  /** When the run is over: the last validation's metrics, and an eval.json's when one lies beside the run. */
  final: { metrics: Metrics | null; perClass: { name: string; iou: number | null; accuracy: number | null }[] | null; source: string } | null;
  message: string | null;
}

const MAX_STEPS = 400;

export const runUrl = (name: string) => `/api/runs/${encodeURIComponent(name)}`;

function readJson(file: string): Record<string, unknown> | null {
  return orElse(() => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>, null);
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** `last`: the last record other than 'init'. */
interface LogProgress { train: number | null; val: number | null; epochs: EpochRecord[]; steps: RunSummary['steps']; lastStep: LogRecord | null; last: LogRecord | null; best: RunSummary['best'] }

/** What the log's records say: image counts, epochs, the loss per step, the best validation. */
function readProgress(records: readonly LogRecord[]): LogProgress {
  const p: LogProgress = { train: null, val: null, epochs: [], steps: [], lastStep: null, last: null, best: null };
  const epochsByNumber = new Map<number, EpochRecord>();
  for (const r of records) {
    if (r.type === 'start' || r.type === 'resume') {
      p.train = num(r.train);
      p.val = num(r.val);
    } else if (r.type === 'step') {
      p.lastStep = r;
      const loss = num(r.loss);
      if (loss !== null) p.steps.push({ step: num(r.step) ?? p.steps.length + 1, stage: num(r.stage) ?? 1, epoch: num(r.epoch) ?? 1, loss });
    } else if (r.type === 'epoch') {
      const e = r as unknown as EpochRecord;
      epochsByNumber.set(e.epoch, e);
      if (e.val && !(e.val.meanIoU <= (p.best?.meanIoU ?? -1))) p.best = { meanIoU: e.val.meanIoU, epoch: e.epoch, stage: e.stage };
    }
    if (r.type !== 'init') p.last = r;
  }
  p.epochs = [...epochsByNumber.values()].sort((a, b) => a.epoch - b.epoch);
  return p;
}

/** Whether the run goes on, from its last record and how long its log has been quiet. */
function runStatus(p: LogProgress, updatedMs: number | null, records: number, now: number): { status: RunSummary['status']; message: string | null } {
  const lastType = p.last?.type;
  if (updatedMs === null || records === 0) return { status: 'starting', message: null };
  if (lastType === 'end') return { status: 'completed', message: null };
  if (lastType === 'interrupted') return { status: 'interrupted', message: null };
  if (lastType === 'nonfinite') return { status: 'failed', message: `the loss or a weight became non-finite at stage ${String(p.last!.stage)}, epoch ${String(p.last!.epoch)}` };
  // Silent for longer than an epoch usually takes (and two minutes at least): no one is writing.
  const quiet = Math.max(120_000, 2000 * (p.epochs.at(-1)?.seconds ?? 0));
  return { status: now - updatedMs > quiet ? 'stopped' : 'running', message: null };
}

/**
 * Where the run is: in the epoch of the latest step, unless that epoch is complete (then at
 * the start of the next one, or at the end of the run); and the time left while it runs.
 */
function position(p: LogProgress, stages: StageSummary[], batchSize: number | null, running: boolean): RunSummary['current'] {
  const lastEpoch = p.epochs.at(-1) ?? null;
  const totalEpochs = stages.reduce((n, s) => n + (s.epochs ?? 0), 0);
  const epochsBefore = (stage: number) => stages.slice(0, stage - 1).reduce((n, s) => n + s.epochs, 0);
  const completed = lastEpoch?.epoch ?? 0;
  const inEpoch = p.lastStep !== null && (num(p.lastStep.epoch) ?? 0) > completed;
  const globalEpoch = inEpoch ? num(p.lastStep!.epoch)! : Math.max(1, Math.min(completed + 1, totalEpochs));
  const batch = inEpoch ? (num(p.lastStep!.batch) ?? 0) : 0;
  let stage = 1;
  while (stage < stages.length && globalEpoch > epochsBefore(stage + 1)) stage++;
  const batchesPerEpoch = p.train !== null && batchSize ? Math.ceil(p.train / batchSize) : null;
  const imagesPerSecond = num(p.lastStep?.imagesPerSecond) ?? lastEpoch?.imagesPerSecond ?? null;
  let etaSeconds: number | null = null;
  if (running && batchesPerEpoch && imagesPerSecond && batchSize) {
    const remaining = Math.max(0, totalEpochs * batchesPerEpoch - ((globalEpoch - 1) * batchesPerEpoch + batch));
    etaSeconds = Math.round((remaining * batchSize) / imagesPerSecond);
  }
  const loss = num(p.lastStep?.loss) ?? lastEpoch?.train.loss ?? null;
  return { stage, stages: stages.length, model: stages[stage - 1]?.model ?? null, epoch: Math.max(1, globalEpoch - epochsBefore(stage)), epochs: stages[stage - 1]?.epochs ?? 0, globalEpoch, totalEpochs, step: num(p.lastStep?.step) ?? 0, batch, batchesPerEpoch, loss, imagesPerSecond, etaSeconds };
}

/** A finished run's metrics: an eval.json's (in the run or beside it, as `fcn demo` writes), else the last validation's. */
function finalMetrics(run: RunRef, lastEpoch: EpochRecord | undefined): RunSummary['final'] {
  const evalJson = [path.join(run.dir, 'eval.json'), path.join(path.dirname(run.dir), 'eval.json')].map((f) => ({ f, j: readJson(f) })).find((x) => x.j);
  if (evalJson?.j) {
    const j = evalJson.j;
    return {
      metrics: { pixelAccuracy: num(j.pixelAccuracy) ?? NaN, meanAccuracy: num(j.meanAccuracy) ?? NaN, meanIoU: num(j.meanIoU) ?? NaN, frequencyWeightedIoU: num(j.frequencyWeightedIoU) ?? NaN },
      perClass: Array.isArray(j.perClass) ? (j.perClass as Record<string, unknown>[]).map((c) => ({ name: String(c.name), iou: num(c.iou), accuracy: num(c.accuracy) })) : null,
      source: `eval.json (${path.basename(path.dirname(evalJson.f)) === path.basename(run.dir) ? 'in the run' : 'beside the run'})`,
    };
  }
  if (!lastEpoch?.val) return null;
  const v = lastEpoch.val;
  return { metrics: { pixelAccuracy: v.pixelAccuracy, meanAccuracy: v.meanAccuracy, meanIoU: v.meanIoU, frequencyWeightedIoU: v.frequencyWeightedIoU }, perClass: null, source: `validation after epoch ${lastEpoch.epoch}` };
}

/** Everything the Training page shows about a run, from its files as they are now. */
export function summarizeRun(run: RunRef, tail: LogTail, now = Date.now()): RunSummary {
  tail.poll();
  const config = readJson(path.join(run.dir, 'config.json')) ?? {};
  const cfgStages = Array.isArray(config.stages) ? (config.stages as StageSummary[]) : [];
  const data = (config.data ?? {}) as Record<string, unknown>;
  const model = (config.model ?? {}) as Record<string, unknown>;
  const optimizer = (config.optimizer ?? {}) as Record<string, unknown>;
  const batchSize = num(config.batchSize);
  const p = readProgress(tail.records);
  const updatedMs = orElse(() => statSync(tail.file).mtimeMs, null); // null: no log yet
  const { status, message } = runStatus(p, updatedMs, tail.records.length, now);
  const steps = p.steps;
  const thinned = steps.length <= MAX_STEPS ? steps : steps.filter((_, i) => i % Math.ceil(steps.length / MAX_STEPS) === 0 || i === steps.length - 1);
  const fileUrl = (folder: RunFolder) => (f: string) => ({ file: f, url: `${runUrl(run.name)}/files/${folder}/${encodeURIComponent(f)}` });
  return {
    name: run.name,
    status,
    updated: updatedMs !== null ? new Date(updatedMs).toISOString() : null,
    config: {
      stages: cfgStages.map((s) => ({ model: s.model, epochs: s.epochs, trainable: s.trainable, ...(s.lr !== undefined ? { lr: s.lr } : {}) })),
      width: num(model.width),
      batchSize,
      size: num(data.size),
      optimizer: typeof optimizer.kind === 'string' ? optimizer.kind : null,
      lr: num(optimizer.lr),
      data: typeof data.root === 'string' ? path.basename(data.root) : null,
    },
    images: { train: p.train, val: p.val },
    current: position(p, cfgStages, batchSize, status === 'running'),
    epochs: p.epochs,
    steps: thinned,
    best: p.best,
    samples: listImages(run, 'samples').map(fileUrl('samples')),
    plots: listImages(run, 'plots').map(fileUrl('plots')),
    final: status === 'completed' || status === 'interrupted' || status === 'stopped' ? finalMetrics(run, p.epochs.at(-1)) : null,
    message,
  };
}
