// The confusion matrix and the four segmentation metrics of Long, Shelhamer & Darrell
// (FCN, PAMI 2016 / CVPR 2015), computed exactly as their Caffe release's `score.py` does:
//   hist[t][p] counts pixels with truth t and prediction p; void truth (255) is skipped;
//   pixel acc = Σ diag / Σ hist
//   mean acc  = nanmean(diag / rowsum)
//   IU        = diag / (rowsum + colsum − diag), mean IU = nanmean(IU)
//   fwIU      = Σ_{freq>0} freq · IU, freq = rowsum / Σ hist
// "nanmean" means a class whose ratio is 0/0 (absent from both truth and prediction for IU,
// absent from truth for accuracy) is NaN and left out of the mean; a class absent from the
// truth but predicted somewhere has IU 0 and does count.

export interface Metrics {
  pixelAccuracy: number;
  meanAccuracy: number;
  meanIoU: number;
  frequencyWeightedIoU: number;
  /** IU of each class; NaN where the class is in neither truth nor prediction. */
  perClassIoU: number[];
  /** Recall of each class; NaN where the class is absent from the truth. */
  perClassAccuracy: number[];
  /** Number of non-void pixels counted. */
  pixels: number;
}

export interface ConfusionMatrixJson {
  numClasses: number;
  /** hist[truth][prediction]. */
  hist: number[][];
}

export class ConfusionMatrix {
  readonly numClasses: number;
  /** Row-major numClasses × numClasses counts; Float64 holds integers exactly up to 2^53,
   * far more pixels than any data set has (Uint32 would overflow after ~16k VOC images). */
  readonly counts: Float64Array;

  constructor(numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > 255) {
      throw new Error(`ConfusionMatrix: numClasses must be an integer in [1, 255], got ${numClasses}`);
    }
    this.numClasses = numClasses;
    this.counts = new Float64Array(numClasses * numClasses);
  }

  /** Adds one label map pair. Truth values outside [0, numClasses) (255 = void) are skipped;
   * a prediction outside that range is a bug in the caller and throws. */
  update(truth: Uint8Array, pred: Uint8Array): void {
    const length = truth.length;
    if (pred.length !== length) {
      throw new Error(`ConfusionMatrix.update: truth has ${length} pixels, prediction ${pred.length}`);
    }
    const n = this.numClasses;
    const counts = this.counts;
    for (let i = 0; i < length; i++) {
      const t = truth[i];
      if (t >= n) continue;
      const p = pred[i];
      if (p >= n) throw new Error(`ConfusionMatrix.update: prediction ${p} outside [0, ${n})`);
      counts[t * n + p] += 1;
    }
  }

  /** Adds another matrix's counts (e.g. from another worker). */
  merge(other: ConfusionMatrix): this {
    if (other.numClasses !== this.numClasses) {
      throw new Error(`ConfusionMatrix.merge: ${other.numClasses} classes into ${this.numClasses}`);
    }
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    return this;
  }

  compute(): Metrics {
    return metricsFromCounts(this.counts, this.numClasses);
  }

  toJSON(): ConfusionMatrixJson {
    const n = this.numClasses;
    const hist: number[][] = [];
    for (let t = 0; t < n; t++) hist.push(Array.from(this.counts.subarray(t * n, (t + 1) * n)));
    return { numClasses: n, hist };
  }

  static fromJSON(json: ConfusionMatrixJson): ConfusionMatrix {
    const m = new ConfusionMatrix(json.numClasses);
    if (json.hist.length !== json.numClasses) throw new Error('ConfusionMatrix.fromJSON: hist has the wrong number of rows');
    json.hist.forEach((row, t) => {
      if (row.length !== json.numClasses) throw new Error(`ConfusionMatrix.fromJSON: row ${t} has ${row.length} columns`);
      row.forEach((v, p) => { m.counts[t * json.numClasses + p] = v; });
    });
    return m;
  }
}

function nanmean(values: number[]): number {
  let sum = 0, count = 0;
  for (const v of values) if (!Number.isNaN(v)) { sum += v; count++; }
  return count === 0 ? NaN : sum / count;
}

function metricsFromCounts(counts: Float64Array, n: number): Metrics {
  const rowSum = new Float64Array(n), colSum = new Float64Array(n), diag = new Float64Array(n);
  let total = 0;
  for (let t = 0; t < n; t++) {
    for (let p = 0; p < n; p++) {
      const c = counts[t * n + p];
      rowSum[t] += c;
      colSum[p] += c;
      total += c;
    }
    diag[t] = counts[t * n + t];
  }
  let diagSum = 0;
  for (let k = 0; k < n; k++) diagSum += diag[k];
  // Division is plain IEEE: 0/0 gives NaN, as NumPy does for these classes.
  const perClassAccuracy = Array.from(diag, (d, k) => d / rowSum[k]);
  const perClassIoU = Array.from(diag, (d, k) => d / (rowSum[k] + colSum[k] - d));
  let frequencyWeightedIoU = 0;
  for (let k = 0; k < n; k++) {
    const freq = rowSum[k] / total;
    if (freq > 0) frequencyWeightedIoU += freq * perClassIoU[k];
  }
  return {
    pixelAccuracy: diagSum / total,
    meanAccuracy: nanmean(perClassAccuracy),
    meanIoU: nanmean(perClassIoU),
    // With no pixels at all there is nothing to weight; report NaN like the other metrics.
    frequencyWeightedIoU: total > 0 ? frequencyWeightedIoU : NaN,
    perClassIoU,
    perClassAccuracy,
    pixels: total,
  };
}

/** A ratio as a percentage with two decimals; NaN (a class left out of the means) as '—'. */
export function formatPercent(value: number): string {
  return Number.isNaN(value) ? '—' : (100 * value).toFixed(2);
}

/** A plain-text report: the four metrics, then one row per class with IoU and accuracy (in %). */
export function formatMetricsTable(metrics: Metrics, classNames: readonly string[]): string {
  const n = metrics.perClassIoU.length;
  const names = Array.from({ length: n }, (_, k) => classNames[k] ?? `class ${k}`);
  const nameWidth = Math.max(5, ...names.map((s) => s.length));
  const summary: [string, string][] = [
    ['pixel accuracy %', formatPercent(metrics.pixelAccuracy)],
    ['mean accuracy %', formatPercent(metrics.meanAccuracy)],
    ['mean IoU %', formatPercent(metrics.meanIoU)],
    ['frequency-weighted IoU %', formatPercent(metrics.frequencyWeightedIoU)],
    ['pixels', String(metrics.pixels)],
  ];
  const lines: string[] = [
    ...summary.map(([label, value]) => `${label.padEnd(25)} ${value}`),
    '',
    `${'class'.padEnd(nameWidth)}  ${'IoU %'.padStart(7)}  ${'acc %'.padStart(7)}`,
    `${'-'.repeat(nameWidth)}  ${'-'.repeat(7)}  ${'-'.repeat(7)}`,
  ];
  for (let k = 0; k < n; k++) {
    lines.push(`${names[k].padEnd(nameWidth)}  ${formatPercent(metrics.perClassIoU[k]).padStart(7)}  ${formatPercent(metrics.perClassAccuracy[k]).padStart(7)}`);
  }
  return lines.join('\n') + '\n';
}
