// Segmenting image files into files: for each image a VOC palette label map (pixel value =
// class index, so any VOC tool reads it), a colour overlay, a JSON of class pixel shares, and
// optionally a side-by-side comparison of several models, next to the ground truth when the
// image has one.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { classSetFromNames, type ClassSet } from '../data/classes.js';
import { readLabel } from '../data/labels.js';
import type { InferencePrecision } from '../engine/config.js';
import { readImageRgb, writeLabelPng, type RgbImage } from '../io/image.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { FCN, FcnKind } from '../models/fcn.js';
import { segmentImage, type InferenceOptions } from './inference.js';
import { classShares, overlay, writeComparison, writeRgbPng, type ClassShare } from '../report/viz.js';

const IMAGE_EXTS = new Set(['.jpg', '.jpeg', '.png']);

/**
 * Expands the inputs into image files: a file is kept as given; a folder contributes every
 * .jpg/.jpeg/.png directly inside it, sorted by name. Missing paths and folders without
 * images are errors naming them.
 */
export function collectImages(inputs: readonly string[]): string[] {
  if (inputs.length === 0) throw new Error('no images given');
  const files: string[] = [];
  for (const input of inputs) {
    let isDir: boolean;
    try {
      isDir = statSync(input).isDirectory();
    } catch {
      throw new Error(`${input}: no such file or folder`);
    }
    if (!isDir) {
      files.push(input);
      continue;
    }
    const found = readdirSync(input, { withFileTypes: true })
      .filter((d) => d.isFile() && IMAGE_EXTS.has(extname(d.name).toLowerCase()))
      .map((d) => d.name)
      .sort();
    if (found.length === 0) throw new Error(`${input}: no .jpg, .jpeg or .png images in this folder`);
    files.push(...found.map((name) => join(input, name)));
  }
  return files;
}

/** The display name of a model kind, as the paper writes it. */
export function modelTitle(kind: FcnKind): string {
  return { fcn32: 'FCN-32s', fcn16: 'FCN-16s', fcn8: 'FCN-8s' }[kind];
}

/** Panel titles for models: the paper's name, plus the file's stem when two share a kind. */
export function compareTitles(models: { model: FCN; source: string }[]): string[] {
  const base = models.map((m) => modelTitle(m.model.kind));
  return base.map((t, i) => (base.filter((u) => u === t).length > 1 ? `${t} (${basename(models[i]!.source, extname(models[i]!.source))})` : t));
}

/**
 * The ground-truth label file of an image, if it has one. With `truthDir`, only
 * `<truthDir>/<stem>.png`. Otherwise, where datasets keep it: an image of a VOC root
 * (`<root>/JPEGImages/<id>.jpg`) has `<root>/SegmentationClass/<id>.png`; any image may have
 * `SegmentationClass/<stem>.png` in its own folder; an image of an SBD root (`img/<id>.jpg`)
 * has `cls/<id>.mat`.
 */
export function groundTruthFile(image: string, truthDir?: string): string | undefined {
  const stem = basename(image, extname(image));
  const folder = dirname(resolve(image));
  const candidates = truthDir !== undefined
    ? [join(truthDir, `${stem}.png`)]
    : [
        ...(basename(folder) === 'JPEGImages' ? [join(dirname(folder), 'SegmentationClass', `${stem}.png`)] : []),
        join(folder, 'SegmentationClass', `${stem}.png`),
        ...(basename(folder) === 'img' ? [join(dirname(folder), 'cls', `${stem}.mat`)] : []),
      ];
  return candidates.find((f) => existsSync(f) && statSync(f).isFile());
}

export interface SegmentFilesOptions {
  /** Output folder (must exist or be creatable by the caller). */
  out: string;
  /** The model whose label map, overlay and shares are written. */
  model: FCN;
  /** Models drawn side by side in `<stem>_compare.png`, in order. */
  compare?: { title: string; model: FCN }[];
  classNames?: readonly string[];
  precision?: InferencePrecision;
  /** Opacity of the class colours in the overlay (default 0.5). */
  alpha?: number;
  /**
   * Ground truth for the comparison pictures: a folder of `<stem>.png` label maps. Without
   * it, each image's ground truth is looked for where datasets keep it (groundTruthFile).
   */
  truthDir?: string;
  /** Classes and colours to read colour-coded (RGB) ground-truth masks with (default: classNames over the VOC palette). */
  truthClasses?: ClassSet;
  /** Refuse images with more decoded pixels than this, before decoding (default: io/image's). */
  maxPixels?: number;
  /** Called after each image's files are written. */
  onImage?: (result: SegmentedFile, done: number, total: number) => void;
}

export interface SegmentedFile {
  image: string;
  stem: string;
  width: number;
  height: number;
  labels: string;
  overlay: string;
  json: string;
  compare?: string;
  /** The ground-truth label file drawn in the comparison, if the image has one. */
  truth?: string;
  shares: ClassShare[];
}

/** Output files of each image; two images with one stem, or an output over an input, are errors. */
function plan(images: string[], out: string, compare: boolean): { image: string; stem: string }[] {
  const byStem = new Map<string, string>();
  const inputs = new Set(images.map((f) => resolve(f)));
  return images.map((image) => {
    const stem = basename(image, extname(image));
    const other = byStem.get(stem);
    if (other !== undefined) throw new Error(`${image}: same name as ${other}; their outputs (${stem}.png, …) would overwrite each other`);
    byStem.set(stem, image);
    for (const suffix of ['.png', '_overlay.png', '.json', ...(compare ? ['_compare.png'] : [])]) {
      const target = resolve(out, stem + suffix);
      if (inputs.has(target)) throw new Error(`${target}: is an input image and would be overwritten by an output; choose another output folder`);
    }
    return { image, stem };
  });
}

/** Segments each image file and writes its outputs into `options.out`. */
export async function segmentFiles(images: readonly string[], options: SegmentFilesOptions): Promise<SegmentedFile[]> {
  const { out, model } = options;
  const compare = options.compare ?? [];
  const items = plan([...images], out, compare.length > 0);
  // Options not given stay undefined: segmentImage takes its defaults for them.
  const seg: InferenceOptions = { precision: options.precision, classNames: options.classNames };
  const results: SegmentedFile[] = [];
  // Decode the next image while the engine works on this one.
  const decode = (i: number): Promise<RgbImage> | undefined => {
    if (i >= items.length) return undefined;
    const p = readImageRgb(items[i]!.image, options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {});
    p.catch(() => undefined);
    return p;
  };
  let next = decode(0);
  for (let i = 0; i < items.length; i++) {
    const { image, stem } = items[i]!;
    const rgb = await next!;
    next = decode(i + 1);
    const result = segmentImage(model, rgb, { ...seg, name: image });
    const shares = classShares(result.labels, result.classes);
    const files: SegmentedFile = {
      image, stem, width: rgb.width, height: rgb.height,
      labels: join(out, `${stem}.png`), overlay: join(out, `${stem}_overlay.png`), json: join(out, `${stem}.json`), shares,
    };
    await writeLabelPng(files.labels, result.labels, rgb.width, rgb.height);
    await writeRgbPng(files.overlay, overlay(rgb, result.labels, options.alpha ?? 0.5));
    if (compare.length > 0) {
      const panels = [];
      const truthFile = groundTruthFile(image, options.truthDir);
      if (truthFile !== undefined) {
        const truth = await readLabel(truthFile, options.truthClasses ?? classSetFromNames(result.classes));
        if (truth.width !== rgb.width || truth.height !== rgb.height) throw new Error(`${truthFile}: the ground truth is ${truth.width}×${truth.height} but ${image} is ${rgb.width}×${rgb.height}`);
        panels.push({ title: 'ground truth', labels: truth.data });
        files.truth = truthFile;
      }
      for (const c of compare) {
        const labels = c.model === model ? result.labels : segmentImage(c.model, rgb, { ...seg, name: image }).labels;
        panels.push({ title: c.title, labels });
      }
      files.compare = join(out, `${stem}_compare.png`);
      await writeComparison(files.compare, { image: rgb, panels, classNames: result.classes });
    }
    const json = {
      image,
      width: rgb.width,
      height: rgb.height,
      model: model.kind,
      labels: basename(files.labels),
      ...(files.truth !== undefined ? { truth: files.truth } : {}),
      classes: shares.map(({ name, index, pixels, share }) => ({ name, index, pixels, share })),
    };
    writeFileAtomic(files.json, JSON.stringify(json, null, 2) + '\n');
    results.push(files);
    options.onImage?.(files, i + 1, items.length);
  }
  return results;
}

