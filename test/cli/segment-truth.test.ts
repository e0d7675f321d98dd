// fcn segment --compare puts the ground truth next to the models' maps when the image has
// one: an image of a VOC root, one with SegmentationClass/<stem>.png in its folder, or one
// whose <stem>.png is in --labels DIR. Each picture is compared with the one writeComparison
// makes from the same panels, pixel for pixel.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import { SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { readLabel } from '../../src/data/labels.js';
import { readImageRgb, writeLabelPng } from '../../src/io/image.js';
import { groundTruthFile } from '../../src/infer/segment-files.js';
import { segment } from '../../src/infer/inference.js';
import { loadModel } from '../../src/models/weights.js';
import { writeComparison } from '../../src/report/viz.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli, saveTinyModel, tinyDataset } from '../eval/fixtures.js';

const tmp = tempDir('cli-segment-truth');
const voc = join(tmp.dir, 'voc');
const classes = join(voc, 'classes.json');
const w32 = join(tmp.dir, 'w32.safetensors');
const w8 = join(tmp.dir, 'w8.safetensors');
let ids: string[] = [];

before(async () => {
  ids = (await tinyDataset(voc, 3)).ids;
  saveTinyModel(w32, 'fcn32', 31);
  saveTinyModel(w8, 'fcn8', 32);
});
after(() => tmp.cleanup());

/** The comparison writeComparison makes for `image`: the truth (if any), then FCN-32s and FCN-8s. */
async function expectedComparison(image: string, truthFile: string | undefined, file: string): Promise<Uint8Array> {
  const rgb = await readImageRgb(image);
  const panels: { title: string; labels: Uint8Array }[] = [];
  if (truthFile) panels.push({ title: 'ground truth', labels: (await readLabel(truthFile)).data });
  for (const [title, weights] of [['FCN-32s', w32], ['FCN-8s', w8]] as const) {
    const model = await loadModel(weights);
    try {
      panels.push({ title, labels: (await segment(model, rgb, { classNames: SYNTH_CLASS_NAMES })).labels });
    } finally {
      model.dispose();
    }
  }
  await writeComparison(file, { image: rgb, panels, classNames: SYNTH_CLASS_NAMES });
  return decodePng(readFileSync(file)).data as Uint8Array;
}

async function compare(image: string, out: string, ...extra: string[]): Promise<{ picture: Uint8Array; json: { truth?: string } }> {
  const r = await runCli('segment', image, '--compare', `${w32},${w8}`, '--classes', classes, '--out', out, ...extra);
  assert.equal(r.code, 0, r.err);
  const stem = basename(image).replace(/\.[^.]+$/, '');
  return {
    picture: decodePng(readFileSync(join(out, `${stem}_compare.png`))).data as Uint8Array,
    json: JSON.parse(readFileSync(join(out, `${stem}.json`), 'utf8')) as { truth?: string },
  };
}

test('an image of a VOC root: its SegmentationClass label is drawn as the ground truth', async () => {
  const image = join(voc, 'JPEGImages', `${ids[0]}.jpg`);
  const truth = join(voc, 'SegmentationClass', `${ids[0]}.png`);
  assert.equal(groundTruthFile(image), truth);
  const got = await compare(image, join(tmp.dir, 'out-voc'));
  assert.equal(got.json.truth, truth, 'the JSON names the ground truth used');
  const withTruth = await expectedComparison(image, truth, join(tmp.dir, 'expected-voc.png'));
  assert.deepEqual(got.picture, withTruth);
  // …and the panel is really there: the picture without it differs.
  const without = await expectedComparison(image, undefined, join(tmp.dir, 'expected-voc-none.png'));
  assert.notEqual(got.picture.length, without.length);
});

test('an image with SegmentationClass/<stem>.png in its own folder; one without any gets no truth panel', async () => {
  const folder = join(tmp.dir, 'photos');
  mkdirSync(join(folder, 'SegmentationClass'), { recursive: true });
  const image = join(folder, 'scene.jpg');
  copyFileSync(join(voc, 'JPEGImages', `${ids[1]}.jpg`), image);
  const truth = join(folder, 'SegmentationClass', 'scene.png');
  copyFileSync(join(voc, 'SegmentationClass', `${ids[1]}.png`), truth);
  const got = await compare(image, join(tmp.dir, 'out-folder'));
  assert.equal(got.json.truth, truth);
  assert.deepEqual(got.picture, await expectedComparison(image, truth, join(tmp.dir, 'expected-folder.png')));

  const lone = join(tmp.dir, 'lone', 'scene2.jpg');
  mkdirSync(join(tmp.dir, 'lone'));
  copyFileSync(image, lone);
  assert.equal(groundTruthFile(lone), undefined);
  const none = await compare(lone, join(tmp.dir, 'out-lone'));
  assert.equal(none.json.truth, undefined);
  assert.deepEqual(none.picture, await expectedComparison(lone, undefined, join(tmp.dir, 'expected-lone.png')));
});

test('--labels DIR: <stem>.png there is the ground truth, in place of one found next to the image', async () => {
  const image = join(voc, 'JPEGImages', `${ids[2]}.jpg`);
  const rgb = await readImageRgb(image);
  // A truth of its own, unlike the dataset's: every pixel class 2 but a void top row.
  const own = new Uint8Array(rgb.width * rgb.height).fill(2);
  own.fill(255, 0, rgb.width);
  const dir = join(tmp.dir, 'truths');
  mkdirSync(dir);
  await writeLabelPng(join(dir, `${ids[2]}.png`), own, rgb.width, rgb.height);
  assert.equal(groundTruthFile(image, dir), join(dir, `${ids[2]}.png`));
  const got = await compare(image, join(tmp.dir, 'out-labels'), '--labels', dir);
  assert.equal(got.json.truth, join(dir, `${ids[2]}.png`));
  assert.deepEqual(got.picture, await expectedComparison(image, join(dir, `${ids[2]}.png`), join(tmp.dir, 'expected-labels.png')));
  assert.notDeepEqual(got.picture, await expectedComparison(image, join(voc, 'SegmentationClass', `${ids[2]}.png`), join(tmp.dir, 'expected-dataset.png')));
});

test('a ground truth of another size, and --labels without --compare, fail with one clear line', async () => {
  const image = join(voc, 'JPEGImages', `${ids[0]}.jpg`);
  const dir = join(tmp.dir, 'wrong-size');
  mkdirSync(dir);
  const rgb = await readImageRgb(image);
  await writeLabelPng(join(dir, `${ids[0]}.png`), new Uint8Array(4 * 3), 4, 3);
  const r = await runCli('segment', image, '--compare', `${w32},${w8}`, '--classes', classes, '--out', join(tmp.dir, 'out-wrong'), '--labels', dir);
  assert.equal(r.code, 1);
  assert.equal(lines(r.err).length, 1, r.err);
  assert.match(r.err, new RegExp(`^fcn segment: .*${ids[0]}\\.png: the ground truth is 4×3 but .*${ids[0]}\\.jpg is ${rgb.width}×${rgb.height}$`, 'm'));
  assert.ok(!readdirSync(join(tmp.dir, 'out-wrong')).some((f) => f.endsWith('_compare.png')), 'no comparison written');

  const alone = await runCli('segment', image, '--weights', w8, '--labels', dir);
  assert.equal(alone.code, 2);
  assert.equal(alone.err, 'fcn segment: --labels gives the ground truth of --compare pictures: add --compare\n');
});
