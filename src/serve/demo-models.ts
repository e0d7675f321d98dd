// Which models the server shows: the weight files given, or the stage models of the latest
// `fcn demo` run — FCN-32s, FCN-16s and FCN-8s as the staged recipe left them.
import { readdirSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';
import { FCN_KINDS, type FcnKind } from '../models/network.js';
import { orElse } from './runs.js';

/** A stage's weights as the trainer names them (train/trainer.ts runPaths). */
export const STAGE_FILE = /^stage(\d+)-(fcn32|fcn16|fcn8)\.safetensors$/;

/** The stage models of a finished demo output folder (holding report.html and run/), FCN-32s first, or null if it has none. */
function demoModels(out: string): string[] | null {
  const checkpoints = path.join(out, 'run', 'checkpoints');
  // report.html is written last: a demo stopped half-way is not picked.
  if (!existsSync(path.join(out, 'report.html')) || !existsSync(checkpoints)) return null;
  const byKind = new Map<FcnKind, { stage: number; file: string }>();
  for (const f of readdirSync(checkpoints)) {
    const m = STAGE_FILE.exec(f);
    if (!m) continue;
    const stage = Number(m[1]), kind = m[2] as FcnKind;
    if (stage > (byKind.get(kind)?.stage ?? 0)) byKind.set(kind, { stage, file: path.join(checkpoints, f) });
  }
  const weights = FCN_KINDS.filter((k) => byKind.has(k)).map((k) => byKind.get(k)!.file);
  return weights.length ? weights : null;
}

/** The most recent finished demo under `root` (by the time of its report), or null. */
export function latestDemo(root: string): string[] | null {
  const demos = orElse(() => readdirSync(root), [])
    .map((e) => path.join(root, e))
    .map((out) => ({ out, models: demoModels(out) }))
    .filter((d): d is { out: string; models: string[] } => d.models !== null)
    .map((d) => ({ ...d, time: statSync(path.join(d.out, 'report.html')).mtimeMs }))
    .sort((a, b) => b.time - a.time);
  return demos[0]?.models ?? null;
}
