// Image files in and out. sharp decodes every common format (and applies EXIF rotation);
// fast-png writes indexed (palette) PNGs, which sharp cannot: a VOC label map must keep the
// class index as the pixel value, with the VOC palette for viewing.
import { writeFile } from 'node:fs/promises';
import sharp, { type Metadata } from 'sharp';
import { encode as encodePng } from 'fast-png';
import { FcnError } from '../errors.js';
import { readInput } from './read-file.js';

export interface RgbImage {
  /** Interleaved RGB bytes, row-major, height × width × 3. */
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * The default limit on an image's decoded pixels: 100 megapixels (300 MB of RGB). A small
 * compressed file can declare a huge image (a "decompression bomb": a 100 kB PNG of one colour
 * can be 30000×30000, 2.7 GB decoded), so the size its header declares is checked first.
 */
export const DEFAULT_MAX_PIXELS = 100_000_000;

export interface ReadImageOptions {
  /** Refuse images with more pixels than this, before decoding (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** Scale down (keeping the aspect ratio) so that neither side exceeds this. */
  fitWithin?: number;
}

function megapixels(n: number): string {
  const mp = n / 1e6;
  return `${mp >= 10 ? mp.toFixed(0) : mp.toPrecision(2)} megapixels`;
}

/**
 * The error for an image over the limit, naming the file and both sizes (code IMAGE_TOO_LARGE:
 * a command adds how to raise its limit).
 */
export function checkPixelLimit(path: string, width: number, height: number, maxPixels: number = DEFAULT_MAX_PIXELS): void {
  if (!(maxPixels > 0)) throw new Error(`maxPixels must be positive, got ${maxPixels}`);
  if (width * height > maxPixels) {
    const problem = `the image is ${width}×${height}, ${megapixels(width * height)}, over the limit of ${megapixels(maxPixels)} for a decoded image`;
    throw new FcnError('IMAGE_TOO_LARGE', problem, { subject: path });
  }
}

/** The header of the image in `input` (the file `path` or its bytes); nothing is decoded. */
async function imageHeader(path: string, input: string | Buffer): Promise<Metadata> {
  try {
    // Only the header is read; sharp's own pixel limit would refuse a large one unnamed.
    return await sharp(input, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new Error(`${path}: not a readable image (${(e as Error).message})`);
  }
}

/** An image file's size from its header alone (nothing is decoded). */
export async function imageSize(path: string): Promise<{ width: number; height: number }> {
  const meta = await imageHeader(path, path);
  if (!meta.width || !meta.height) throw new Error(`${path}: not a readable image (no size in its header)`);
  return { width: meta.width, height: meta.height };
}

/**
 * Decodes an image file to 8-bit RGB (alpha dropped, EXIF orientation applied). The size in
 * the header is checked against `maxPixels` before any pixel is decoded.
 */
export async function readImageRgb(path: string, options: ReadImageOptions = {}): Promise<RgbImage> {
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  const bytes = await readInput(path);
  const meta = await imageHeader(path, bytes);
  if (meta.width && meta.height) checkPixelLimit(path, meta.width, meta.height, maxPixels);
  try {
    // libvips enforces the limit as well, for a format whose header does not state the size.
    let pipeline = sharp(bytes, { limitInputPixels: Number.isFinite(maxPixels) ? Math.floor(maxPixels) : false }).rotate();
    if (options.fitWithin !== undefined) pipeline = pipeline.resize({ width: options.fitWithin, height: options.fitWithin, fit: 'inside', withoutEnlargement: true });
    const { data, info } = await pipeline.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw new Error(`${path}: not a readable image (${(e as Error).message})`);
  }
}

/** The Pascal VOC colour map: class k's bits, three at a time, set the top bits of R, G, B. */
export function vocPalette(size = 256): [number, number, number][] {
  const palette: [number, number, number][] = [];
  for (let k = 0; k < size; k++) {
    let r = 0, g = 0, b = 0, c = k;
    for (let i = 0; i < 8; i++) {
      r |= ((c >> 0) & 1) << (7 - i);
      g |= ((c >> 1) & 1) << (7 - i);
      b |= ((c >> 2) & 1) << (7 - i);
      c >>= 3;
    }
    palette.push([r, g, b]);
  }
  return palette;
}

/** Writes a label map (one byte per pixel, class index or 255) as an indexed PNG with the VOC palette. */
export async function writeLabelPng(path: string, labels: Uint8Array, width: number, height: number): Promise<void> {
  if (labels.length !== width * height) throw new Error(`${path}: label map has ${labels.length} values, expected ${width}×${height}`);
  const png = encodePng({ width, height, data: labels, depth: 8, channels: 1, palette: vocPalette(256) });
  await writeFile(path, png);
}
