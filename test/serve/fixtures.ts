// Models, pictures and a server for the serve tests. Two kinds of models, both cheap:
//  - narrow random VOC models (21 classes): real networks whose labels are arbitrary but
//    deterministic, for comparing the server with segment() and `fcn predict`;
//  - hand-set "shape" models (the synthetic classes): every convolution passes two colour
//    detectors through (red → disc, blue → box), so a red disc drawn on the page is labelled
//    'disc' without any training — what a trained demo model would do, in no time.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { native } from '../../src/engine/binding.js';
import { engineConfig } from '../../src/engine/config.js';
import { FCN, type FcnKind } from '../../src/models/fcn.js';
import { saveWeights } from '../../src/models/weights.js';
import { SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { createServer, type ServeConfig, type Served } from '../../src/serve/server.js';
import type { Conv2d } from '../../src/nn/layers.js';
import { chromium, type Browser } from 'playwright-core';
import { requires } from '../prereq.js';

export const KINDS: FcnKind[] = ['fcn32', 'fcn16', 'fcn8'];
export const VOC = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012');
export const vocImage = (id: string) => path.join(VOC, 'JPEGImages', `${id}.jpg`);

/** Debian's Chromium, which the page tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);
/** The skip reason of a test that needs Chromium (with CI=true: a failure). */
export const needsChromium = () => requires(hasChromium, `Chromium is not at ${CHROMIUM} (scripts/setup.sh installs it)`);
/** Where the page tests leave their screenshots. */
export const ARTIFACTS = path.resolve(import.meta.dirname, '..', '..', 'test-artifacts', 'serve');

/** Chromium, headless and offline-minded, with any extra flags (a fake camera, say). */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--no-first-run', ...extraArgs],
  });
}

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), `fcn-serve-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Narrow random FCN-32s/16s/8s with 21 VOC classes, written as safetensors. */
export function vocModels(dir: string, width = 0.0625): string[] {
  return KINDS.map((kind, i) => {
    const m = new FCN({ kind, width });
    try {
      m.initialize(11 + i);
      // Zero-initialised skips would make FCN-16s/8s copy FCN-32s: give them something to add.
      for (const l of [m.score4, m.score3]) if (l) randomize(l, 0.05, 100 + i);
      const file = path.join(dir, `voc-${kind}.safetensors`);
      saveWeights(file, m);
      return file;
    } finally {
      m.dispose();
    }
  });
}

function randomize(l: Conv2d, scale: number, seed: number): void {
  let s = seed >>> 0;
  const dims = l.kernel.dims;
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).map(() => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
  l.kernel.assign(native.fromArray(dims, data));
}

/** Sets a layer's kernel (engine layout O,I,KH,KW) and bias from functions of their indices. */
function setLayer(l: Conv2d, kernel: (o: number, i: number, y: number, x: number) => number, bias: (o: number) => number = () => 0): void {
  const [O, I, KH, KW] = l.kernel.dims as [number, number, number, number];
  const k = new Float32Array(O * I * KH * KW);
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let y = 0; y < KH; y++) for (let x = 0; x < KW; x++) k[((o * I + i) * KH + y) * KW + x] = kernel(o, i, y, x);
  l.kernel.assign(native.fromArray(l.kernel.dims, k));
  if (l.bias) l.bias.assign(native.fromArray(l.bias.dims, Float32Array.from({ length: l.bias.dims[0]! }, (_, o) => bias(o))));
}

/**
 * A shape model set by hand: block1_conv1 computes two colour detectors from the BGR input
 * minus the means — red (R' − G' − 0.2·B' − 60) and blue (B' − R' − 0.2·G' − 80), scaled by
 * 0.05 — and every later convolution passes channels 0 and 1 through by their centre tap.
 * The score layers score disc from red and box from blue against a background of 0: score7
 * as 2·red − 1; the skips (score4, score3 on the pools, FCN-16s/8s) as 3·x − 6 and 4·x − 10.
 * The other classes stay lower still.
 */
export function shapeModel(kind: FcnKind, width = 0.0625): FCN {
  const m = new FCN({ kind, width, numClasses: SYNTH_CLASS_NAMES.length, classNames: SYNTH_CLASS_NAMES });
  m.initialize(0);
  const [B, G, R] = [0, 1, 2];
  const detectors: Record<number, number[]> = { 0: [-0.2 * 0.05, -1 * 0.05, 1 * 0.05], 1: [1 * 0.05, -0.2 * 0.05, -1 * 0.05] };
  const detectorBias = [-60 * 0.05, -80 * 0.05];
  void B; void G; void R;
  const centre = (l: Conv2d) => [(l.spec.kernel - 1) / 2, (l.spec.kernel - 1) / 2];
  for (const l of m.layers()) {
    if (l.transposed) continue; // bilinear upsampling, as initialised
    const [cy, cx] = centre(l);
    if (l.name === 'block1_conv1') {
      setLayer(l, (o, i, y, x) => (o < 2 && y === cy && x === cx ? detectors[o]![i]! : 0), (o) => (o < 2 ? detectorBias[o]! : 0));
    } else if (l === m.score7 || l === m.score4 || l === m.score3) {
      // The finer the skip, the more firmly it says "not here" where it sees no colour, so
      // that adding it trims the blobs the coarser maps leave (as trained skips do).
      const [gain, offset] = l === m.score7 ? [2, -1] : l === m.score4 ? [3, -6] : [4, -10];
      setLayer(l, (o, i) => ((o === 1 && i === 0) || (o === 2 && i === 1) ? gain : 0), (o) => (o === 0 ? 0 : o <= 2 ? offset : -5 + offset));
    } else {
      setLayer(l, (o, i, y, x) => (o < 2 && o === i && y === cy && x === cx ? 1 : 0));
    }
  }
  return m;
}

export function shapeModels(dir: string): string[] {
  return KINDS.map((kind) => {
    const m = shapeModel(kind);
    try {
      const file = path.join(dir, `shape-${kind}.safetensors`);
      saveWeights(file, m);
      return file;
    } finally {
      m.dispose();
    }
  });
}

/** A picture with a red disc (and a blue square) on a grey background, as PNG bytes. */
export async function discPicture(size = 128): Promise<Buffer> {
  const rgb = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = (y * size + x) * 3;
      const inDisc = Math.hypot(x - size * 0.3, y - size * 0.35) < size * 0.2;
      const inBox = Math.abs(x - size * 0.72) < size * 0.15 && Math.abs(y - size * 0.7) < size * 0.15;
      const c = inDisc ? [235, 80, 40] : inBox ? [50, 110, 230] : [150, 150, 145];
      rgb[p] = c[0]!; rgb[p + 1] = c[1]!; rgb[p + 2] = c[2]!;
    }
  }
  return sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
}

export interface TestServer extends Served {
  url: string;
  close: () => Promise<void>;
}

/** A server on 127.0.0.1 and a free port, with small limits unless told otherwise. */
export async function startServer(config: Partial<ServeConfig> & Pick<ServeConfig, 'weights'>): Promise<TestServer> {
  const cfg = engineConfig();
  const served = await createServer({
    runRoots: [],
    maxUploadBytes: 2 * 2 ** 20,
    maxPixels: 1_000_000,
    queueLimit: 8,
    threads: cfg.threads,
    precision: cfg.precision,
    pollMs: 200,
    ...config,
  });
  const url = await served.app.listen({ host: '127.0.0.1', port: 0 });
  return { ...served, url, close: () => served.app.close() };
}

/** A PNG whose header claims width × height but whose data is a few bytes: a decompression bomb. */
export function pngBomb(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  // A zlib stream of a few zero rows: decoding it would ask for width × height × 3 bytes.
  const idat = Buffer.from([0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00]);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}

/** A real JPEG whose frame header (SOF) is patched to claim width × height. */
export async function jpegBomb(width: number, height: number): Promise<Buffer> {
  const jpeg = Buffer.from(await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 9, g: 9, b: 9 } } }).jpeg().toBuffer());
  for (let i = 2; i < jpeg.length - 9; ) {
    if (jpeg[i] !== 0xff) throw new Error('jpegBomb: lost in the markers');
    const marker = jpeg[i + 1]!, len = jpeg.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xc2) {
      jpeg.writeUInt16BE(height, i + 5);
      jpeg.writeUInt16BE(width, i + 7);
      return jpeg;
    }
    i += 2 + len;
  }
  throw new Error('jpegBomb: no SOF marker');
}

export const { decode: decodePngBytes } = await import('fast-png');

/** The class index of every pixel of a label PNG returned as a data: URL. */
export function labelsOfDataUrl(url: string): { labels: Uint8Array; width: number; height: number } {
  const b64 = url.replace(/^data:image\/png;base64,/, '');
  const png = decodePngBytes(Buffer.from(b64, 'base64'));
  if (png.channels !== 1 || !png.palette) throw new Error(`not a palette PNG (${png.channels} channels)`);
  return { labels: Uint8Array.from(png.data as Uint8Array), width: png.width, height: png.height };
}
