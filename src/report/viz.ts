// Pictures of label maps: VOC colours, overlays on the photo, a side-by-side comparison of
// models with a legend, and the per-epoch grid of sample predictions. Pixels are placed with
// sharp's composite; text (titles, legend) is an SVG layer that sharp's librsvg rasterises,
// so no font or canvas package is needed.
import sharp from 'sharp';
import { vocPalette, type RgbImage } from '../io/image.js';
import { writeFileAtomic } from '../io/atomic.js';
import { escapeXml, font } from './plot.js';

const VOID = 255;
const paletteRgb: Uint8Array = Uint8Array.from(vocPalette(256).flat());

function checkSize(labels: Uint8Array, width: number, height: number, what: string): void {
  if (labels.length !== width * height) throw new Error(`${what}: ${labels.length} labels for a ${width}×${height} image`);
}

/** Colours a label map with the VOC palette (255, void, gets the VOC void colour). */
export function colorize(labels: Uint8Array, width: number, height: number): Uint8Array {
  checkSize(labels, width, height, 'colorize');
  const rgb = new Uint8Array(labels.length * 3);
  for (let i = 0, o = 0; i < labels.length; i++, o += 3) {
    const c = labels[i] * 3;
    rgb[o] = paletteRgb[c];
    rgb[o + 1] = paletteRgb[c + 1];
    rgb[o + 2] = paletteRgb[c + 2];
  }
  return rgb;
}

/** Blends class colours over the photo. Background (class 0) pixels keep the photo as is:
 * VOC's background colour is black, and blending it would only darken the picture. */
export function overlay(image: RgbImage, labels: Uint8Array, alpha = 0.5): RgbImage {
  checkSize(labels, image.width, image.height, 'overlay');
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`overlay: alpha must be in [0, 1], got ${alpha}`);
  const data = new Uint8Array(image.data);
  for (let i = 0, o = 0; i < labels.length; i++, o += 3) {
    const k = labels[i];
    if (k === 0) continue;
    const c = k * 3;
    data[o] = Math.round((1 - alpha) * data[o] + alpha * paletteRgb[c]);
    data[o + 1] = Math.round((1 - alpha) * data[o + 1] + alpha * paletteRgb[c + 1]);
    data[o + 2] = Math.round((1 - alpha) * data[o + 2] + alpha * paletteRgb[c + 2]);
  }
  return { data, width: image.width, height: image.height };
}

export interface ClassShare {
  name: string;
  index: number;
  pixels: number;
  /** Fraction of all pixels of the map (void included in the denominator). */
  share: number;
}

function className(index: number, classNames: readonly string[]): string {
  return index === VOID ? 'void' : classNames[index] ?? `class ${index}`;
}

/** The classes present in a label map, largest first (ties by class index). */
export function classShares(labels: Uint8Array, classNames: readonly string[]): ClassShare[] {
  const counts = new Float64Array(256);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  const shares: ClassShare[] = [];
  counts.forEach((pixels, index) => {
    if (pixels > 0) shares.push({ name: className(index, classNames), index, pixels, share: pixels / labels.length });
  });
  return shares.sort((a, b) => b.pixels - a.pixels || a.index - b.index);
}

/** Writes an RGB image (e.g. an overlay) as a PNG. */
export async function writeRgbPng(path: string, image: RgbImage): Promise<void> {
  const png = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
  writeFileAtomic(path, png);
}

interface Tile {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** Resizes a tile so its longer side is `size`: nearest neighbour for label maps (so class
 * borders stay crisp and no blended colours appear) and whenever enlarging. */
async function resizeTile(tile: Tile, size: number, isLabelMap: boolean): Promise<Tile> {
  const scale = size / Math.max(tile.width, tile.height);
  if (scale === 1) return tile;
  const width = Math.max(1, Math.round(tile.width * scale)), height = Math.max(1, Math.round(tile.height * scale));
  const kernel = isLabelMap || scale > 1 ? 'nearest' : 'lanczos3';
  const data = await sharp(tile.rgb, { raw: { width: tile.width, height: tile.height, channels: 3 } }).resize(width, height, { kernel, fit: 'fill' }).raw().toBuffer();
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height };
}

/** Small images are enlarged by a whole factor so titles fit and pixels stay square. */
async function enlargeTo(tile: Tile, minWidth: number): Promise<Tile> {
  const factor = Math.ceil(minWidth / tile.width);
  return factor > 1 ? resizeTile(tile, Math.max(tile.width, tile.height) * factor, true) : tile;
}

/** Roughly the width of a string in DejaVu Sans at the given size (for layout only). */
const textWidth = (text: string, fontSize: number) => text.length * fontSize * 0.62;

interface LegendLayout {
  svg: string[];
  height: number;
}

/** Swatch-and-name entries for the classes present, wrapped into rows of at most `width`. */
function legendLayout(classIndices: number[], classNames: readonly string[], left: number, top: number, width: number): LegendLayout {
  const svg: string[] = [];
  const rowHeight = 22, fontSize = 13;
  let x = left, y = top;
  for (const index of classIndices) {
    const name = className(index, classNames);
    const entryWidth = 22 + textWidth(name, fontSize) + 16;
    if (x > left && x + entryWidth > left + width) { x = left; y += rowHeight; }
    const c = index * 3;
    svg.push(`<rect x="${x}" y="${y + 3}" width="15" height="15" fill="rgb(${paletteRgb[c]},${paletteRgb[c + 1]},${paletteRgb[c + 2]})" stroke="#555" stroke-width="0.5"/>`);
    svg.push(`<text x="${x + 21}" y="${y + 15}" font-size="${fontSize}" fill="#222">${escapeXml(name)}</text>`);
    x += Math.ceil(entryWidth);
  }
  return { svg, height: classIndices.length ? y - top + rowHeight : 0 };
}

function presentClasses(labelMaps: Uint8Array[]): number[] {
  const seen = new Uint8Array(256);
  for (const labels of labelMaps) for (let i = 0; i < labels.length; i++) seen[labels[i]] = 1;
  const indices: number[] = [];
  seen.forEach((present, index) => { if (present) indices.push(index); });
  return indices; // ascending, so void (255) comes last
}

/** Places tiles and an SVG text layer on a white canvas and writes the PNG. */
async function composePng(path: string, width: number, height: number, tiles: { tile: Tile; left: number; top: number }[], svgBody: string[]): Promise<void> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="${font}">\n${svgBody.join('\n')}\n</svg>`;
  const png = await sharp({ create: { width, height, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite([
      ...tiles.map(({ tile, left, top }) => ({ input: Buffer.from(tile.rgb.buffer, tile.rgb.byteOffset, tile.rgb.length), raw: { width: tile.width, height: tile.height, channels: 3 as const }, left, top })),
      { input: Buffer.from(svg), left: 0, top: 0 },
    ])
    .png()
    .toBuffer();
  writeFileAtomic(path, png);
}

export interface ComparisonSpec {
  image: RgbImage;
  /** One colourised label map per model, e.g. { title: 'FCN-8s', labels }. */
  panels: { title: string; labels: Uint8Array }[];
  classNames: readonly string[];
}

const margin = 12, gap = 10, titleHeight = 26;
/** Comparison images narrower than this are enlarged by a whole factor. */
const MIN_PANEL_WIDTH = 160;

/** One PNG: the photo, then each model's label map, titled, with a legend of the classes present. */
export async function writeComparison(path: string, spec: ComparisonSpec): Promise<{ width: number; height: number }> {
  const { image } = spec;
  for (const panel of spec.panels) checkSize(panel.labels, image.width, image.height, `writeComparison panel "${panel.title}"`);
  const tiles = await Promise.all([
    enlargeTo({ rgb: image.data, width: image.width, height: image.height }, MIN_PANEL_WIDTH),
    ...spec.panels.map((p) => enlargeTo({ rgb: colorize(p.labels, image.width, image.height), width: image.width, height: image.height }, MIN_PANEL_WIDTH)),
  ]);
  const titles = ['image', ...spec.panels.map((p) => p.title)];
  const tileW = tiles[0].width, tileH = tiles[0].height;
  const width = margin * 2 + tiles.length * tileW + (tiles.length - 1) * gap;
  const svg: string[] = [];
  const placed = tiles.map((tile, i) => {
    const left = margin + i * (tileW + gap);
    svg.push(`<text x="${left + tileW / 2}" y="${margin + 17}" text-anchor="middle" font-size="15" font-weight="bold" fill="#222">${escapeXml(titles[i])}</text>`);
    return { tile, left, top: margin + titleHeight };
  });
  const legendTop = margin + titleHeight + tileH + gap;
  const legend = legendLayout(presentClasses(spec.panels.map((p) => p.labels)), spec.classNames, margin, legendTop, width - 2 * margin);
  svg.push(...legend.svg);
  const height = legendTop + legend.height + margin;
  await composePng(path, width, height, placed, svg);
  return { width, height };
}

export interface SampleRow {
  image: RgbImage;
  truth: Uint8Array;
  pred: Uint8Array;
}

export interface SampleGridOptions {
  /** Each cell is scaled so its longer side is this many pixels (default 256). */
  cellSize?: number;
  /** With class names, a legend of the classes present is drawn under the grid. */
  classNames?: readonly string[];
  title?: string;
}

/** A grid of validation samples, one row each: image | ground truth | prediction. */
export async function writeSampleGrid(path: string, rows: SampleRow[], options: SampleGridOptions = {}): Promise<{ width: number; height: number }> {
  if (rows.length === 0) throw new Error('writeSampleGrid: no samples');
  const cellSize = options.cellSize ?? 256;
  const cellRows = await Promise.all(rows.map(async ({ image, truth, pred }, r) => {
    checkSize(truth, image.width, image.height, `writeSampleGrid row ${r} truth`);
    checkSize(pred, image.width, image.height, `writeSampleGrid row ${r} prediction`);
    const { width, height } = image;
    return Promise.all([
      resizeTile({ rgb: image.data, width, height }, cellSize, false),
      resizeTile({ rgb: colorize(truth, width, height), width, height }, cellSize, true),
      resizeTile({ rgb: colorize(pred, width, height), width, height }, cellSize, true),
    ]);
  }));
  const cellW = Math.max(...cellRows.map((cells) => cells[0].width));
  const cellH = Math.max(...cellRows.map((cells) => cells[0].height));
  const width = margin * 2 + 3 * cellW + 2 * gap;
  const svg: string[] = [];
  let top = margin;
  if (options.title) {
    svg.push(`<text x="${width / 2}" y="${top + 17}" text-anchor="middle" font-size="16" font-weight="bold" fill="#222">${escapeXml(options.title)}</text>`);
    top += titleHeight;
  }
  ['image', 'ground truth', 'prediction'].forEach((title, c) => {
    svg.push(`<text x="${margin + c * (cellW + gap) + cellW / 2}" y="${top + 17}" text-anchor="middle" font-size="14" font-weight="bold" fill="#222">${title}</text>`);
  });
  top += titleHeight;
  const placed = cellRows.flatMap((cells, r) => cells.map((tile, c) => ({
    tile,
    // Centred in its cell, so samples of different sizes line up.
    left: margin + c * (cellW + gap) + Math.floor((cellW - tile.width) / 2),
    top: top + r * (cellH + gap) + Math.floor((cellH - tile.height) / 2),
  })));
  let height = top + rows.length * (cellH + gap) - gap + margin;
  if (options.classNames) {
    const legend = legendLayout(presentClasses(rows.flatMap((r) => [r.truth, r.pred])), options.classNames, margin, height, width - 2 * margin);
    svg.push(...legend.svg);
    height += legend.height + margin;
  }
  await composePng(path, width, height, placed, svg);
  return { width, height };
}
