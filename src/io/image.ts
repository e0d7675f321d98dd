// Image files in and out. sharp decodes every common format (and applies EXIF rotation);
// fast-png writes indexed (palette) PNGs, which sharp cannot: a VOC label map must keep the
// class index as the pixel value, with the VOC palette for viewing.
import { readFile, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { encode as encodePng } from 'fast-png';

export interface RgbImage {
  /** Interleaved RGB bytes, row-major, height × width × 3. */
  data: Uint8Array;
  width: number;
  height: number;
}

/** Decodes an image file to 8-bit RGB (alpha dropped, EXIF orientation applied). */
export async function readImageRgb(path: string): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const { data, info } = await sharp(bytes).rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
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
