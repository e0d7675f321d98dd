// Label maps from PNG files. VOC labels are palette PNGs whose pixel *index* is the class
// (0-20, 255 = void); fast-png gives those indices directly (sharp would expand them to RGB).
// Greyscale PNGs hold the class directly. RGB(A) masks are mapped back through the class
// colours; a colour that is neither a class nor void is an error listing the colours found.
import { decode as decodePng } from 'fast-png';
import { readInput } from '../io/read-file.js';
import { rgbKey, VOID, type ClassSet } from './classes.js';
import { readSbdLabel, type LabelMap } from './mat.js';

export type { LabelMap } from './mat.js';

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Unpacks 1/2/4-bit samples (rows padded to whole bytes) into one byte per pixel. */
function unpackBits(data: Uint8Array, width: number, height: number, depth: number): Uint8Array {
  const out = new Uint8Array(width * height);
  const rowBytes = Math.ceil((width * depth) / 8);
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = data[y * rowBytes + (bit >> 3)]!;
      out[y * width + x] = (byte >> (8 - depth - (bit & 7))) & mask;
    }
  }
  return out;
}

/** Decodes a label PNG's bytes. `classes` is needed for colour (RGB) masks. */
export function decodeLabelPng(bytes: Uint8Array, source: string, classes?: ClassSet): LabelMap {
  if (bytes.length < 8 || !PNG_SIG.every((v, i) => bytes[i] === v)) throw new Error(`${source}: not a PNG file`);
  let png: ReturnType<typeof decodePng>;
  try {
    png = decodePng(bytes);
  } catch (e) {
    throw new Error(`${source}: not a readable PNG (${(e as Error).message})`);
  }
  const { width, height, channels, depth } = png;
  const n = width * height;
  if (n === 0) throw new Error(`${source}: empty image (${width}×${height})`);
  if (channels <= 2) {
    let out: Uint8Array;
    if (depth < 8) {
      out = unpackBits(png.data as Uint8Array, width, height, depth);
    } else if (depth === 8) {
      const d = png.data as Uint8Array;
      if (channels === 1) out = d.length === n ? new Uint8Array(d.buffer, d.byteOffset, n) : d.slice(0, n);
      else {
        out = new Uint8Array(n);
        for (let i = 0; i < n; i++) out[i] = d[i * 2]!;
      }
    } else {
      const d = png.data as Uint16Array;
      out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const v = d[i * channels]!;
        if (v > 255) throw new Error(`${source}: 16-bit label value ${v} at pixel (${i % width}, ${Math.floor(i / width)}) is above 255`);
        out[i] = v;
      }
    }
    if (out.length < n) throw new Error(`${source}: truncated pixel data`);
    return { data: out, width, height };
  }
  // Colour-coded mask.
  if (depth !== 8) throw new Error(`${source}: ${depth}-bit colour masks are not supported (use 8-bit RGB or a palette PNG)`);
  if (!classes) throw new Error(`${source}: colour (RGB) mask needs a class set with colours to map it back`);
  const lut = new Map<number, number>();
  classes.colors.forEach((c, k) => lut.set(rgbKey(...c), k));
  const vc = classes.voidColor;
  lut.set(rgbKey(...vc), VOID);
  const d = png.data as Uint8Array;
  const out = new Uint8Array(n);
  let unknown: Map<number, number> | undefined;
  let lastKey = -1, lastVal = 0;
  for (let i = 0, p = 0; i < n; i++, p += channels) {
    const key = rgbKey(d[p]!, d[p + 1]!, d[p + 2]!);
    if (key === lastKey) {
      out[i] = lastVal;
      continue;
    }
    const v = lut.get(key);
    if (v === undefined) {
      unknown ??= new Map();
      unknown.set(key, (unknown.get(key) ?? 0) + 1);
      continue;
    }
    lastKey = key;
    lastVal = v;
    out[i] = v;
  }
  if (unknown) {
    const list = [...unknown.entries()].sort((a, b) => b[1] - a[1]);
    const shown = list.slice(0, 8).map(([k, c]) => `(${(k >> 16) & 255}, ${(k >> 8) & 255}, ${k & 255}) × ${c}`);
    throw new Error(`${source}: ${list.length} colour${list.length > 1 ? 's' : ''} not in the palette: ${shown.join(', ')}${list.length > 8 ? ', …' : ''}`);
  }
  return { data: out, width, height };
}

/** Reads a label file: a PNG (palette, greyscale or colour) or an SBD `.mat`. */
export async function readLabel(path: string, classes?: ClassSet): Promise<LabelMap> {
  if (path.toLowerCase().endsWith('.mat')) return readSbdLabel(path);
  return decodeLabelPng(await readInput(path), path, classes);
}
