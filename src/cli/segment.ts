// `fcn segment`: label maps, overlays, class shares and model comparisons for image files.
import path from 'node:path';
import { readClassSet } from '../data/classes.js';
import type { FCN } from '../models/fcn.js';
import { loadModel } from '../models/weights.js';
import { collectImages, compareTitles, segmentFiles } from '../infer/segment-files.js';
import { UsageError, parse, parseNumber } from './args.js';
import { applyEngineFlags, engineFlags, requireFile, writableDir } from './engine-flags.js';

export const SEGMENT_HELP = `Usage:
  fcn segment <image|folder>... --weights w.safetensors [--out DIR] [--classes FILE] [--alpha A]
              [--compare w32.safetensors,w16.safetensors,w8.safetensors]
      For each image (folders: every .jpg/.jpeg/.png inside): <stem>.png, a VOC palette label map
      (pixel value = class index); <stem>_overlay.png; <stem>.json with class pixel shares.
      --compare writes <stem>_compare.png: the image and each model's map side by side, with a
      legend (without --weights, the last compared model writes the other files).
      Default output folder: segments/. --classes: class names (classes.json) for non-VOC models.
`;

const cmd = 'segment';
const usage = (problem: string) => new UsageError(`fcn ${cmd}: ${problem}`);

export async function segmentCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(cmd, argv, {
    ...engineFlags,
    weights: { type: 'string' }, compare: { type: 'string' }, out: { type: 'string' }, classes: { type: 'string' }, alpha: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(SEGMENT_HELP);
    return 0;
  }
  applyEngineFlags(cmd, values);
  if (positionals.length === 0) throw usage('no images given (expected image files or folders)');
  const compareFiles = values.compare === undefined ? [] : values.compare.split(',').map((s) => s.trim());
  if (compareFiles.some((f) => f === '')) throw usage(`--compare must be a comma-separated list of weight files, got '${values.compare}'`);
  if (values.weights === undefined && compareFiles.length === 0) throw usage('--weights is required');
  const alpha = parseNumber(cmd, values.alpha, 'alpha', (n) => n >= 0 && n <= 1, 'in [0, 1]');
  const weightFiles = [...(values.weights !== undefined ? [values.weights] : []), ...compareFiles];
  for (const f of weightFiles) requireFile(cmd, f, 'weights file');
  if (values.classes !== undefined) requireFile(cmd, values.classes, 'classes file');
  let images: string[];
  try {
    images = collectImages(positionals);
  } catch (e) {
    throw usage((e as Error).message);
  }
  const out = values.out ?? 'segments';
  writableDir(cmd, out, 'out');

  // One model per distinct file: a file given both as --weights and in --compare loads once.
  const loaded = new Map<string, FCN>();
  try {
    for (const f of weightFiles) {
      const key = path.resolve(f);
      if (!loaded.has(key)) loaded.set(key, loadModel(f));
    }
    const modelOf = (f: string) => loaded.get(path.resolve(f))!;
    const primary = modelOf(values.weights ?? compareFiles[compareFiles.length - 1]!);
    for (const f of weightFiles) {
      const m = modelOf(f);
      if (m.numClasses !== primary.numClasses) throw usage(`${f} predicts ${m.numClasses} classes, ${values.weights ?? compareFiles[compareFiles.length - 1]} ${primary.numClasses}: models compared must share their classes`);
    }
    let classNames: string[] | undefined;
    if (values.classes !== undefined) {
      classNames = (await readClassSet(values.classes)).names;
      if (classNames.length !== primary.numClasses) throw usage(`${values.classes} names ${classNames.length} classes but the model predicts ${primary.numClasses}`);
    }
    const compareModels = compareFiles.map((source) => ({ model: modelOf(source), source }));
    const titles = compareTitles(compareModels);
    const results = await segmentFiles(images, {
      out,
      model: primary,
      compare: compareModels.map((c, i) => ({ title: titles[i]!, model: c.model })),
      ...(classNames ? { classNames } : {}),
      ...(alpha !== undefined ? { alpha } : {}),
      onImage: (r, done, total) => {
        const top = r.shares.slice(0, 3).map((s) => `${s.name} ${(100 * s.share).toFixed(1)}%`).join(', ');
        process.stdout.write(`[${done}/${total}] ${r.image} ${r.width}×${r.height}: ${top} → ${r.labels}\n`);
      },
    });
    process.stdout.write(`wrote ${results.length} image${results.length === 1 ? '' : 's'} to ${out}\n`);
  } finally {
    for (const m of loaded.values()) m.dispose();
  }
  return 0;
}
