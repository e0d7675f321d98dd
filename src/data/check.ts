// Dataset check: every pair decodes, image and label sizes match, label values are classes
// or void. Gives per-class pixel and image counts, the exact pixel count of every label
// value (so two tools can be compared), and every bad pair with its reason.
import { VOID } from './classes.js';
import { errorFile, readSample, type BadSample, type Dataset } from './datasets.js';

export interface ClassCount {
  index: number;
  name: string;
  /** Pixels labelled with this class over the good pairs. */
  pixels: number;
  /** Good pairs in which the class appears. */
  images: number;
}

export interface CheckReport {
  dataset: string;
  kind: string;
  root: string;
  pairs: number;
  ok: number;
  bad: BadSample[];
  classes: ClassCount[];
  voidPixels: number;
  totalPixels: number;
  /** Pixel count of every label value present in the good pairs, keyed by the value. */
  labelValueCounts: Record<string, number>;
  /** Smallest and largest image sizes among the good pairs. */
  minSize: { width: number; height: number } | null;
  maxSize: { width: number; height: number } | null;
  seconds: number;
}

export interface CheckOptions {
  /** Pairs decoded at once (default 4). */
  concurrency?: number;
  /** Pairs already known to be bad (e.g. missing files found when the dataset was opened). */
  missing?: BadSample[];
  onProgress?: (done: number, total: number) => void;
}

export async function checkDataset(ds: Dataset, o: CheckOptions = {}): Promise<CheckReport> {
  const t0 = performance.now();
  const nClasses = ds.classes.names.length;
  const counts = new Float64Array(256);
  const images = new Float64Array(256);
  const bad: BadSample[] = [...(o.missing ?? [])];
  let ok = 0, done = 0;
  let minW = Infinity, minH = Infinity, maxW = 0, maxH = 0;
  const entries = ds.entries;
  let next = 0;
  const worker = async () => {
    const local = new Float64Array(256);
    for (;;) {
      const i = next++;
      if (i >= entries.length) return;
      const e = entries[i]!;
      try {
        const s = await readSample(e, ds.classes);
        local.fill(0);
        const l = s.label;
        for (let k = 0; k < l.length; k++) local[l[k]!]!++;
        const outside: string[] = [];
        for (let v = nClasses; v < 256; v++) if (v !== VOID && local[v]! > 0) outside.push(`${v} (${local[v]} px)`);
        if (outside.length) {
          bad.push({ id: e.id, file: e.label, reason: `label values outside the ${nClasses} classes and 255: ${outside.join(', ')}` });
        } else {
          ok++;
          for (let v = 0; v < 256; v++) {
            if (local[v]! > 0) {
              counts[v]! += local[v]!;
              images[v]!++;
            }
          }
          if (s.width * s.height < minW * minH) { minW = s.width; minH = s.height; }
          if (s.width * s.height > maxW * maxH) { maxW = s.width; maxH = s.height; }
        }
      } catch (err) {
        bad.push(errorFile(err, e));
      }
      o.onProgress?.(++done, entries.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 4) }, worker));
  // Decoding finishes out of order: list bad pairs in dataset order (those found missing when the dataset was opened, by id).
  const order = new Map(entries.map((e, i) => [e.id, i]));
  bad.sort((a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const labelValueCounts: Record<string, number> = {};
  let total = 0;
  counts.forEach((c, v) => {
    if (c > 0) labelValueCounts[String(v)] = c;
    total += c;
  });
  return {
    dataset: ds.name,
    kind: ds.kind,
    root: ds.root,
    pairs: entries.length + (o.missing?.length ?? 0),
    ok,
    bad,
    classes: ds.classes.names.map((name, index) => ({ index, name, pixels: counts[index]!, images: images[index]! })),
    voidPixels: counts[VOID]!,
    totalPixels: total,
    labelValueCounts,
    minSize: ok ? { width: minW, height: minH } : null,
    maxSize: ok ? { width: maxW, height: maxH } : null,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** A human-readable summary of a check report. */
export function formatCheckReport(r: CheckReport): string {
  const lines: string[] = [];
  const pct = (v: number) => (r.totalPixels ? ((100 * v) / r.totalPixels).toFixed(2) : '0.00');
  lines.push(`${r.dataset} (${r.kind}) at ${r.root}`);
  lines.push(`pairs: ${r.pairs}, good: ${r.ok}, bad: ${r.bad.length}  (${r.seconds.toFixed(1)} s)`);
  if (r.minSize && r.maxSize) lines.push(`image sizes: ${r.minSize.width}×${r.minSize.height} to ${r.maxSize.width}×${r.maxSize.height}`);
  const w = Math.max(5, ...r.classes.map((c) => c.name.length));
  lines.push(`${'class'.padEnd(w + 5)} ${'pixels'.padStart(13)} ${'%'.padStart(7)} ${'images'.padStart(7)}`);
  for (const c of r.classes) lines.push(`${String(c.index).padStart(3)}  ${c.name.padEnd(w)} ${String(c.pixels).padStart(13)} ${pct(c.pixels).padStart(7)} ${String(c.images).padStart(7)}`);
  lines.push(`${'255'.padStart(3)}  ${'void'.padEnd(w)} ${String(r.voidPixels).padStart(13)} ${pct(r.voidPixels).padStart(7)}`);
  if (r.bad.length) {
    lines.push('bad pairs:');
    for (const b of r.bad) lines.push(`  ${b.file}: ${b.reason}`);
  }
  return lines.join('\n') + '\n';
}
