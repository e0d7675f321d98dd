// `fcn eval`: the paper's four metrics and per-class IoU of a model on a dataset split, or of
// a folder of label maps made by another tool, scored the same way.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { detectKind, openDataset, resolveSbdRoot, resolveVocRoot, type Dataset, type DetectedKind } from '../data/datasets.js';
import { engineConfig } from '../engine/config.js';
import { evaluate, evaluationToJson, scorePredictions, type EvaluationResult } from '../eval/evaluate.js';
import { formatMetricsTable } from '../report/confusion.js';
import { writeFileAtomic } from '../io/atomic.js';
import { loadModel } from '../models/weights.js';
import { progress } from '../report/progress.js';
import { UsageError, asUsageError, definedOnly, parse, parseNumber, requireString } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { REQUIRED, inferenceEngineOptionSpecs, type CommandSpec } from './help.js';
import { checkInputDir, checkInputFile, checkWeightsArgument, prepareOutputFile } from './paths.js';
import { DEFAULT_MAX_PIXELS } from '../io/image.js';

export const evalSpec = {
  name: 'eval',
  summary: 'the paper\'s four metrics and per-class IoU on a dataset split',
  usage: ['--weights FILE --data ROOT [--split val] [--limit N] [--json] [--out FILE]', '--predictions DIR --data ROOT [--split val] [--json] [--out FILE]'],
  details: `Pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU and per-class IoU over a
split of a VOC, SBD or custom root, each image at its own size, void excluded. --predictions
scores <id>.png label maps made elsewhere (palette indices) the same way.`,
  options: {
    weights: { type: 'string', value: 'FILE', help: 'evaluate this model', default: `${REQUIRED}, or --predictions` },
    predictions: { type: 'string', value: 'DIR', help: 'score the <id>.png label maps in DIR instead', default: 'none' },
    data: { type: 'string', value: 'ROOT', help: 'dataset root: VOC, SBD or custom', default: REQUIRED },
    split: { type: 'string', value: 'NAME', help: 'split name, or a list file of ids', default: 'val; custom roots: every image with a mask' },
    kind: { type: 'string', value: 'K', help: 'voc, sbd or custom', default: 'detected from the root' },
    classes: { type: 'string', value: 'FILE', help: 'class names and colours (classes.json)', default: 'the root\'s classes.json, else the 21 VOC classes' },
    limit: { type: 'string', value: 'N', help: 'score only the first N images', default: 'all' },
    'max-pixels': { type: 'string', value: 'N', help: 'refuse a larger image before decoding it (its header gives the size)', default: String(DEFAULT_MAX_PIXELS) },
    json: { type: 'boolean', help: 'print the metrics as JSON instead of a table', default: 'off' },
    out: { type: 'string', value: 'FILE', help: 'also write the metrics as JSON to FILE', default: 'not written' },
    ...inferenceEngineOptionSpecs,
  },
  examples: [
    'fcn eval --weights fcn8.safetensors --data data/VOCdevkit/VOC2012 --split val --out metrics.json',
    'fcn eval --predictions other-tool/ --data data/VOCdevkit/VOC2012 --split val --json',
  ],
} satisfies CommandSpec;

const cmd = 'eval';
const usage = (problem: string) => new UsageError(`fcn ${cmd}: ${problem}`);

/** Checks the split before opening the dataset, so a typo names the splits that do exist. */
function checkSplit(root: string, kind: DetectedKind, split: string): void {
  if (split.endsWith('.txt') || split.includes('/')) {
    checkInputFile(cmd, 'split', split);
    return;
  }
  // Where a split name's list file lives, per dataset kind.
  const dir = kind === 'voc' ? path.join(resolveVocRoot(root), 'ImageSets', 'Segmentation') : kind === 'sbd' ? resolveSbdRoot(root) : path.resolve(root);
  if (existsSync(path.join(dir, `${split}.txt`))) return;
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((f) => f.endsWith('.txt')).map((f) => f.slice(0, -4)).sort();
  } catch { /* listed as none below */ }
  throw usage(`unknown split '${split}' for ${root} (${names.length ? `available: ${names.join(', ')}` : `no split lists in ${dir}`})`);
}

async function openSplit(root: string, values: { kind?: string; split?: string; classes?: string }): Promise<{ dataset: Dataset; split: string }> {
  if (values.kind !== undefined && !['voc', 'sbd', 'custom'].includes(values.kind)) throw usage(`--kind must be voc, sbd or custom, got '${values.kind}'`);
  const kind = asUsageError(() => (values.kind as DetectedKind | undefined) ?? detectKind(root), (m) => `fcn ${cmd}: ${m}`);
  // A custom dataset without a split list is scored on every image that has a mask.
  const split = values.split ?? (kind === 'custom' ? '' : 'val');
  if (split !== '') checkSplit(root, kind, split);
  if (values.classes !== undefined) checkInputFile(cmd, 'classes', values.classes);
  const dataset = await openDataset(root, { kind, split: split || undefined, classes: values.classes });
  return { dataset, split: split || 'all' };
}

export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parse(evalSpec, argv);
  if (values.weights === undefined && values.predictions === undefined) throw usage('--weights (evaluate a model) or --predictions (score label maps) is required');
  if (values.weights !== undefined && values.predictions !== undefined) throw usage('give --weights or --predictions, not both');
  applyEngineFlags(evalSpec, values);
  const root = requireString(cmd, values.data, 'data');
  const limit = parseNumber(cmd, values.limit, 'limit', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const maxPixels = parseNumber(cmd, values['max-pixels'], 'max-pixels', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  if (values.weights !== undefined) checkWeightsArgument(cmd, 'weights', values.weights);
  if (values.predictions !== undefined) checkInputDir(cmd, 'predictions', values.predictions);
  checkInputDir(cmd, 'data', root);
  if (values.out !== undefined) prepareOutputFile(cmd, 'out', values.out);
  const { dataset, split } = await openSplit(root, values);

  const total = limit === undefined ? dataset.entries.length : Math.min(limit, dataset.entries.length);
  const bar = progress({ label: cmd, total, unit: 'img' });
  const onProgress = () => bar.tick();
  let result: EvaluationResult;
  let source: Record<string, string | number>;
  if (values.weights !== undefined) {
    const model = await loadModel(values.weights);
    try {
      result = await evaluate(model, dataset, { onProgress, ...definedOnly({ limit, maxPixels }) });
      source = { weights: values.weights, model: model.kind, width: model.width, precision: engineConfig().precision };
    } finally {
      model.dispose();
    }
  } else {
    result = await scorePredictions({ predictionsDir: values.predictions!, dataset, onProgress, ...definedOnly({ limit, maxPixels }) });
    source = { predictions: values.predictions! };
  }
  bar.done({ mIoU: result.metrics.meanIoU });

  const json = { dataset: dataset.name, root: dataset.root, split, ...source, ...evaluationToJson(result) };
  const text = JSON.stringify(json, null, 2) + '\n';
  if (values.out !== undefined) writeFileAtomic(values.out, text);
  if (values.json) {
    process.stdout.write(text);
  } else {
    const what = values.weights !== undefined ? `${source.model} (${values.weights})` : `predictions in ${values.predictions}`;
    process.stdout.write(`${what} on ${dataset.name}, ${result.images} image${result.images === 1 ? '' : 's'}\n\n${formatMetricsTable(result.metrics, result.classNames)}`);
    if (values.out !== undefined) process.stdout.write(`\nmetrics: ${values.out}\n`);
  }
  return 0;
}
