// The `fcn` command line.
import path from 'node:path';
import { cpuFeatures, engineConfig, int8SevenBitActivations, unusedFeatures } from '../engine/config.js';
import { native } from '../engine/binding.js';
import { mpiSummary } from '../engine/mpi.js';
import { kernelChoiceFile, kernelChoiceMode, kernelChoices } from '../engine/kernel-choice.js';
import { FCN, FCN_KINDS, FCN_STYLES, type FcnKind } from '../models/fcn.js';
import { loadModel, saveWeights } from '../models/weights.js';
import { segment } from '../infer/inference.js';
import { DEFAULT_MAX_PIXELS, checkPixelLimit, imageSize, writeLabelPng } from '../io/image.js';
import { writeNpy } from '../io/npy.js';
import { classShares } from '../report/viz.js';
import { UsageError, nearestOptions, parse, parseChoice, parseNumber, reportError, requireString } from './args.js';
import { REQUIRED, engineOptionSpecs, formatTopHelp, inferenceEngineOptionSpecs, type CommandSpec } from './help.js';
import { packageVersion } from '../io/package-version.js';
import { checkInputFile, checkWeightsArgument, prepareOutputFile } from './paths.js';
import { applyEngineFlags } from './engine-flags.js';

/** One line per command for `fcn --help`; a command missing here is listed without one. */
const SUMMARIES: Record<string, string> = {
  init: 'write a new model\'s weights (seeded random initialisation)',
  predict: 'segment one image: a palette label map, optionally raw logits',
  info: 'CPU, oneDNN, threads, precision and MPI',
  demo: 'synthesise data, train FCN-32s → 16s → 8s, evaluate, write a report',
  train: 'train one model or a staged recipe, with checkpoints, resume and Ctrl-C',
  data: 'datasets: fetch, check, synth, split',
  eval: 'the paper\'s four metrics and per-class IoU on a dataset split',
  segment: 'label maps, overlays and model comparisons for image files',
  weights: 'pretrained weights, any weight file',
  export: 'a model as an ONNX file that runs on plain RGB pixels',
  serve: 'a web page: FCN-32s/16s/8s side by side, drawing, how it works, live training',
  quantize: 'an int8 model from float weights and calibration images (--precision int8)',
};

export const initSpec = {
  name: 'init',
  summary: SUMMARIES.init!,
  usage: ['--model fcn32|fcn16|fcn8 [--style keras|caffe] [--width W] [--seed N] --out FILE'],
  details: 'Writes a safetensors file of seeded random weights: He-uniform kernels under ReLUs, glorot-uniform for the score layers, zero skip scores, bilinear upsampling.',
  options: {
    model: { type: 'string', value: 'M', help: `the network: ${FCN_KINDS.join(', ')}`, default: REQUIRED },
    width: { type: 'string', value: 'W', help: 'channel width factor in (0, 1]: below 1, a narrower VGG16 for quick runs', default: '1' },
    style: { type: 'string', value: 'S', help: "keras (Keras-FCN's network) or caffe (the paper's: conv1 padding 100, ceil pooling, crops)", default: 'keras' },
    seed: { type: 'string', value: 'N', help: 'random seed of the initialisation', default: '0' },
    out: { type: 'string', value: 'FILE', help: 'the weights file to write', default: REQUIRED },
    ...engineOptionSpecs,
  },
  examples: ['fcn init --model fcn8 --width 0.125 --seed 1 --out fcn8-narrow.safetensors'],
} satisfies CommandSpec;

export const predictSpec = {
  name: 'predict',
  summary: SUMMARIES.predict!,
  usage: ['--weights FILE --image FILE [--labels FILE] [--logits FILE]'],
  details: 'The label map is a palette PNG (VOC colours, pixel value = class index) at the image\'s own size;\nthe logits are the class scores before softmax, float32 NumPy (classes, H, W).',
  options: {
    weights: { type: 'string', value: 'FILE|NAME', help: 'the model\'s weights: .safetensors, Keras .h5, .caffemodel, or a fetched name (fcn8s…)', default: REQUIRED },
    image: { type: 'string', value: 'FILE', help: 'a JPEG or PNG image', default: REQUIRED },
    labels: { type: 'string', value: 'FILE', help: 'where to write the label map', default: '<image name>_labels.png in the current folder' },
    logits: { type: 'string', value: 'FILE', help: 'where to write the logits (.npy; 4 bytes × classes per pixel, ~1 GB for 12 MP, held in memory)', default: 'not written' },
    'max-pixels': { type: 'string', value: 'N', help: 'refuse a larger image before decoding it (its header gives the size)', default: String(DEFAULT_MAX_PIXELS) },
    ...inferenceEngineOptionSpecs,
  },
  examples: ['fcn predict --weights fcn8.safetensors --image photo.jpg --labels photo_labels.png --logits photo.npy'],
} satisfies CommandSpec;

export const infoSpec = {
  name: 'info',
  summary: SUMMARIES.info!,
  usage: ['[--threads N] [--precision P]'],
  details: 'Prints the CPU\'s features, oneDNN\'s version and the ISA it runs (naming ONEDNN_MAX_CPU_ISA when that caps it: the rules below follow that ISA), the threads, the precision used with the reason, and whether MPI (data-parallel fcn train under mpirun) is built in and which library.',
  options: { ...inferenceEngineOptionSpecs },
  examples: ['fcn info --precision bfloat16'],
} satisfies CommandSpec;

type Command = (argv: string[]) => Promise<number>;

const init: Command = async (argv) => {
  const { values } = parse(initSpec, argv);
  applyEngineFlags(initSpec, values);
  const kind = requireString('init', values.model, 'model') as FcnKind;
  if (!FCN_KINDS.includes(kind)) throw new UsageError(`fcn init: unknown model '${kind}' (expected ${FCN_KINDS.join(', ')})`);
  const width = parseNumber('init', values.width, 'width', (n) => n > 0 && n <= 1, 'in (0, 1]') ?? 1;
  const seed = parseNumber('init', values.seed, 'seed', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer') ?? 0;
  const style = parseChoice('init', values.style, 'style', FCN_STYLES) ?? 'keras';
  const out = requireString('init', values.out, 'out');
  prepareOutputFile('init', 'out', out);
  const model = new FCN({ kind, width, style });
  try {
    model.initialize(seed);
    saveWeights(out, model, { seed: String(seed) });
    const count = model.params().reduce((s, p) => s + p.dims.reduce((a, b) => a * b, 1), 0);
    console.log(`wrote ${out}: ${kind} (${style} style), width ${width}, seed ${seed}, ${count.toLocaleString('en-US')} parameters`);
  } finally {
    model.dispose();
  }
  return 0;
};

const predict: Command = async (argv) => {
  const { values } = parse(predictSpec, argv);
  applyEngineFlags(predictSpec, values);
  const weights = requireString('predict', values.weights, 'weights');
  const image = requireString('predict', values.image, 'image');
  const labelsOut = values.labels ?? `${path.parse(image).name}_labels.png`;
  const maxPixels = parseNumber('predict', values['max-pixels'], 'max-pixels', (n) => Number.isInteger(n) && n >= 1, 'a positive integer') ?? DEFAULT_MAX_PIXELS;
  // Every path is checked before the model is loaded: a bad output fails now, not after the work.
  checkWeightsArgument('predict', 'weights', weights);
  checkInputFile('predict', 'image', image);
  for (const [flag, out] of [['labels', labelsOut], ['logits', values.logits]] as const) {
    if (out === undefined) continue;
    if (path.resolve(out) === path.resolve(image)) throw new UsageError(`fcn predict: --${flag} '${out}': is the input image, which it would overwrite`);
    prepareOutputFile('predict', flag, out);
  }
  // A decompression bomb is refused from its header before the weights are read.
  const declared = await imageSize(image);
  checkPixelLimit(image, declared.width, declared.height, maxPixels);
  const model = await loadModel(weights);
  try {
    const t0 = performance.now();
    const result = await segment(model, image, { logits: values.logits !== undefined, maxPixels });
    const ms = performance.now() - t0;
    await writeLabelPng(labelsOut, result.labels, result.width, result.height);
    if (values.logits !== undefined) {
      writeNpy(values.logits, result.logits!, [model.numClasses, result.height, result.width]);
    }
    const tiles = result.plan.tiled ? `, in ${result.plan.tiles} tiles of ≤${result.plan.tileSize}²` : '';
    console.log(`${image}: ${result.width}×${result.height}, ${model.kind}, ${ms.toFixed(0)} ms (${engineConfig().precision}, ${engineConfig().threads} threads${tiles})`);
    for (const s of classShares(result.labels, result.classes).slice(0, 8)) console.log(`  ${s.name.padEnd(12)} ${(100 * s.share).toFixed(1).padStart(5)}%`);
    console.log(`labels: ${labelsOut}${values.logits ? `\nlogits: ${values.logits} (float32, ${model.numClasses}×${result.height}×${result.width})` : ''}`);
  } finally {
    model.dispose();
  }
  return 0;
};

const info: Command = async (argv) => {
  const { values } = parse(infoSpec, argv);
  applyEngineFlags(infoSpec, values);
  const n = native.info();
  const cfg = engineConfig();
  const cpu = cpuFeatures();
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const hw = cpu.hardware;
  console.log(`CPU ${cpu.model} (${cpu.vendor}): AMX ${yes(hw.amx)}, avx512_bf16 ${yes(hw.avx512Bf16)}, AVX-512 ${yes(hw.avx512)}, VNNI ${yes(hw.vnni)}, AVX2 ${yes(hw.avx2)}`);
  // A cap (ONEDNN_MAX_CPU_ISA=AVX2) names what of this CPU it leaves unused.
  const unused = unusedFeatures(cpu);
  const cap = cpu.isaCap ? ` (ONEDNN_MAX_CPU_ISA=${cpu.isaCap} in force: ${unused.length ? `this CPU's ${unused.join(', ')} unused` : 'nothing of this CPU unused'})` : '';
  console.log(`oneDNN ${n.onednnVersion} (${n.cpuRuntime}), ISA ${n.isa}${cap}, ${cfg.threads} threads`);
  const why = cfg.precisionSource === 'auto' ? `auto: ${cfg.precisionReason}` : `${cfg.precisionSource === 'env' ? 'FCN_PRECISION' : '--precision'}; auto would say: ${cfg.precisionReason}`;
  console.log(`precision ${cfg.precision} (${why})`);
  console.log(`int8 (fcn quantize models, --precision int8): ${int8SevenBitActivations(cpu) ? 'no VNNI: 7-bit activations keep the 16-bit pair sums exact' : 'VNNI, 8-bit activations'}`);
  console.log(mpiSummary());
  // The measured kernel choices (FCN_KERNEL_CHOICE: measure, off, winograd, winograd-gemm), one line each.
  const mode = kernelChoiceMode();
  const list = kernelChoices();
  console.log(`kernel choice: ${mode}${mode === 'measure' ? ` (FCN_KERNEL_CHOICE=off for fixed kernels), ${list.length} measured in ${kernelChoiceFile()}` : ''}`);
  const ms = (v: number | null) => (v === null || !Number.isFinite(v) ? 'refused' : `${v.toFixed(1)} ms`);
  for (const c of list) console.log(`  ${c.key}: ${c.choice} (${Object.entries(c.times).map(([k, v]) => `${k} ${ms(v)}`).join(', ')})`);
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
  export: async (argv) => (await import('./export.js')).exportCommand(argv),
  serve: async (argv) => (await import('./serve.js')).serveCommand(argv),
  quantize: async (argv) => (await import('./quantize.js')).quantizeCommand(argv),
};

/** The names of every command, for --help and for tests that go through each. */
export const commandNames = (): string[] => Object.keys(commands);

const topHelp = () => formatTopHelp(Object.keys(commands).map((name) => ({ name, summary: SUMMARIES[name] ?? `see fcn ${name} --help` })));

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-v') {
    process.stdout.write(`fcn ${packageVersion()}\n`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h') {
    // Without a command, the help is the answer but the call was still wrong.
    (name ? process.stdout : process.stderr).write(topHelp());
    return name ? 0 : 2;
  }
  // `fcn help <command>` is `fcn <command> --help`.
  if (name === 'help') return rest.length ? main([rest[0]!, '--help']) : main(['--help']);
  const command = commands[name];
  if (!command) {
    const near = nearestOptions(name, Object.keys(commands))[0];
    console.error(`fcn: unknown command '${name}' (${near ? `did you mean ${near}? ` : ''}commands: ${Object.keys(commands).join(', ')})`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    return reportError(name, e);
  }
}
