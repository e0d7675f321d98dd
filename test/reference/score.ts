// Label maps scored by test/reference/score.py, the FCN paper's score.py in NumPy: an
// independent check of the metrics the commands report.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeNpy } from '../../src/io/npy.js';
import { findPython } from './python.js';

const script = fileURLToPath(new URL('./score.py', import.meta.url));

/** One image: truth and prediction, row-major height × width class indices (255 = void truth). */
export interface LabelPair {
  truth: Uint8Array;
  pred: Uint8Array;
  width: number;
  height: number;
}

/** What score.py prints; NaN comes back as null. */
export interface PaperScores {
  overallAccuracy: number | null;
  meanAccuracy: number | null;
  meanIU: number | null;
  fwavacc: number | null;
  perClassAccuracy: (number | null)[];
  perClassIU: (number | null)[];
  hist: number[][];
  images: number;
}

/** A Python 3 with NumPy, or null. */
export const scorePython = (): string | null => findPython(['numpy']);

/** Scores the pairs with score.py over `numClasses` classes. */
export function paperScores(numClasses: number, pairs: LabelPair[]): PaperScores {
  const python = scorePython();
  if (!python) throw new Error('no Python 3 with NumPy to run test/reference/score.py');
  const dir = mkdtempSync(path.join(tmpdir(), 'fcn-score-'));
  try {
    const files = pairs.flatMap((p, i) => {
      const t = path.join(dir, `${i}-truth.npy`), q = path.join(dir, `${i}-pred.npy`);
      writeNpy(t, p.truth, [p.height, p.width]);
      writeNpy(q, p.pred, [p.height, p.width]);
      return [t, q];
    });
    const r = spawnSync(python, [script, String(numClasses), ...files], { encoding: 'utf8', timeout: 120_000, maxBuffer: 16 << 20 });
    if (r.status !== 0) throw new Error(`score.py failed (${r.status ?? r.signal}): ${r.stderr}`);
    return JSON.parse(r.stdout) as PaperScores;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
