// A synthetic segmentation dataset in Pascal VOC layout: the offline default for the demo
// and the tests. Each scene is a textured background with 1-4 objects of five classes. A
// class is a shape AND a colour family AND a texture, each with variation (size, aspect,
// rotation, hue, saturation, brightness, texture scale); one object in seven takes a colour
// from another family, so colour alone does not decide the class and a network must use
// shape too. Objects overlap (later ones occlude), and, as in VOC, a thin void (255) band
// marks object outlines. Everything comes from one seed: scene i depends only on (seed, i).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { vocPalette, writeLabelPng } from '../io/image.js';
import { classSetToJson, VOID, type ClassSet, type Rgb } from './classes.js';
import { mixSeed, Rng } from './prng.js';

export const SYNTH_CLASS_NAMES: readonly string[] = ['background', 'disc', 'box', 'triangle', 'ring', 'cross'];

/**
 * The synthetic class set, each shape in a colour of its own hue family (FAMILIES below), so a
 * label map looks like the scene; background black, void VOC's.
 */
export function synthClassSet(): ClassSet {
  const colors = [[0, 0, 0] as Rgb, ...FAMILIES.map((f) => hsvToRgb(f.hue, 0.85, 0.95).map(Math.round) as Rgb)];
  return { names: [...SYNTH_CLASS_NAMES], colors, voidColor: vocPalette(256)[VOID]! };
}

export interface SynthOptions {
  out: string;
  /** Number of scenes (default 400); every fifth is in val.txt, the rest in train.txt. */
  count?: number;
  seed?: number;
  /** Side of the square images in pixels (default 128). */
  size?: number;
  /** JPEG quality (default 92). */
  quality?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SynthResult {
  root: string;
  train: string[];
  val: string[];
  /** Pixels per label value over all scenes (index 255 = void). */
  pixelCounts: number[];
}

interface Family { hue: number; spread: number }
// Hue families (degrees) of classes 1-5: red-orange, blue, green, yellow, magenta.
const FAMILIES: Family[] = [
  { hue: 10, spread: 14 },
  { hue: 215, spread: 18 },
  { hue: 120, spread: 22 },
  { hue: 52, spread: 9 },
  { hue: 295, spread: 18 },
];

function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  h = ((h % 360) + 360) % 360;
  const c = v * s, x = c * (1 - Math.abs(((h / 60) % 2) - 1)), m = v - c;
  const [r, g, b] = h < 60 ? [c, x, 0] : h < 120 ? [x, c, 0] : h < 180 ? [0, c, x] : h < 240 ? [0, x, c] : h < 300 ? [x, 0, c] : [c, 0, x];
  return [(r + m) * 255, (g + m) * 255, (b + m) * 255];
}

interface Obj {
  cls: number;
  cx: number;
  cy: number;
  /** Half-size in pixels. */
  r: number;
  aspect: number;
  angle: number;
  color: [number, number, number];
  /** Texture parameters: period / cell size in pixels, contrast, direction. */
  period: number;
  contrast: number;
  dir: number;
  inner: number;
}

/** Signed distance (pixels, negative inside) from a point in the object's frame. */
function sdf(o: Obj, px: number, py: number): number {
  const dx = px - o.cx, dy = py - o.cy;
  const c = Math.cos(o.angle), s = Math.sin(o.angle);
  const u = c * dx + s * dy, v = -s * dx + c * dy;
  const rx = o.r * Math.sqrt(o.aspect), ry = o.r / Math.sqrt(o.aspect);
  const box = (hx: number, hy: number, x: number, y: number) => {
    const qx = Math.abs(x) - hx, qy = Math.abs(y) - hy;
    return Math.hypot(Math.max(qx, 0), Math.max(qy, 0)) + Math.min(Math.max(qx, qy), 0);
  };
  switch (o.cls) {
    case 1: { // disc (ellipse; distance approximated by scaling)
      const k = Math.hypot(u / rx, v / ry);
      return (k - 1) * Math.min(rx, ry);
    }
    case 2: // box
      return box(rx * 0.85, ry * 0.85, u, v);
    case 3: { // triangle: intersection of three half-planes
      let d = -Infinity;
      for (let i = 0; i < 3; i++) {
        const a = (i * 2 * Math.PI) / 3 - Math.PI / 2;
        d = Math.max(d, (u / Math.sqrt(o.aspect)) * Math.cos(a) + v * Math.sqrt(o.aspect) * Math.sin(a) - o.r * 0.55);
      }
      return d;
    }
    case 4: { // ring
      const k = Math.hypot(u, v);
      const mid = o.r * (1 + o.inner) / 2, half = o.r * (1 - o.inner) / 2;
      return Math.abs(k - mid) - half;
    }
    default: { // cross
      const arm = o.r * 0.3;
      return Math.min(box(o.r, arm, u, v), box(arm, o.r, u, v));
    }
  }
}

/** Texture brightness factor at a pixel, about 1 ± contrast. */
function texture(o: Obj, px: number, py: number, d: number, noise: number): number {
  const dx = px - o.cx, dy = py - o.cy;
  switch (o.cls) {
    case 1: // shaded like a sphere: bright centre, darker rim
      return 1 + o.contrast * (0.5 - Math.min(1, Math.hypot(dx, dy) / o.r));
    case 2: // stripes
      return 1 + o.contrast * Math.sin((2 * Math.PI * (dx * Math.cos(o.dir) + dy * Math.sin(o.dir))) / o.period);
    case 3: // speckle
      return 1 + o.contrast * 1.4 * noise;
    case 4: // smooth gradient across the ring
      return 1 + o.contrast * ((dx * Math.cos(o.dir) + dy * Math.sin(o.dir)) / o.r) * 0.7;
    default: { // checker
      const a = Math.floor((dx + 1000) / o.period) + Math.floor((dy + 1000) / o.period);
      return 1 + o.contrast * (a % 2 === 0 ? 0.5 : -0.5) + 0 * d;
    }
  }
}

/** Renders scene `index`: RGB bytes (HWC) and its label map. */
export function renderScene(seed: number, index: number, size: number): { image: Uint8Array; label: Uint8Array } {
  const rng = new Rng(mixSeed(seed, index, 0x5c3e));
  const n = size * size;
  const rgb = new Float32Array(n * 3);
  const label = new Uint8Array(n);

  // Background: a base colour of low saturation, two low-frequency waves, a soft blob or two.
  const bgHue = rng.uniform(0, 360), bgSat = rng.uniform(0.05, 0.35), bgVal = rng.uniform(0.3, 0.85);
  const base = hsvToRgb(bgHue, bgSat, bgVal);
  const alt = hsvToRgb(bgHue + rng.uniform(-60, 60), rng.uniform(0.05, 0.4), rng.uniform(0.25, 0.9));
  const waves = Array.from({ length: 2 }, () => ({
    fx: rng.uniform(-1, 1) * (2 * Math.PI) / size * rng.uniform(1, 4),
    fy: rng.uniform(-1, 1) * (2 * Math.PI) / size * rng.uniform(1, 4),
    ph: rng.uniform(0, 2 * Math.PI),
  }));
  const grainAmp = rng.uniform(4, 14);
  const blobs = Array.from({ length: rng.int(3) }, () => ({
    x: rng.uniform(0, size), y: rng.uniform(0, size), r: rng.uniform(0.1, 0.3) * size,
    col: hsvToRgb(rng.uniform(0, 360), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.9)),
  }));
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let t = 0;
      for (const w of waves) t += Math.sin(w.fx * x + w.fy * y + w.ph);
      t = (t / 2 + 1) / 2; // 0..1
      let r = base[0] + (alt[0] - base[0]) * t, g = base[1] + (alt[1] - base[1]) * t, b = base[2] + (alt[2] - base[2]) * t;
      for (const bl of blobs) {
        const a = Math.max(0, 1 - Math.hypot(x - bl.x, y - bl.y) / bl.r) * 0.6;
        r += (bl.col[0] - r) * a; g += (bl.col[1] - g) * a; b += (bl.col[2] - b) * a;
      }
      const grain = (rng.next() - 0.5) * grainAmp;
      const p = (y * size + x) * 3;
      rgb[p] = r + grain; rgb[p + 1] = g + grain; rgb[p + 2] = b + grain;
    }
  }

  // Objects, back to front.
  const objs: Obj[] = [];
  const count = 1 + rng.int(4);
  for (let k = 0; k < count; k++) {
    const cls = 1 + rng.int(5);
    const fam = rng.chance(1 / 7) ? rng.int(5) : cls - 1;
    const f = FAMILIES[fam]!;
    const color = hsvToRgb(f.hue + rng.uniform(-f.spread, f.spread), rng.uniform(0.55, 0.95), rng.uniform(0.55, 1));
    const r = rng.uniform(0.13, 0.3) * size;
    objs.push({
      cls, r, color,
      cx: rng.uniform(0.1, 0.9) * size, cy: rng.uniform(0.1, 0.9) * size,
      aspect: rng.uniform(0.75, 1.33), angle: rng.uniform(0, Math.PI),
      period: rng.uniform(3, 7) * (size / 128), contrast: rng.uniform(0.12, 0.3), dir: rng.uniform(0, Math.PI), inner: rng.uniform(0.4, 0.6),
    });
  }
  const band = Math.max(0.5, size / 256); // half-width of the void outline
  for (const o of objs) {
    const x0 = Math.max(0, Math.floor(o.cx - 1.5 * o.r - 2)), x1 = Math.min(size - 1, Math.ceil(o.cx + 1.5 * o.r + 2));
    const y0 = Math.max(0, Math.floor(o.cy - 1.5 * o.r - 2)), y1 = Math.min(size - 1, Math.ceil(o.cy + 1.5 * o.r + 2));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const d = sdf(o, x + 0.5, y + 0.5);
        if (d > band) continue;
        const i = y * size + x;
        label[i] = d < -band ? o.cls : VOID;
        const a = Math.min(1, Math.max(0, 0.5 - d));
        if (a <= 0) continue;
        const tex = texture(o, x + 0.5, y + 0.5, d, rng.next() - 0.5);
        const p = i * 3;
        for (let c = 0; c < 3; c++) rgb[p + c] = rgb[p + c]! * (1 - a) + o.color[c]! * tex * a;
      }
    }
  }

  const image = new Uint8Array(n * 3);
  for (let i = 0; i < n * 3; i++) image[i] = Math.max(0, Math.min(255, Math.round(rgb[i]! + (rng.next() - 0.5) * 6)));
  return { image, label };
}

/** Writes a synthetic dataset in VOC layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/, classes.json). */
export async function synthesizeDataset(o: SynthOptions): Promise<SynthResult> {
  const count = o.count ?? 400, seed = (o.seed ?? 0) >>> 0, size = o.size ?? 128, quality = o.quality ?? 92;
  if (!(Number.isInteger(count) && count >= 2)) throw new Error(`synth: count must be an integer ≥ 2, got ${o.count}`);
  if (!(Number.isInteger(size) && size >= 32 && size <= 4096)) throw new Error(`synth: size must be an integer in 32-4096, got ${o.size}`);
  if (!(Number.isInteger(quality) && quality >= 1 && quality <= 100)) throw new Error(`synth: quality must be 1-100, got ${o.quality}`);
  const root = o.out;
  for (const d of ['JPEGImages', 'SegmentationClass', join('ImageSets', 'Segmentation')]) await mkdir(join(root, d), { recursive: true });
  const train: string[] = [], val: string[] = [];
  const pixelCounts = new Array<number>(256).fill(0);
  const width = String(count - 1).length;
  for (let i = 0; i < count; i++) {
    const id = `synth_${String(i).padStart(Math.max(5, width), '0')}`;
    const { image, label } = renderScene(seed, i, size);
    for (let k = 0; k < label.length; k++) pixelCounts[label[k]!]!++;
    await sharp(image, { raw: { width: size, height: size, channels: 3 } }).jpeg({ quality, chromaSubsampling: '4:4:4' }).toFile(join(root, 'JPEGImages', `${id}.jpg`));
    await writeLabelPng(join(root, 'SegmentationClass', `${id}.png`), label, size, size);
    (i % 5 === 4 ? val : train).push(id);
    o.onProgress?.(i + 1, count);
  }
  const seg = join(root, 'ImageSets', 'Segmentation');
  await writeFile(join(seg, 'train.txt'), train.join('\n') + '\n');
  await writeFile(join(seg, 'val.txt'), val.join('\n') + '\n');
  await writeFile(join(seg, 'trainval.txt'), [...train, ...val].sort().join('\n') + '\n');
  await writeFile(join(root, 'classes.json'), JSON.stringify(classSetToJson(synthClassSet()), null, 2) + '\n');
  return { root, train, val, pixelCounts };
}
