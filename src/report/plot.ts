// Line charts of per-epoch series (loss, mean IoU; train and val) as SVG, and PNG by letting
// sharp's librsvg rasterise that SVG.
//
// Why no plotting package: the charts we need are a few polylines with axes, ticks and a
// legend. Writing that SVG by hand is ~150 lines with no dependency, renders the same bytes
// for the same data (so reports can be diffed and tested), and needs no browser or canvas
// binding; Node plotting libraries either drive a headless browser, need native canvas
// builds, or pull in a DOM shim to produce the same few elements.
import sharp from 'sharp';
import { writeFileAtomic } from '../io/atomic.js';

export interface Series {
  name: string;
  /** [x, y] pairs in x order; a non-finite y (or x) leaves a gap in the line. */
  points: [number, number][];
  /** CSS colour; defaults to the next colour of a fixed palette. */
  color?: string;
  dashed?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
}

// Matplotlib's default cycle: familiar, and distinguishable by most colour-blind readers.
const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
export const font = 'DejaVu Sans, Helvetica, Arial, sans-serif';

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

interface Axis {
  min: number;
  max: number;
  ticks: number[];
  decimals: number;
}

/** A tick step of 1, 2 or 5 × 10^k giving about `target` intervals over the range. */
function niceStep(range: number, target: number): number {
  const raw = range / target;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const normalised = raw / magnitude;
  return (normalised < 1.5 ? 1 : normalised < 3 ? 2 : normalised < 7 ? 5 : 10) * magnitude;
}

function makeAxis(values: number[], integerTicks: boolean, padFraction: number): Axis {
  let min = values.length ? Math.min(...values) : 0;
  let max = values.length ? Math.max(...values) : 1;
  if (min !== max && padFraction > 0) {
    // Keep extreme points off the frame, where a marker would be half hidden.
    const pad = (max - min) * padFraction;
    min -= pad;
    max += pad;
  } else if (min === max) {
    // A single point or a constant series: give it room rather than dividing by a zero range.
    const pad = integerTicks ? 1 : Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  }
  let step = niceStep(max - min, 5);
  if (integerTicks) step = Math.max(1, Math.round(step));
  const decimals = Math.min(12, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  const first = Math.floor(min / step + 1e-9) * step;
  const last = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; first + i * step <= last + step * 1e-9; i++) ticks.push(Number((first + i * step).toFixed(decimals)));
  return { min: first, max: last, ticks, decimals };
}

const f = (v: number) => v.toFixed(2);

/** Renders the chart as a standalone SVG document (deterministic for the same spec). */
export function lineChartSvg(spec: ChartSpec): string {
  const width = spec.width ?? 720;
  const height = spec.height ?? 420;
  const series = spec.series.map((s, i) => ({ ...s, color: s.color ?? palette[i % palette.length] }));
  const finite = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const xs = finite.map(([x]) => x);
  const xAxis = makeAxis(xs, xs.every((x) => Number.isInteger(x)), 0);
  const yAxis = makeAxis(finite.map(([, y]) => y), false, 0.03);

  const legendWidth = series.length ? 44 + 7.5 * Math.max(...series.map((s) => s.name.length)) : 0;
  const left = 72, top = 44, bottom = 56, right = 20 + legendWidth;
  const plotW = width - left - right, plotH = height - top - bottom;
  const px = (x: number) => left + ((x - xAxis.min) / (xAxis.max - xAxis.min)) * plotW;
  const py = (y: number) => top + plotH - ((y - yAxis.min) / (yAxis.max - yAxis.min)) * plotH;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${font}">`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${f(left + plotW / 2)}" y="26" text-anchor="middle" font-size="17" font-weight="bold" fill="#222">${escapeXml(spec.title)}</text>`);

  // Grid and ticks.
  for (const t of yAxis.ticks) {
    const y = f(py(t));
    out.push(`<line x1="${left}" y1="${y}" x2="${f(left + plotW)}" y2="${y}" stroke="#e4e4e4" stroke-width="1"/>`);
    out.push(`<line x1="${left - 5}" y1="${y}" x2="${left}" y2="${y}" stroke="#333" stroke-width="1"/>`);
    out.push(`<text x="${left - 8}" y="${y}" dy="0.35em" text-anchor="end" font-size="12" fill="#333">${t.toFixed(yAxis.decimals)}</text>`);
  }
  for (const t of xAxis.ticks) {
    const x = f(px(t));
    out.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${f(top + plotH)}" stroke="#e4e4e4" stroke-width="1"/>`);
    out.push(`<line x1="${x}" y1="${f(top + plotH)}" x2="${x}" y2="${f(top + plotH + 5)}" stroke="#333" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${f(top + plotH + 20)}" text-anchor="middle" font-size="12" fill="#333">${t.toFixed(xAxis.decimals)}</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${f(plotW)}" height="${f(plotH)}" fill="none" stroke="#333" stroke-width="1"/>`);
  out.push(`<text x="${f(left + plotW / 2)}" y="${height - 12}" text-anchor="middle" font-size="13" fill="#222">${escapeXml(spec.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${f(top + plotH / 2)}) rotate(-90)" text-anchor="middle" font-size="13" fill="#222">${escapeXml(spec.yLabel)}</text>`);

  // Lines, broken at non-finite values; markers so single points and gaps' ends stay visible.
  for (const s of series) {
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    const segments: [number, number][][] = [[]];
    for (const [x, y] of s.points) {
      if (Number.isFinite(x) && Number.isFinite(y)) segments[segments.length - 1].push([x, y]);
      else if (segments[segments.length - 1].length) segments.push([]);
    }
    const markAll = s.points.length <= 60;
    for (const segment of segments) {
      if (segment.length > 1) {
        const coordinates = segment.map(([x, y]) => `${f(px(x))},${f(py(y))}`).join(' ');
        out.push(`<polyline points="${coordinates}" fill="none" stroke="${s.color}" stroke-width="2"${dash} stroke-linejoin="round"/>`);
      }
      if (markAll || segment.length === 1) {
        for (const [x, y] of segment) out.push(`<circle cx="${f(px(x))}" cy="${f(py(y))}" r="3" fill="${s.color}"/>`);
      }
    }
  }

  // Legend to the right of the plot, where it can never hide a line.
  series.forEach((s, i) => {
    const x = left + plotW + 16, y = top + 10 + i * 20;
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    out.push(`<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    out.push(`<circle cx="${x + 11}" cy="${y}" r="3" fill="${s.color}"/>`);
    out.push(`<text x="${x + 28}" y="${y}" dy="0.35em" font-size="12" fill="#222">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Writes `<pathWithoutExt>.svg` and `<pathWithoutExt>.png` for the chart; `scale` 2 gives a sharper PNG for high-DPI screens. */
export async function writeChart(pathWithoutExt: string, spec: ChartSpec, options: { scale?: number } = {}): Promise<{ svgPath: string; pngPath: string }> {
  const svg = lineChartSvg(spec);
  const svgPath = `${pathWithoutExt}.svg`, pngPath = `${pathWithoutExt}.png`;
  writeFileAtomic(svgPath, svg);
  writeFileAtomic(pngPath, await sharp(Buffer.from(svg), { density: 72 * (options.scale ?? 1) }).png().toBuffer());
  return { svgPath, pngPath };
}
