// `fcn segment`: label maps, overlays, class shares and model comparisons for image files.
import path from 'node:path';
import { readClassSet } from '../data/classes.js';
import type { FCN } from '../models/fcn.js';
import { loadModel } from '../models/weights.js';
import { collectImages, compareTitles, segmentFiles } from '../infer/segment-files.js';
import { UsageError, asUsageError, definedOnly, parse, parseNumber } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { REQUIRED, inferenceEngineOptionSpecs, type CommandSpec } from './help.js';
import { checkInputDir, checkInputFile, checkWeightsArgument, prepareOutputDir } from './paths.js';
import { DEFAULT_MAX_PIXELS } from '../io/image.js';

export const segmentSpec = {
  name: 'segment',
  summary: 'label maps, overlays and model comparisons for image files',
  usage: ['IMAGE|FOLDER... --weights FILE [--out DIR] [--classes FILE] [--alpha A]', 'IMAGE|FOLDER... [--weights FILE] --compare FILE,FILE,... [--labels DIR] [--out DIR]'],
  details: `For each image (a folder gives every .jpg/.jpeg/.png in it): <stem>.png, a VOC palette label
map (pixel value = class index); <stem>_overlay.png; <stem>.json with class pixel shares.
--compare writes <stem>_compare.png: the image, its ground truth when it has one, and each
model's map side by side with a legend (without --weights, the last compared model writes the
other files). Ground truth: <stem>.png in --labels DIR; else, for an image of a VOC root,
SegmentationClass/<id>.png of that root, or SegmentationClass/<stem>.png in the image's folder.`,
  positionals: 'IMAGE|FOLDER...',
  options: {
    weights: { type: 'string', value: 'FILE', help: 'the model whose label maps, overlays and shares are written', default: `${REQUIRED}, unless --compare` },
    compare: { type: 'string', value: 'FILES', help: 'comma-separated weight files drawn side by side in <stem>_compare.png', default: 'no comparison' },
    labels: { type: 'string', value: 'DIR', help: 'ground-truth label maps (<stem>.png) for the comparison', default: 'found next to each image, if any' },
    out: { type: 'string', value: 'DIR', help: 'output folder', default: 'segments' },
    classes: { type: 'string', value: 'FILE', help: 'class names and colours (classes.json) for non-VOC models', default: 'the 21 VOC classes' },
    alpha: { type: 'string', value: 'A', help: 'opacity of the class colours in the overlay, in [0, 1]', default: '0.5' },
    'max-pixels': { type: 'string', value: 'N', help: 'refuse a larger image before decoding it (its header gives the size)', default: String(DEFAULT_MAX_PIXELS) },
    ...inferenceEngineOptionSpecs,
  },
  examples: [
    'fcn segment photos/ --weights fcn8.safetensors --out segments/',
    'fcn segment data/VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg --compare fcn32.safetensors,fcn16.safetensors,fcn8.safetensors',
  ],
} satisfies CommandSpec;

const cmd = 'segment';
const usage = (problem: string) => new UsageError(`fcn ${cmd}: ${problem}`);

export async function segmentCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(segmentSpec, argv);
  applyEngineFlags(segmentSpec, values);
  if (positionals.length === 0) throw usage('no images given (expected image files or folders)');
  const compareFiles = values.compare === undefined ? [] : values.compare.split(',').map((s) => s.trim());
  if (compareFiles.some((f) => f === '')) throw usage(`--compare must be a comma-separated list of weight files, got '${values.compare}'`);
  if (values.weights === undefined && compareFiles.length === 0) throw usage('--weights is required');
  const alpha = parseNumber(cmd, values.alpha, 'alpha', (n) => n >= 0 && n <= 1, 'in [0, 1]');
  const maxPixels = parseNumber(cmd, values['max-pixels'], 'max-pixels', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const weightFiles = [...(values.weights !== undefined ? [values.weights] : []), ...compareFiles];
  if (values.weights !== undefined) checkWeightsArgument(cmd, 'weights', values.weights);
  for (const f of compareFiles) checkWeightsArgument(cmd, 'compare', f);
  if (values.classes !== undefined) checkInputFile(cmd, 'classes', values.classes);
  if (values.labels !== undefined) {
    if (compareFiles.length === 0) throw usage('--labels gives the ground truth of --compare pictures: add --compare');
    checkInputDir(cmd, 'labels', values.labels);
  }
  const images = asUsageError(() => collectImages(positionals), (m) => `fcn ${cmd}: ${m}`);
  const out = values.out ?? 'segments';
  prepareOutputDir(cmd, 'out', out);

  // One model per distinct file: a file given both as --weights and in --compare loads once.
  const loaded = new Map<string, FCN>();
  try {
    for (const f of weightFiles) {
      const key = path.resolve(f);
      if (!loaded.has(key)) loaded.set(key, await loadModel(f));
    }
    const modelOf = (f: string) => loaded.get(path.resolve(f))!;
    const primary = modelOf(values.weights ?? compareFiles[compareFiles.length - 1]!);
    for (const f of weightFiles) {
      const m = modelOf(f);
      if (m.numClasses !== primary.numClasses) throw usage(`${f} predicts ${m.numClasses} classes, ${values.weights ?? compareFiles[compareFiles.length - 1]} ${primary.numClasses}: models compared must share their classes`);
    }
    const classSet = values.classes !== undefined ? await readClassSet(values.classes) : undefined;
    if (classSet && classSet.names.length !== primary.numClasses) throw usage(`${values.classes} names ${classSet.names.length} classes but the model predicts ${primary.numClasses}`);
    const compareModels = compareFiles.map((source) => ({ model: modelOf(source), source }));
    const titles = compareTitles(compareModels);
    const results = await segmentFiles(images, {
      out,
      model: primary,
      compare: compareModels.map((c, i) => ({ title: titles[i]!, model: c.model })),
      ...definedOnly({ alpha, maxPixels, truthDir: values.labels }),
      ...(classSet ? { classNames: classSet.names, truthClasses: classSet } : {}),
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
