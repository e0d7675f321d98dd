// A self-contained HTML report of a run: the four metrics, a per-class table, the charts
// (inlined SVG, so the page needs no other file for them), sample predictions and the config.
// Every piece of text is escaped; images are relative links (kept next to the report).
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { readInput } from '../io/read-file.js';
import { formatPercent, type Metrics } from './confusion.js';
// XML's five escapes are HTML's too, for text and quoted attributes.
import { escapeXml as escapeHtml } from './plot.js';

export interface ReportChart {
  title: string;
  /** The path of an SVG document; it is inlined. */
  svgPath: string;
}

/** PNG files, linked: an absolute path is made relative to the report's directory, a relative
 * one is taken as already relative to it. */
export interface ReportSample {
  id: string;
  imagePng: string;
  truthPng: string;
  predPng: string;
}

export interface HtmlReportSpec {
  title: string;
  metrics: Metrics;
  classNames: readonly string[];
  charts: ReportChart[];
  samples: ReportSample[];
  /** The resolved configuration of the run, shown as JSON. */
  config: unknown;
  /** A line under the title, e.g. the model, split and date. */
  subtitle?: string;
}

function imageSource(png: string, reportDir: string): string {
  const link = isAbsolute(png) ? relative(reportDir, png) : png;
  return link.split(sep).map(encodeURIComponent).join('/');
}

/** Strips what may precede the root element of an SVG file, so it can sit inside HTML. */
function inlineSvg(svg: string): string {
  return svg.replace(/^\uFEFF?\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--[\s\S]*?-->\s*)*/, '').trim();
}

const style = `
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #222; margin: 0 auto; max-width: 1100px; padding: 24px; line-height: 1.45; }
h1 { margin-bottom: 4px; } .subtitle { color: #666; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; } th, td { padding: 4px 10px; text-align: left; }
tbody tr:nth-child(odd) { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary { display: flex; flex-wrap: wrap; gap: 12px; }
.summary div { border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.summary .value { font-size: 26px; font-weight: 600; } .summary .label { color: #666; font-size: 13px; }
.bar { background: #4c78a8; height: 10px; display: inline-block; vertical-align: middle; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; } figcaption { color: #666; font-size: 14px; }
.charts svg { max-width: 100%; height: auto; }
.samples img { max-width: 300px; height: auto; image-rendering: pixelated; display: block; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 13px; }
`;

/** The report as an HTML string; image paths are made relative to `reportDir`. */
export function renderHtmlReport(spec: Omit<HtmlReportSpec, 'charts'> & { charts: { title: string; svg: string }[] }, reportDir: string): string {
  const { metrics } = spec;
  const out: string[] = [];
  out.push('<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(spec.title)}</title>`, `<style>${style}</style>`, '</head>', '<body>');
  out.push(`<h1>${escapeHtml(spec.title)}</h1>`);
  if (spec.subtitle) out.push(`<p class="subtitle">${escapeHtml(spec.subtitle)}</p>`);

  out.push('<section id="metrics">', '<h2>Metrics</h2>', '<div class="summary">');
  const summary: [string, number][] = [
    ['mean IoU', metrics.meanIoU], ['pixel accuracy', metrics.pixelAccuracy],
    ['mean accuracy', metrics.meanAccuracy], ['frequency-weighted IoU', metrics.frequencyWeightedIoU],
  ];
  for (const [label, value] of summary) {
    out.push(`<div><div class="value">${formatPercent(value)}</div><div class="label">${escapeHtml(label)} (%)</div></div>`);
  }
  out.push('</div>', `<p>Over ${metrics.pixels.toLocaleString('en-US')} labelled pixels (void excluded).</p>`, '</section>');

  out.push('<section id="classes">', '<h2>Per-class IoU</h2>', '<table>',
    '<thead><tr><th>#</th><th>class</th><th>IoU %</th><th>accuracy %</th><th></th></tr></thead>', '<tbody>');
  metrics.perClassIoU.forEach((iou, k) => {
    const name = spec.classNames[k] ?? `class ${k}`;
    const bar = Number.isFinite(iou) ? `<span class="bar" style="width:${Math.round(iou * 200)}px"></span>` : '';
    out.push(`<tr><td class="num">${k}</td><td>${escapeHtml(name)}</td><td class="num">${formatPercent(iou)}</td><td class="num">${formatPercent(metrics.perClassAccuracy[k])}</td><td>${bar}</td></tr>`);
  });
  out.push('</tbody>', '</table>', '<p>— marks a class absent from both truth and prediction (IoU) or from the truth (accuracy); such classes are left out of the means.</p>', '</section>');

  out.push('<section id="charts">', '<h2>Training curves</h2>');
  if (spec.charts.length === 0) out.push('<p>No charts.</p>');
  else {
    out.push('<div class="charts">');
    for (const chart of spec.charts) out.push(`<figure>${inlineSvg(chart.svg)}<figcaption>${escapeHtml(chart.title)}</figcaption></figure>`);
    out.push('</div>');
  }
  out.push('</section>');

  out.push('<section id="samples">', '<h2>Sample predictions</h2>');
  if (spec.samples.length === 0) out.push('<p>No samples.</p>');
  else {
    out.push('<table class="samples">', '<thead><tr><th>id</th><th>image</th><th>ground truth</th><th>prediction</th></tr></thead>', '<tbody>');
    for (const s of spec.samples) {
      const id = escapeHtml(s.id);
      const img = (png: string, what: string) => `<td><img src="${escapeHtml(imageSource(png, reportDir))}" alt="${id} ${what}" loading="lazy"></td>`;
      out.push(`<tr><td>${id}</td>${img(s.imagePng, 'image')}${img(s.truthPng, 'ground truth')}${img(s.predPng, 'prediction')}</tr>`);
    }
    out.push('</tbody>', '</table>');
  }
  out.push('</section>');

  out.push('<section id="config">', '<h2>Configuration</h2>', `<pre>${escapeHtml(JSON.stringify(spec.config, null, 2) ?? 'null')}</pre>`, '</section>');
  out.push('</body>', '</html>');
  return out.join('\n') + '\n';
}

/** Writes the report to `path`, with the charts read from their files. */
export async function writeHtmlReport(path: string, spec: HtmlReportSpec): Promise<void> {
  const charts = await Promise.all(spec.charts.map(async (chart) => ({ title: chart.title, svg: await readInput(chart.svgPath, 'chart', 'utf8') })));
  const reportDir = dirname(resolve(path));
  writeFileAtomic(path, renderHtmlReport({ ...spec, charts }, reportDir));
}
