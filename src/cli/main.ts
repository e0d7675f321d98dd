// The `fcn` command line.
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { configureEngine, cpuFeatures, engineConfig } from '../engine/config.js';
import { native, type Precision } from '../engine/binding.js';
import { FCN, FCN_KINDS, type FcnKind } from '../models/fcn.js';
import { loadModel, saveWeights } from '../models/weights.js';
import { segment } from '../models/segment.js';
import { writeLabelPng } from '../io/image.js';
import { writeNpy } from '../io/npy.js';
import { classShares } from '../report/viz.js';
import { UsageError, parse, parseNumber, requireString } from './args.js';
import { applyEngineFlags } from './engine-flags.js';

const HELP = `fcn — Fully Convolutional Networks for semantic segmentation

Usage:
  fcn init --model fcn32|fcn16|fcn8 [--width W] [--seed N] --out weights.safetensors
  fcn predict --weights w.safetensors --image photo.jpg [--labels out.png] [--logits out.npy]
  fcn data fetch|check|synth ...      datasets (fcn data --help)
  fcn eval --weights w.safetensors --data ROOT [--split val] [--json] [--out F]   metrics (fcn eval --help)
  fcn eval --predictions DIR --data ROOT [--split val] [--json]   score label maps made elsewhere
  fcn segment <image|folder>... --weights w.safetensors [--out DIR] [--compare a,b,c]   label maps, overlays
  fcn info                            CPU, oneDNN, threads and precision
  fcn weights fetch|list|inspect|convert ...   pretrained weights, any weight file (fcn weights --help)
  fcn train --data ROOT [--schedule seed|paper | --model M] [--out RUN] | --resume RUN
  fcn demo [--out DIR]                synthesise data, train FCN-32s→16s→8s, evaluate, report

Options for every command:
  --threads N       engine threads (default: FCN_THREADS, else all cores)
  --precision P     float32 | bfloat16 | auto (default auto: see fcn info)
`;

type Command = (argv: string[]) => Promise<number>;

const engineOptions = applyEngineFlags;

const common = { threads: { type: 'string' }, precision: { type: 'string' } } as const;

function parseKind(command: string, value: string | undefined): FcnKind {
  const kind = requireString(command, value, 'model');
  if (!FCN_KINDS.includes(kind as FcnKind)) throw new UsageError(`fcn ${command}: unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
  return kind as FcnKind;
}

function ensureParentDir(command: string, file: string): void {
  try {
    mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  } catch (e) {
    throw new UsageError(`fcn ${command}: cannot create the folder of ${file} (${(e as NodeJS.ErrnoException).code})`);
  }
}

const init: Command = async (argv) => {
  const { values } = parse('init', argv, { ...common, model: { type: 'string' }, width: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' } });
  engineOptions('init', values);
  const kind = parseKind('init', values.model);
  const width = parseNumber('init', values.width, 'width', (n) => n > 0 && n <= 1, 'in (0, 1]') ?? 1;
  const seed = parseNumber('init', values.seed, 'seed', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer') ?? 0;
  const out = requireString('init', values.out, 'out');
  ensureParentDir('init', out);
  const model = new FCN({ kind, width });
  try {
    model.initialize(seed);
    saveWeights(out, model, { seed: String(seed) });
    const count = model.params().reduce((s, p) => s + p.dims.reduce((a, b) => a * b, 1), 0);
    console.log(`wrote ${out}: ${kind}, width ${width}, seed ${seed}, ${count.toLocaleString('en-US')} parameters`);
  } finally {
    model.dispose();
  }
  return 0;
};

const predict: Command = async (argv) => {
  const { values } = parse('predict', argv, { ...common, weights: { type: 'string' }, image: { type: 'string' }, labels: { type: 'string' }, logits: { type: 'string' } });
  engineOptions('predict', values);
  const weights = requireString('predict', values.weights, 'weights');
  const image = requireString('predict', values.image, 'image');
  const labelsOut = values.labels ?? `${path.parse(image).name}_labels.png`;
  const model = loadModel(weights);
  try {
    const t0 = performance.now();
    const result = await segment(model, image, { logits: values.logits !== undefined });
    const ms = performance.now() - t0;
    ensureParentDir('predict', labelsOut);
    await writeLabelPng(labelsOut, result.labels, result.width, result.height);
    if (values.logits !== undefined) {
      ensureParentDir('predict', values.logits);
      writeNpy(values.logits, result.logits!, [model.numClasses, result.height, result.width]);
    }
    console.log(`${image}: ${result.width}×${result.height}, ${model.kind}, ${ms.toFixed(0)} ms (${engineConfig().precision}, ${engineConfig().threads} threads)`);
    for (const s of classShares(result.labels, result.classes).slice(0, 8)) console.log(`  ${s.name.padEnd(12)} ${(100 * s.share).toFixed(1).padStart(5)}%`);
    console.log(`labels: ${labelsOut}${values.logits ? `\nlogits: ${values.logits} (float32, ${model.numClasses}×${result.height}×${result.width})` : ''}`);
  } finally {
    model.dispose();
  }
  return 0;
};

const info: Command = async (argv) => {
  const { values } = parse('info', argv, { ...common });
  engineOptions('info', values);
  const n = native.info();
  const cfg = engineConfig();
  const cpu = cpuFeatures();
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  console.log(`CPU ${cpu.model} (${cpu.vendor}): AMX ${yes(cpu.amx)}, avx512_bf16 ${yes(cpu.avx512Bf16)}, AVX-512 ${yes(cpu.avx512)}, AVX2 ${yes(cpu.avx2)}`);
  console.log(`oneDNN ${n.onednnVersion} (${n.cpuRuntime}), ISA ${n.isa}, ${cfg.threads} threads`);
  const why = cfg.precisionSource === 'auto' ? `auto: ${cfg.precisionReason}` : `${cfg.precisionSource === 'env' ? 'FCN_PRECISION' : '--precision'}; auto would say: ${cfg.precisionReason}`;
  console.log(`precision ${cfg.precision} (${why})`);
  return 0;
};

const commands: Record<string, Command> = {
  init,
  predict,
  info,
  demo: async (argv) => (await import('./demo.js')).demoCommand(argv),
  train: async (argv) => (await import('./train.js')).trainCommand(argv),
  data: async (argv) => (await import('./data.js')).dataCommand(argv),
  eval: async (argv) => (await import('./eval.js')).evalCommand(argv),
  segment: async (argv) => (await import('./segment.js')).segmentCommand(argv),
  weights: async (argv) => (await import('./weights.js')).weightsCommand(argv),
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(HELP);
    return name ? 0 : 1;
  }
  const command = commands[name];
  if (!command) {
    console.error(`fcn: unknown command '${name}' (commands: ${Object.keys(commands).join(', ')})`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    console.error(e instanceof UsageError ? e.message : `fcn ${name}: ${(e as Error).message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}
