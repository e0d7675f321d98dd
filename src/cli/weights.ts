// `fcn weights fetch|list|inspect|convert`: known pretrained weights, the per-user cache,
// and any weight file (safetensors, Keras .h5, Caffe .caffemodel) looked at or converted.
import { basename, resolve } from 'node:path';
import { formatBytes, progressPrinter } from '../io/download.js';
import { f32, writeSafetensors, type SafetensorsTensor } from '../io/safetensors.js';
import { readWeightSource } from '../io/weight-source.js';
import type { WeightSource } from '../io/weight-types.js';
import {
  KNOWN_WEIGHTS, KNOWN_WEIGHTS_NAMES, type KnownWeightsName, cacheDir, cacheState, fetchWeights, isKnownWeights, urlVariable, weightsUrl,
} from '../io/weights-cache.js';
import { modelFromSource, saveWeights } from '../models/weights.js';
import { WEIGHTS_FORMAT, weightsMetadata } from '../models/weights-layout.js';
import { prepareOutputFile, resolveWeightsArgument } from './paths.js';
import { UsageError, definedOnly, parse, parseNumber, runSubcommand } from './args.js';
import type { CommandSpec } from './help.js';

const KNOWN = KNOWN_WEIGHTS_NAMES.join(', ');

export const weightsFetchSpec = {
  name: 'weights fetch',
  summary: 'download known weights into the cache',
  usage: ['<name>... [--force] [--url URL] [options]'],
  details: `Downloads known weights into the cache (${KNOWN}), resuming a partial download
(<file>.part) and checking the size and md5 where they are known; the file gets its final name
only when whole. A progress bar goes to stderr, the cached file's path to stdout.`,
  positionals: '<name>...',
  options: {
    force: { type: 'boolean', help: 'download again even if cached (a partial download is discarded too)', default: 'off' },
    url: { type: 'string', value: 'URL', help: 'download from a mirror instead (one name only); also FCN_WEIGHTS_<NAME>_URL, e.g. FCN_WEIGHTS_VGG16_NOTOP_URL', default: 'the known address' },
    retries: { type: 'string', value: 'N', help: 'automatic resumes after a dropped connection', default: '3' },
    quiet: { type: 'boolean', help: 'no progress or messages', default: 'off' },
  },
  examples: ['fcn weights fetch vgg16-notop fcn8s'],
} satisfies CommandSpec;

export const weightsListSpec = {
  name: 'weights list',
  summary: 'known weights, sizes, what is cached',
  usage: ['[--json]'],
  details: `Lists the known weights: name, size, whether cached (or partly downloaded), description, and
the cache folder ($FCN_HOME/weights, else $XDG_CACHE_HOME/fcn/weights, else ~/.cache/fcn/weights).`,
  options: { json: { type: 'boolean', help: 'the same as JSON, with addresses and file paths', default: 'off' } },
  examples: ['fcn weights list'],
} satisfies CommandSpec;

export const weightsInspectSpec = {
  name: 'weights inspect',
  summary: 'format, network, tensors of a weight file',
  usage: ['<file|name> [--json]'],
  details: `Reads a weight file (safetensors, Keras .h5 or Caffe .caffemodel, detected by content) or the
cached file of a known name, and prints its format, the network it implies (model, style,
width, classes, backbone, skip scales), every tensor with its shape in the project's naming
and Keras layout, and what the reader noted (e.g. layers left out).`,
  positionals: '<file|name>',
  options: { json: { type: 'boolean', help: 'the same as JSON', default: 'off' } },
  examples: ['fcn weights inspect fcn8s', 'fcn weights inspect run/checkpoints/best.safetensors'],
} satisfies CommandSpec;

export const weightsConvertSpec = {
  name: 'weights convert',
  summary: 'any weight file to the project\'s safetensors',
  usage: ['<in> <out.safetensors>'],
  details: `Converts any weight file the project reads (or the cached file of a known name) to the
project's safetensors: a whole model (FCN-32s/16s/8s) is loaded and saved as a model file; a
backbone-only file (VGG16 ImageNet) keeps its tensors as they are, in the project's naming and
layouts, with its metadata. The output is written atomically.`,
  positionals: '<in> <out.safetensors>',
  options: {},
  examples: ['fcn weights convert fcn8s fcn8s-caffe.safetensors', 'fcn weights convert vgg16 vgg16.safetensors'],
} satisfies CommandSpec;

const SUBCOMMANDS = [weightsFetchSpec, weightsListSpec, weightsInspectSpec, weightsConvertSpec];

const HELP = `fcn weights — pretrained weights and weight files

Usage:
${SUBCOMMANDS.map((c) => `  ${`fcn ${c.name} ${c.usage[0]}`.padEnd(58)}  ${c.summary}`).join('\n')}

Known names: ${KNOWN}.
Cache: $FCN_HOME/weights, else $XDG_CACHE_HOME/fcn/weights, else ~/.cache/fcn/weights.
inspect and convert also take a known name: its file in the cache.
Each subcommand answers --help.
`;

const usage = (msg: string) => new UsageError(`fcn weights ${msg}`);

export async function weightsCommand(argv: string[]): Promise<number> {
  return runSubcommand('weights', argv, HELP, { fetch: fetchCmd, list: listCmd, inspect: inspectCmd, convert: convertCmd });
}

async function fetchCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parse(weightsFetchSpec, argv);
  if (positionals.length === 0) throw usage(`fetch: expected the name of known weights (${KNOWN})`);
  // Check every name before downloading anything: a typo in the third name should not cost two downloads first.
  const unknown = positionals.find((n) => !isKnownWeights(n));
  if (unknown !== undefined) throw usage(`fetch: unknown weights '${unknown}' (known: ${KNOWN})`);
  if (values.url !== undefined && positionals.length > 1) throw usage(`fetch: --url gives one address, but ${positionals.length} names were given`);
  const retries = parseNumber('weights fetch', values.retries, 'retries', (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0');
  const quiet = values.quiet === true;
  const log = (m: string) => { if (!quiet) process.stderr.write(`${m}\n`); };
  for (const name of positionals) {
    const url = weightsUrl(name, process.env, values.url);
    log(`${name}: ${KNOWN_WEIGHTS[name as KnownWeightsName].description}\n  from ${url}`);
    const r = await fetchWeights(name, {
      ...definedOnly({ url: values.url, retries }),
      force: values.force === true,
      ...(quiet ? {} : { onProgress: progressPrinter(name), onNote: log }),
    });
    log(r.cached ? `  already cached (${formatBytes(r.bytes)}; --force downloads again)` : `  downloaded ${formatBytes(r.bytes)}`);
    process.stdout.write(`${r.path}\n`);
  }
  return 0;
}

function listCmd(argv: string[]): number {
  const { values } = parse(weightsListSpec, argv);
  const rows = KNOWN_WEIGHTS_NAMES.map((name) => ({ name, k: KNOWN_WEIGHTS[name], state: cacheState(name) }));
  if (values.json) {
    const json = {
      cacheDir: cacheDir(),
      weights: rows.map(({ name, k, state }) => ({
        name, description: k.description, url: weightsUrl(name), urlVariable: urlVariable(name), file: k.file, format: k.format,
        bytes: k.bytes ?? null, approxBytes: k.approxBytes, md5: k.md5 ?? null,
        state: state.state, path: state.path, ...(state.state !== 'absent' ? { bytesOnDisk: state.bytes } : {}),
      })),
    };
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    return 0;
  }
  const table = rows.map(({ name, k, state }) => [
    name,
    k.bytes !== undefined ? formatBytes(k.bytes) : `~${formatBytes(k.approxBytes)}`,
    state.state === 'cached' ? 'yes' : state.state === 'partial' ? `partial (${formatBytes(state.bytes)})` : 'no',
    k.description,
  ]);
  const header = ['name', 'size', 'cached', 'description'];
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i]!) : c)).join('  ');
  process.stdout.write(`${[line(header), ...table.map(line)].join('\n')}\n\ncache: ${cacheDir()}\n`);
  return 0;
}

/** The width multiplier and class count as the metadata says, else as the shapes imply. */
function impliedNetwork(source: WeightSource): Record<string, string> {
  const m = source.metadata;
  const net: Record<string, string> = {};
  if (m['model'] !== undefined) net['model'] = m['model'];
  else net['model'] = m['backbone'] !== undefined ? `none (a ${m['backbone']} backbone)` : 'not recorded';
  if (m['style'] !== undefined) net['style'] = m['style'];
  const first = source.tensors.get('block1_conv1.kernel');
  if (m['width'] !== undefined) net['width'] = m['width'];
  else if (first) net['width'] = `${first.shape[3]! / 64} (from block1_conv1)`;
  const score = ['score7', 'score4', 'score3'].map((l) => source.tensors.get(`${l}.kernel`)).find((t) => t !== undefined);
  if (m['classes'] !== undefined) net['classes'] = m['classes'];
  else if (score) net['classes'] = `${score.shape.at(-1)} (from the score layer)`;
  if (m['backbone'] !== undefined) net['backbone'] = m['backbone'];
  if (m['skip_scales'] !== undefined) net['skip scales'] = m['skip_scales'];
  return net;
}

const NETWORK_KEYS = new Set(['model', 'style', 'width', 'classes', 'backbone', 'skip_scales']);

async function inspectCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parse(weightsInspectSpec, argv);
  if (positionals.length !== 1) throw usage(`inspect: expected one weight file or known name, got ${positionals.length ? positionals.map((p) => `'${p}'`).join(' ') : 'none'}`);
  const path = resolveWeightsArgument(positionals[0]!);
  const source = await readWeightSource(path);
  source.close?.(); // only names, shapes and metadata are shown: no tensor is read
  const network = impliedNetwork(source);
  const tensors = [...source.tensors].map(([name, t]) => ({ name, shape: t.shape }));
  const parameters = tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
  const other = Object.entries(source.metadata).filter(([k]) => !NETWORK_KEYS.has(k));
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ path, format: source.format, network, metadata: source.metadata, tensors, parameters, notes: source.notes }, null, 2)}\n`);
    return 0;
  }
  const out: string[] = [];
  out.push(`file      ${path}`, `format    ${source.format}`);
  out.push(`network   ${Object.entries(network).map(([k, v]) => (k === 'model' ? v : `${k} ${v}`)).join(', ')}`);
  // Long values (class name lists) are cut: --json has them whole.
  for (const [k, v] of other) out.push(`metadata  ${k} = ${v.length > 100 ? `${v.slice(0, 97)}...` : v}`);
  out.push(`tensors   ${tensors.length}, ${parameters.toLocaleString('en-US')} parameters`);
  const nameWidth = Math.max(0, ...tensors.map((t) => t.name.length));
  for (const t of tensors) out.push(`  ${t.name.padEnd(nameWidth)}  [${t.shape.join(', ')}]`);
  // The file is named above: notes that start with its path lose the repetition.
  if (source.notes.length) out.push('notes', ...source.notes.map((n) => `  ${n.startsWith(`${path}: `) ? n.slice(path.length + 2) : n}`));
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

async function convertCmd(argv: string[]): Promise<number> {
  const { positionals } = parse(weightsConvertSpec, argv);
  if (positionals.length !== 2) throw usage(`convert: expected an input (file or known name) and an output file, got ${positionals.length ? positionals.map((p) => `'${p}'`).join(' ') : 'none'}`);
  const input = resolveWeightsArgument(positionals[0]!);
  const out = positionals[1]!;
  if (resolve(input) === resolve(out)) throw usage(`convert: the output ${out} is the input file`);
  // Checked and created by cli/paths: a recursive mkdir would spin for ever under /proc.
  prepareOutputFile('weights convert', '', out);
  const source = await readWeightSource(input);
  try {
    return convertSource(source, input, out);
  } finally {
    source.close?.();
  }
}

function convertSource(source: WeightSource, input: string, out: string): number {
  for (const n of source.notes) process.stderr.write(`${n.startsWith(input) ? n : `${input}: ${n}`}\n`);
  const provenance = { converted_from: basename(input), source_format: source.format };
  if (source.metadata['model'] === undefined) {
    // A backbone (VGG16 ImageNet) is no model to build: its tensors are written as they are,
    // each read (converted) once.
    const tensors = new Map<string, SafetensorsTensor>();
    for (const [name, entry] of source.tensors) tensors.set(name, f32(entry.shape, entry.read()));
    writeSafetensors(out, tensors, { ...source.metadata, format: WEIGHTS_FORMAT, ...provenance });
    process.stdout.write(`wrote ${out}: ${tensors.size} tensors${source.metadata['backbone'] ? ` of a ${source.metadata['backbone']} backbone` : ''} (from ${input}, ${source.format})\n`);
    return 0;
  }
  // The model is built from the source already open: the file is read once.
  const model = modelFromSource(source);
  try {
    // Keep what the source says beyond what the model itself records (style, skip scales, class names).
    const own = weightsMetadata(model);
    // An int8 model converts to its float32 weights (the dequantized kernels): its scales stay behind.
    const extra = Object.fromEntries(Object.entries(source.metadata).filter(([k]) => !(k in own) && k !== 'quantization' && k !== 'calibration'));
    if (source.metadata['quantization'] !== undefined) process.stderr.write(`${input}: an int8 model: ${out} holds its float32 (dequantized) weights\n`);
    saveWeights(out, model, { ...extra, ...provenance });
    process.stdout.write(`wrote ${out}: ${model.kind}, width ${model.width}, ${model.numClasses} classes (from ${input}, ${source.format})\n`);
  } finally {
    model.dispose();
  }
  return 0;
}
