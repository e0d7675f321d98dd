// Class sets: names and display colours. VOC's 21 classes are built in; a custom dataset
// brings a JSON classes file. Label value k is class k; 255 is "void" (ignored by loss and metrics).
import { vocPalette } from '../io/image.js';
import { readInput } from '../io/read-file.js';

export type Rgb = [number, number, number];

/** One number per colour, for colour lookups. */
export function rgbKey(r: number, g: number, b: number): number {
  return (r << 16) | (g << 8) | b;
}

/** The label value for "void" pixels: object borders in VOC, padding everywhere. */
export const VOID = 255;

export const VOC_CLASS_NAMES: readonly string[] = [
  'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
];

export interface ClassSet {
  names: string[];
  /** colours[k] is the colour of class k in colour-coded masks and visualisations. */
  colors: Rgb[];
  /** Colour of void pixels in colour-coded masks. */
  voidColor: Rgb;
}

/** The Pascal VOC class set with the VOC palette (void = (224, 224, 192)). */
export function vocClassSet(): ClassSet {
  return classSetFromNames(VOC_CLASS_NAMES);
}

/** Builds a class set from names, colouring the classes with the VOC palette. */
export function classSetFromNames(names: readonly string[]): ClassSet {
  const pal = vocPalette(256);
  if (names.length < 1 || names.length > 255) throw new Error(`a class set needs 1-255 classes, got ${names.length}`);
  return { names: [...names], colors: names.map((_, k) => pal[k]!), voidColor: pal[VOID]! };
}

/** A colour as "#rrggbb" (classes files, weights metadata, the web page). */
export const rgbHex = (c: Rgb) => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

export function parseColor(v: unknown, where: string): Rgb {
  if (typeof v === 'string') {
    const m = /^#?([0-9a-f]{6})$/i.exec(v.trim());
    if (!m) throw new Error(`${where}: colour ${JSON.stringify(v)} is not "#rrggbb"`);
    const n = parseInt(m[1]!, 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  if (Array.isArray(v) && v.length === 3 && v.every((c) => Number.isInteger(c) && c >= 0 && c <= 255)) return [v[0], v[1], v[2]];
  throw new Error(`${where}: colour ${JSON.stringify(v)} is not [r, g, b] (0-255) or "#rrggbb"`);
}

/**
 * Parses a classes file. Accepted forms:
 *   { "classes": [ { "name": "background", "color": [0, 0, 0] }, ... ], "void": [224, 224, 192] }
 *   [ { "name": "background", "color": "#000000" }, ... ]
 * Class k is the k-th entry. "void" (optional) is the colour of ignored pixels in colour masks;
 * "color" may be left out, and then the VOC palette colour of that index is used.
 */
export function parseClassSet(json: unknown, source: string): ClassSet {
  const obj = json as { classes?: unknown; void?: unknown };
  const list = Array.isArray(json) ? json : obj && typeof obj === 'object' ? obj.classes : undefined;
  if (!Array.isArray(list)) throw new Error(`${source}: expected a list of classes or { "classes": [...] }`);
  if (list.length < 1) throw new Error(`${source}: the class list is empty`);
  if (list.length > 255) throw new Error(`${source}: ${list.length} classes; at most 255 are possible (255 is void)`);
  const pal = vocPalette(256);
  const names: string[] = [];
  const colors: Rgb[] = [];
  list.forEach((c: unknown, k: number) => {
    const where = `${source}: class ${k}`;
    const entry = (typeof c === 'string' ? { name: c } : c) as { name?: unknown; color?: unknown; colour?: unknown };
    if (!entry || typeof entry !== 'object' || typeof entry.name !== 'string' || !entry.name) throw new Error(`${where}: needs a "name"`);
    if (names.includes(entry.name)) throw new Error(`${where}: duplicate name "${entry.name}"`);
    names.push(entry.name);
    const col = entry.color ?? entry.colour;
    colors.push(col === undefined ? pal[k]! : parseColor(col, where));
  });
  const voidColor = Array.isArray(json) || obj.void === undefined ? pal[VOID]! : parseColor(obj.void, `${source}: void`);
  const seen = new Map<number, number>();
  colors.forEach((c, k) => {
    const key = rgbKey(c[0], c[1], c[2]);
    if (seen.has(key)) throw new Error(`${source}: classes ${seen.get(key)} and ${k} share the colour (${c.join(', ')})`);
    seen.set(key, k);
  });
  const vkey = rgbKey(...voidColor);
  if (seen.has(vkey)) throw new Error(`${source}: class ${seen.get(vkey)} has the void colour (${voidColor.join(', ')})`);
  return { names, colors, voidColor };
}

export async function readClassSet(path: string): Promise<ClassSet> {
  const text = await readInput(path, 'classes file', 'utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  return parseClassSet(json, path);
}

/** The JSON form of a class set, as readClassSet reads it. */
export function classSetToJson(cs: ClassSet): { classes: { name: string; color: Rgb }[]; void: Rgb } {
  return { classes: cs.names.map((name, k) => ({ name, color: cs.colors[k]! })), void: cs.voidColor };
}
