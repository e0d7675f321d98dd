// `fcn data fetch|check|synth|split`: dataset download, validation, synthesis and split lists.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkDataset, formatCheckReport } from '../data/check.js';
import { concatDatasets, detectKind, openDataset, resolveSbdRoot, resolveVocRoot, type BadSample, type Dataset, type DetectedKind } from '../data/datasets.js';
import { DATA_SOURCES, fetchDataset } from '../data/fetch.js';
import { progressPrinter } from '../io/download.js';
import { paperSplit, kerasSplit } from '../data/splits.js';
import { synthesizeDataset } from '../data/synth.js';
import { UsageError, definedOnly, runSubcommand, parse, parseNumber, requireString } from './args.js';
import { REQUIRED, type CommandSpec } from './help.js';
import { checkInputDir, checkInputFile, prepareOutputDir } from './paths.js';

export const dataFetchSpec = {
  name: 'data fetch',
  summary: 'download a dataset (resuming), check its md5 and extract it',
  usage: ['voc2012|sbd [--dir D] [--url URL] [--md5 SUM] [--retries N] [--no-extract] [--quiet]'],
  details: `The address and sum can also be set with FCN_VOC2012_URL / FCN_VOC2012_MD5 and
FCN_SBD_URL / FCN_SBD_MD5. Prints the extracted root (or the archive, with --no-extract).`,
  positionals: 'voc2012|sbd',
  options: {
    dir: { type: 'string', value: 'D', help: 'where the archive and the extracted dataset go', default: 'data' },
    url: { type: 'string', value: 'URL', help: 'download from this address', default: 'the dataset\'s official address' },
    md5: { type: 'string', value: 'SUM', help: 'expected md5 of the archive (32 hex digits)', default: 'the official archive\'s' },
    retries: { type: 'string', value: 'N', help: 'retries after a failed transfer', default: '3' },
    'no-extract': { type: 'boolean', help: 'download and check only', default: 'off' },
    quiet: { type: 'boolean', help: 'no progress or notes on stderr', default: 'off' },
  },
  examples: ['fcn data fetch voc2012 --dir data'],
} satisfies CommandSpec;

export const dataCheckSpec = {
  name: 'data check',
  summary: 'decode every image/label pair of a dataset and report what is wrong',
  usage: ['ROOT [--split NAME | --list FILE] [--classes FILE] [--kind voc|sbd|custom] [--json]'],
  details: `Checks a VOC root, an SBD root or a custom dataset (images/, masks/, classes.json): counts
per class and every bad pair; exits 1 if anything is wrong.`,
  positionals: 'ROOT',
  options: {
    split: { type: 'string', value: 'NAME', help: 'the split to check', default: 'VOC trainval, SBD train + val, custom: every image with a mask' },
    list: { type: 'string', value: 'FILE', help: 'check the ids listed in FILE instead', default: 'none' },
    classes: { type: 'string', value: 'FILE', help: 'class names and colours (classes.json)', default: 'the root\'s classes.json, else the 21 VOC classes' },
    kind: { type: 'string', value: 'K', help: 'voc, sbd or custom', default: 'detected from the root' },
    images: { type: 'string', value: 'DIR', help: 'custom datasets: the images folder', default: 'ROOT/images' },
    masks: { type: 'string', value: 'DIR', help: 'custom datasets: the masks folder', default: 'ROOT/masks, or ROOT/labels' },
    json: { type: 'boolean', help: 'print the report as JSON', default: 'off' },
    concurrency: { type: 'string', value: 'N', help: 'files decoded at once', default: '4' },
  },
  examples: ['fcn data check data/VOCdevkit/VOC2012 --split val'],
} satisfies CommandSpec;

export const dataSynthSpec = {
  name: 'data synth',
  summary: 'write a synthetic dataset in VOC layout',
  usage: ['--out D [--count N] [--seed S] [--size PX] [--quality Q]'],
  details: 'Scenes of five object classes on textured backgrounds, with classes.json and train/val lists.',
  options: {
    out: { type: 'string', value: 'D', help: 'the dataset root to write', default: REQUIRED },
    count: { type: 'string', value: 'N', help: 'scenes, at least 2', default: '400' },
    seed: { type: 'string', value: 'S', help: 'random seed', default: '0' },
    size: { type: 'string', value: 'PX', help: 'scene size, 32-4096', default: '128' },
    quality: { type: 'string', value: 'Q', help: 'JPEG quality, 1-100', default: '92' },
  },
  examples: ['fcn data synth --out data/synth --count 200 --size 96'],
} satisfies CommandSpec;

export const dataSplitSpec = {
  name: 'data split',
  summary: 'write Keras-FCN\'s or the paper\'s train/val id lists',
  usage: ['keras|paper --voc ROOT --sbd ROOT [--seg11valid FILE] --out D'],
  details: `The paper's split needs seg11valid.txt from the FCN authors' repository
(data/pascal/seg11valid.txt).`,
  positionals: 'keras|paper',
  options: {
    voc: { type: 'string', value: 'ROOT', help: 'the VOC2012 root', default: REQUIRED },
    sbd: { type: 'string', value: 'ROOT', help: 'the SBD root (benchmark_RELEASE/dataset)', default: REQUIRED },
    seg11valid: { type: 'string', value: 'FILE', help: 'the paper\'s validation ids', default: 'required for paper' },
    out: { type: 'string', value: 'D', help: 'folder for the list files', default: REQUIRED },
  },
  examples: ['fcn data split keras --voc data/VOCdevkit/VOC2012 --sbd data/benchmark_RELEASE/dataset --out data/splits'],
} satisfies CommandSpec;

const SUBCOMMANDS = { fetch: dataFetchSpec, check: dataCheckSpec, synth: dataSynthSpec, split: dataSplitSpec };

const HELP = `fcn data — datasets

Usage: fcn data <subcommand> [options]

Subcommands:
${Object.entries(SUBCOMMANDS).map(([name, c]) => `  ${name.padEnd(7)}${c.summary}`).join('\n')}

Each subcommand answers --help (-h) with its usage, options and an example.
`;

const usage = (msg: string) => new UsageError(`fcn data ${msg}`);

export async function dataCommand(argv: string[]): Promise<number> {
  return runSubcommand('data', argv, HELP, { fetch: fetchCmd, check: checkCmd, synth: synthCmd, split: splitCmd });
}

function one(cmd: string, positionals: string[], what: string): string {
  if (positionals.length !== 1) throw usage(`${cmd}: expected one ${what}, got ${positionals.length ? positionals.map((p) => `'${p}'`).join(' ') : 'none'}`);
  return positionals[0]!;
}

async function fetchCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parse(dataFetchSpec, argv);
  const name = one('fetch', positionals, `dataset (${Object.keys(DATA_SOURCES).join(' or ')})`);
  if (!(name in DATA_SOURCES)) throw usage(`fetch: unknown dataset '${name}' (${Object.keys(DATA_SOURCES).join(', ')})`);
  if (values.md5 !== undefined && !/^[0-9a-fA-F]{32}$/.test(values.md5)) throw usage(`fetch: --md5 must be 32 hex digits, got '${values.md5}'`);
  const retries = parseNumber('data fetch', values.retries, 'retries', (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0');
  prepareOutputDir('data fetch', 'dir', values.dir ?? 'data');
  const src = DATA_SOURCES[name as keyof typeof DATA_SOURCES];
  const quiet = values.quiet === true;
  const log = (m: string) => { if (!quiet) process.stderr.write(`${m}\n`); };
  log(`${src.description}: ${values.url ?? process.env[`FCN_${name.toUpperCase()}_URL`] ?? src.url}`);
  const r = await fetchDataset(name, {
    ...definedOnly({ dir: values.dir, url: values.url, md5: values.md5, retries }),
    noExtract: values['no-extract'] === true,
    ...(quiet ? {} : { onProgress: progressPrinter(name), onNote: log }),
  });
  log(`md5 ${r.md5} ok: ${r.archive}`);
  process.stdout.write(`${values['no-extract'] ? r.archive : r.root}\n`);
  return 0;
}

async function checkCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parse(dataCheckSpec, argv);
  const root = one('check', positionals, 'dataset root');
  if (values.split !== undefined && values.list !== undefined) throw usage('check: give --split or --list, not both');
  if (values.kind !== undefined && !['voc', 'sbd', 'custom'].includes(values.kind)) throw usage(`check: --kind must be voc, sbd or custom, got '${values.kind}'`);
  const concurrency = parseNumber('data check', values.concurrency, 'concurrency', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  checkInputDir('data check', '', root);
  if (values.list !== undefined) checkInputFile('data check', 'list', values.list);
  if (values.classes !== undefined) checkInputFile('data check', 'classes', values.classes);
  if (values.images !== undefined) checkInputDir('data check', 'images', values.images);
  if (values.masks !== undefined) checkInputDir('data check', 'masks', values.masks);
  const kind = (values.kind as DetectedKind | undefined) ?? detectKind(root);
  const missing: BadSample[] = [];
  const common = { onMissing: 'skip' as const, missing, ...definedOnly({ classes: values.classes, images: values.images, masks: values.masks }) };
  let ds: Dataset;
  if (values.list !== undefined || values.split !== undefined) {
    ds = await openDataset(root, { ...common, kind, split: values.list !== undefined ? { list: values.list } : values.split! });
  } else if (kind === 'voc') {
    const r = resolveVocRoot(root);
    const split = existsSync(join(r, 'ImageSets', 'Segmentation', 'trainval.txt')) ? 'trainval' : 'train';
    ds = await openDataset(root, { ...common, kind, split });
  } else if (kind === 'sbd') {
    const r = resolveSbdRoot(root);
    const parts: Dataset[] = [];
    for (const split of ['train', 'val']) {
      if (!existsSync(join(r, `${split}.txt`))) continue;
      try {
        parts.push(await openDataset(root, { ...common, kind, split }));
      } catch (e) {
        // An empty list is a problem to report, but the other list can still be checked.
        const msg = (e as Error).message;
        const file = join(r, `${split}.txt`);
        if (!msg.startsWith(`${file}: empty split`)) throw e;
        missing.push({ id: `(${split}.txt)`, file, reason: 'empty split (no ids)' });
      }
    }
    if (parts.length === 0) throw new Error(`${r}: neither train.txt nor val.txt lists any id`);
    ds = parts.length === 1 ? parts[0]! : concatDatasets('sbd:train+val', ...parts);
  } else {
    ds = await openDataset(root, { ...common, kind });
  }
  const tty = process.stderr.isTTY && !values.json;
  const report = await checkDataset(ds, {
    missing,
    ...definedOnly({ concurrency }),
    ...(tty ? { onProgress: (d: number, t: number) => { if (d === t || d % 25 === 0) process.stderr.write(`\rchecking ${d}/${t}\x1b[K${d === t ? '\r\x1b[K' : ''}`); } } : {}),
  });
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatCheckReport(report));
  return report.bad.length === 0 && report.ok > 0 ? 0 : 1;
}

async function synthCmd(argv: string[]): Promise<number> {
  const { values } = parse(dataSynthSpec, argv);
  const out = requireString('data synth', values.out, 'out');
  const int = (flag: 'count' | 'seed' | 'size' | 'quality', ok: (n: number) => boolean, what: string) =>
    parseNumber('data synth', values[flag], flag, (n) => Number.isInteger(n) && ok(n), what);
  const count = int('count', (n) => n >= 2, 'an integer ≥ 2');
  const seed = int('seed', (n) => n >= 0 && n < 2 ** 32, 'an integer in 0-4294967295');
  const size = int('size', (n) => n >= 32 && n <= 4096, 'an integer in 32-4096');
  const quality = int('quality', (n) => n >= 1 && n <= 100, 'an integer in 1-100');
  prepareOutputDir('data synth', 'out', out);
  const t0 = performance.now();
  const r = await synthesizeDataset({ out, ...definedOnly({ count, seed, size, quality }) });
  process.stderr.write(`synthetic dataset: ${r.train.length} train + ${r.val.length} val scenes in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  process.stdout.write(`${r.root}\n`);
  return 0;
}

async function splitCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parse(dataSplitSpec, argv);
  const given = one('split', positionals, 'split name (keras or paper)');
  const name = given === 'seed' ? 'keras' : given; // 'seed': the keras split's old name
  if (name !== 'keras' && name !== 'paper') throw usage(`split: unknown split '${name}' (keras, paper)`);
  const voc = requireString('data split', values.voc, 'voc');
  const sbd = requireString('data split', values.sbd, 'sbd');
  const out = requireString('data split', values.out, 'out');
  const seg11valid = name === 'paper' ? requireString('data split', values.seg11valid, 'seg11valid') : undefined;
  checkInputDir('data split', 'voc', voc);
  checkInputDir('data split', 'sbd', sbd);
  if (seg11valid !== undefined) checkInputFile('data split', 'seg11valid', seg11valid);
  prepareOutputDir('data split', 'out', out);
  const lines = (ids: string[]) => ids.join('\n') + '\n';
  if (name === 'keras') {
    const s = await kerasSplit(voc, sbd);
    await writeFile(join(out, 'train_mat.txt'), lines(s.ids.trainMat));
    await writeFile(join(out, 'train_png.txt'), lines(s.ids.trainPng));
    await writeFile(join(out, 'val_mat.txt'), lines(s.ids.valMat));
    process.stderr.write(`keras split: train ${s.ids.trainMat.length} (.mat) + ${s.ids.trainPng.length} (.png), val ${s.ids.valMat.length}\n`);
  } else {
    const s = await paperSplit(voc, sbd, seg11valid!);
    await writeFile(join(out, 'train.txt'), lines(s.train.entries.map((e) => e.id)));
    await writeFile(join(out, 'val.txt'), lines(s.val.entries.map((e) => e.id)));
    process.stderr.write(`paper split: train ${s.train.entries.length}, val ${s.val.entries.length}\n`);
  }
  process.stdout.write(`${out}\n`);
  return 0;
}
