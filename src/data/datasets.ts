// Dataset readers. A dataset is a plain, serialisable description (a class set and a list
// of image/label file pairs), so it can be handed to worker threads as is; reading a pair
// decodes the image (sharp) and the label (palette/colour PNG or SBD .mat).
import { existsSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import { readImageRgb } from '../io/image.js';
import { readInput } from '../io/read-file.js';
import { readClassSet, vocClassSet, type ClassSet } from './classes.js';
import { readLabel } from './labels.js';

export interface SampleEntry {
  id: string;
  /** Image file (anything sharp decodes: JPEG, PNG, …). */
  image: string;
  /** Label file: `.png` (palette, greyscale or colour) or SBD `.mat`. */
  label: string;
}

export type DatasetKind = 'voc' | 'sbd' | 'custom' | 'mixed';

export interface Dataset {
  name: string;
  kind: DatasetKind;
  root: string;
  classes: ClassSet;
  entries: SampleEntry[];
}

/** A pair that could not be used, and why. */
export interface BadSample {
  id: string;
  file: string;
  reason: string;
}

/** One decoded pair: RGB image (HWC bytes) and label map (HW bytes, 255 = void). */
export interface RawSample {
  id: string;
  width: number;
  height: number;
  image: Uint8Array;
  label: Uint8Array;
}

export type SplitSpec = string | { list: string } | { ids: string[] };

export interface ReaderOptions {
  /** A split name (VOC: `ImageSets/Segmentation/<name>.txt`; SBD: `<name>.txt`), a list file, or ids. */
  split?: SplitSpec;
  /** When an id's files are missing: 'throw' (default) stops with an error naming the file; 'skip' drops it into `missing`. */
  onMissing?: 'throw' | 'skip';
  /** Receives each pair dropped with onMissing: 'skip'. */
  missing?: BadSample[];
  /**
   * Classes file or class set. VOC and SBD roots default to the 21 VOC classes, unless the
   * root holds a `classes.json` (as the synthetic dataset does).
   */
  classes?: string | ClassSet;
}

async function classesFor(root: string, opt: string | ClassSet | undefined): Promise<ClassSet> {
  if (typeof opt === 'object') return opt;
  if (typeof opt === 'string') return readClassSet(opt);
  const local = join(root, 'classes.json');
  return existsSync(local) ? readClassSet(local) : vocClassSet();
}

/**
 * Reads an id list: one id per line (only the first word of a line counts, so VOC's
 * "<id> <flag>" class lists also work); blank lines and lines starting with # are ignored.
 * An empty list or a repeated id is an error.
 */
export async function readIdList(path: string): Promise<string[]> {
  return parseIdList(await readInput(path, 'id list', 'utf8'), path);
}

export function parseIdList(text: string, source: string): string[] {
  const ids: string[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (!t || t.startsWith('#')) return;
    const id = t.split(/\s+/)[0]!;
    if (seen.has(id)) throw new Error(`${source}: line ${i + 1}: id "${id}" is listed twice`);
    seen.add(id);
    ids.push(id);
  });
  if (ids.length === 0) throw new Error(`${source}: empty split (no ids)`);
  return ids;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The first of `root` and its sub-folders `inner` (outermost last) that holds both `dirs`. */
function findRoot(root: string, what: string, dirs: [string, string], inner: [string, string[]]): string {
  const r = resolve(root);
  for (const c of [r, join(r, inner[0]), join(r, ...inner[1])]) if (dirs.every((d) => isDir(join(c, d)))) return c;
  throw new Error(`${root}: not ${what} (no ${dirs[0]}/ and ${dirs[1]}/ in it, in ${inner[0]}/ or in ${inner[1].join('/')}/)`);
}

/** Accepts `VOCdevkit/VOC2012`, `VOCdevkit` or the folder holding `VOCdevkit`. */
export function resolveVocRoot(root: string): string {
  return findRoot(root, 'a Pascal VOC root', ['JPEGImages', 'SegmentationClass'], ['VOC2012', ['VOCdevkit', 'VOC2012']]);
}

/** Accepts `benchmark_RELEASE/dataset`, `benchmark_RELEASE` or the folder holding it. */
export function resolveSbdRoot(root: string): string {
  return findRoot(root, 'an SBD root', ['img', 'cls'], ['dataset', ['benchmark_RELEASE', 'dataset']]);
}

async function resolveIds(spec: SplitSpec, namedList: (name: string) => string): Promise<{ ids: string[]; name: string }> {
  if (typeof spec === 'string') {
    // A path to a list file, or a split name.
    if (spec.endsWith('.txt') || spec.includes('/')) return { ids: await readIdList(spec), name: basename(spec, '.txt') };
    return { ids: await readIdList(namedList(spec)), name: spec };
  }
  if ('list' in spec) return { ids: await readIdList(spec.list), name: basename(spec.list, '.txt') };
  if (spec.ids.length === 0) throw new Error('empty split (no ids)');
  return { ids: [...spec.ids], name: 'ids' };
}

function checkFiles(entries: SampleEntry[], opts: ReaderOptions): SampleEntry[] {
  const kept: SampleEntry[] = [];
  for (const e of entries) {
    const missing = !existsSync(e.image) ? e.image : !existsSync(e.label) ? e.label : undefined;
    if (!missing) {
      kept.push(e);
      continue;
    }
    const bad = { id: e.id, file: missing, reason: `missing file for id "${e.id}"` };
    if (opts.onMissing !== 'skip') throw new Error(`${bad.file}: ${bad.reason}`);
    opts.missing?.push(bad);
  }
  return kept;
}

/** Pascal VOC 2012 segmentation: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png`. Default split: train. */
export async function vocDataset(root: string, opts: ReaderOptions = {}): Promise<Dataset> {
  const r = resolveVocRoot(root);
  const { ids, name } = await resolveIds(opts.split ?? 'train', (n) => join(r, 'ImageSets', 'Segmentation', `${n}.txt`));
  return { name: `voc:${name}`, kind: 'voc', root: r, classes: await classesFor(r, opts.classes), entries: checkFiles(vocEntries(r, ids), opts) };
}

export function vocEntries(vocRoot: string, ids: string[]): SampleEntry[] {
  return ids.map((id) => ({ id, image: join(vocRoot, 'JPEGImages', `${id}.jpg`), label: join(vocRoot, 'SegmentationClass', `${id}.png`) }));
}

/** Berkeley SBD: `img/<id>.jpg`, `cls/<id>.mat`, split lists `train.txt` / `val.txt`. Default split: train. */
export async function sbdDataset(root: string, opts: ReaderOptions = {}): Promise<Dataset> {
  const r = resolveSbdRoot(root);
  const { ids, name } = await resolveIds(opts.split ?? 'train', (n) => join(r, `${n}.txt`));
  return { name: `sbd:${name}`, kind: 'sbd', root: r, classes: await classesFor(r, opts.classes), entries: checkFiles(sbdEntries(r, ids), opts) };
}

export function sbdEntries(sbdRoot: string, ids: string[]): SampleEntry[] {
  return ids.map((id) => ({ id, image: join(sbdRoot, 'img', `${id}.jpg`), label: join(sbdRoot, 'cls', `${id}.mat`) }));
}

export interface CustomOptions extends ReaderOptions {
  /** Folder of images (default `<root>/images`). */
  images?: string;
  /** Folder of masks, `<stem>.png` per image (default `<root>/masks`, or `<root>/labels`). */
  masks?: string;
}

const IMAGE_EXTS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.bmp'];

/**
 * A custom dataset: a folder of images, a folder of masks with the same file stems (palette,
 * greyscale or colour PNGs) and a classes file. Without a split, every image that has a mask is used
 * (sorted by id); with one, ids come from `<root>/<split>.txt` or the given list.
 */
export async function customDataset(root: string, opts: CustomOptions = {}): Promise<Dataset> {
  const r = resolve(root);
  const imgDir = opts.images ? resolve(opts.images) : join(r, 'images');
  const maskDir = opts.masks ? resolve(opts.masks) : isDir(join(r, 'masks')) || !isDir(join(r, 'labels')) ? join(r, 'masks') : join(r, 'labels');
  if (!isDir(imgDir)) throw new Error(`${imgDir}: images folder not found`);
  if (!isDir(maskDir)) throw new Error(`${maskDir}: masks folder not found`);
  const classes = typeof opts.classes === 'object' ? opts.classes : await readClassSet(opts.classes ?? join(r, 'classes.json'));
  const byStem = new Map<string, string>();
  for (const f of (await readdir(imgDir)).sort()) {
    const ext = extname(f).toLowerCase();
    if (!IMAGE_EXTS.includes(ext)) continue;
    const stem = basename(f, extname(f));
    if (byStem.has(stem)) throw new Error(`${join(imgDir, f)}: a second image with id "${stem}"`);
    byStem.set(stem, join(imgDir, f));
  }
  let ids: string[];
  let name = 'all';
  if (opts.split !== undefined) {
    ({ ids, name } = await resolveIds(opts.split, (n) => join(r, `${n}.txt`)));
  } else {
    ids = [...byStem.keys()].filter((id) => existsSync(join(maskDir, `${id}.png`)));
    if (ids.length === 0) throw new Error(`${imgDir}: no image has a mask in ${maskDir}`);
  }
  const entries = ids.map((id) => ({ id, image: byStem.get(id) ?? join(imgDir, `${id}.jpg`), label: join(maskDir, `${id}.png`) }));
  return { name: `custom:${name}`, kind: 'custom', root: r, classes, entries: checkFiles(entries, opts) };
}

/** Joins datasets that share a class set (e.g. SBD .mat pairs and VOC .png pairs). */
export function concatDatasets(name: string, ...parts: Dataset[]): Dataset {
  if (parts.length === 0) throw new Error('concatDatasets: nothing to join');
  const first = parts[0]!;
  for (const p of parts) {
    if (p.classes.names.join('\n') !== first.classes.names.join('\n')) throw new Error(`concatDatasets: ${p.name} has other classes than ${first.name}`);
  }
  const entries = parts.flatMap((p) => p.entries);
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.id)) throw new Error(`concatDatasets: id "${e.id}" is in more than one part`);
    seen.add(e.id);
  }
  const kind = new Set(parts.map((p) => p.kind)).size === 1 ? first.kind : 'mixed';
  return { name, kind, root: first.root, classes: first.classes, entries };
}

export type DetectedKind = 'voc' | 'sbd' | 'custom';

/** Guesses what a folder holds: a VOC root, an SBD root, or a custom dataset (images/ + masks/). */
export function detectKind(root: string): DetectedKind {
  try {
    resolveVocRoot(root);
    return 'voc';
  } catch { /* not VOC */ }
  try {
    resolveSbdRoot(root);
    return 'sbd';
  } catch { /* not SBD */ }
  if (isDir(join(root, 'images'))) return 'custom';
  throw new Error(`${root}: neither a VOC root (JPEGImages/, SegmentationClass/), an SBD root (img/, cls/) nor a custom dataset (images/, masks/, classes.json)`);
}

/** Opens any supported dataset root. */
export async function openDataset(root: string, opts: CustomOptions & { kind?: DetectedKind } = {}): Promise<Dataset> {
  const kind = opts.kind ?? detectKind(root);
  if (kind === 'voc') return vocDataset(root, opts);
  if (kind === 'sbd') return sbdDataset(root, opts);
  return customDataset(root, opts);
}

/** Decodes one pair (the image refused above `maxPixels`) and checks that image and label have the same size. */
export async function readSample(entry: SampleEntry, classes: ClassSet, maxPixels?: number): Promise<RawSample> {
  const [img, lab] = await Promise.all([readImageRgb(entry.image, { maxPixels }), readLabel(entry.label, classes)]);
  if (img.width !== lab.width || img.height !== lab.height) {
    throw new Error(`${entry.label}: label is ${lab.width}×${lab.height} but its image ${basename(entry.image)} is ${img.width}×${img.height}`);
  }
  return { id: entry.id, width: img.width, height: img.height, image: img.data, label: lab.data };
}

/** The file named at the start of an error message from the readers (`<path>: <problem>`), if any. */
export function errorFile(e: unknown, entry: SampleEntry): BadSample {
  const msg = e instanceof Error ? e.message : String(e);
  for (const f of [entry.image, entry.label]) {
    if (msg.startsWith(`${f}: `)) return { id: entry.id, file: f, reason: msg.slice(f.length + 2) };
  }
  return { id: entry.id, file: entry.image, reason: msg };
}
