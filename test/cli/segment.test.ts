import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import sharp from 'sharp';
import { SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { readImageRgb, vocPalette } from '../../src/io/image.js';
import { collectImages, compareTitles } from '../../src/infer/segment-files.js';
import { segment } from '../../src/infer/inference.js';
import { loadModel } from '../../src/models/weights.js';
import { classShares, writeComparison } from '../../src/report/viz.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli, saveTinyModel, tinyDataset } from '../eval/fixtures.js';

const tmp = tempDir('cli-segment');
const data = join(tmp.dir, 'synth');
const classes = join(data, 'classes.json');
const w = {
  fcn32: join(tmp.dir, 'w32.safetensors'),
  fcn16: join(tmp.dir, 'w16.safetensors'),
  fcn8: join(tmp.dir, 'w8.safetensors'),
};
const folder = join(tmp.dir, 'photos');
const single = join(tmp.dir, 'single.png');

before(async () => {
  await tinyDataset(data, 4);
  saveTinyModel(w.fcn32, 'fcn32', 21);
  saveTinyModel(w.fcn16, 'fcn16', 22);
  saveTinyModel(w.fcn8, 'fcn8', 23);
  // A folder of JPEGs (two of them non-square), an upper-case extension, and a file to skip.
  mkdirSync(folder);
  const jpgs = readdirSync(join(data, 'JPEGImages')).sort();
  jpgs.slice(0, 3).forEach((f, i) => copyFileSync(join(data, 'JPEGImages', f), join(folder, i === 2 ? f.replace('.jpg', '.JPG') : f)));
  writeFileSync(join(folder, 'notes.txt'), 'not an image');
  // A standalone PNG of yet another size.
  await sharp(join(data, 'JPEGImages', jpgs[3]!)).extract({ left: 5, top: 3, width: 50, height: 30 }).png().toFile(single);
});
after(() => tmp.cleanup());

test('collectImages: folders give their images sorted, files are kept, other files skipped', () => {
  const found = collectImages([single, folder]);
  assert.equal(found[0], single);
  const rest = found.slice(1).map((f) => basename(f));
  assert.deepEqual(rest, [...rest].sort());
  assert.equal(rest.length, 3);
  assert.ok(!rest.includes('notes.txt'));
});

test('fcn segment: per image a palette label map equal to the API, an overlay and class shares', async () => {
  const out = join(tmp.dir, 'out');
  const r = await runCli('segment', single, folder, '--weights', w.fcn8, '--classes', classes, '--out', out);
  assert.equal(r.code, 0, r.err);
  const images = collectImages([single, folder]);
  assert.match(r.out, new RegExp(`wrote ${images.length} images to`));
  const model = await loadModel(w.fcn8);
  const palette = vocPalette(256);
  try {
    for (const image of images) {
      const stem = basename(image).replace(/\.[^.]+$/, '');
      const rgb = await readImageRgb(image);
      const api = await segment(model, image, { classNames: SYNTH_CLASS_NAMES });

      const png = decodePng(readFileSync(join(out, `${stem}.png`)));
      assert.equal(png.width, rgb.width, `${stem} label width`);
      assert.equal(png.height, rgb.height, `${stem} label height`);
      assert.equal(png.channels, 1, 'an indexed PNG: one channel of class indices');
      assert.deepEqual(Uint8Array.from(png.data as Uint8Array), api.labels, `${stem}: label map equals segment()`);
      assert.ok(png.palette, 'has a palette');
      assert.deepEqual(png.palette!.slice(0, 21).map((c) => c.slice(0, 3)), palette.slice(0, 21), 'the VOC palette');

      const ov = decodePng(readFileSync(join(out, `${stem}_overlay.png`)));
      assert.equal(ov.width, rgb.width);
      assert.equal(ov.height, rgb.height);
      assert.ok(ov.channels >= 3);

      const json = JSON.parse(readFileSync(join(out, `${stem}.json`), 'utf8'));
      assert.equal(json.width, rgb.width);
      assert.equal(json.height, rgb.height);
      assert.equal(json.classes.reduce((s: number, c: { pixels: number }) => s + c.pixels, 0), rgb.width * rgb.height);
      assert.ok(Math.abs(json.classes.reduce((s: number, c: { share: number }) => s + c.share, 0) - 1) < 1e-9);
      assert.deepEqual(json.classes, classShares(api.labels, SYNTH_CLASS_NAMES));
      for (const c of json.classes) assert.equal(c.name, SYNTH_CLASS_NAMES[c.index]);
    }
  } finally {
    model.dispose();
  }
  assert.ok(!existsSync(join(out, 'notes.png')));
});

test('fcn segment --compare: one side-by-side image per input, the same picture writeComparison makes', async () => {
  const out = join(tmp.dir, 'cmp');
  const r = await runCli('segment', single, '--compare', [w.fcn32, w.fcn16, w.fcn8].join(','), '--classes', classes, '--out', out);
  assert.equal(r.code, 0, r.err);
  const file = join(out, 'single_compare.png');
  assert.ok(existsSync(file));
  // Without --weights, the last compared model writes the label map.
  assert.ok(existsSync(join(out, 'single.png')));
  const got = decodePng(readFileSync(file));
  const rgb = await readImageRgb(single);
  // The photo and three maps side by side: wider than four copies of the image.
  assert.ok(got.width > 4 * rgb.width, `width ${got.width}`);

  const models = await Promise.all([w.fcn32, w.fcn16, w.fcn8].map(async (source) => ({ model: await loadModel(source), source })));
  try {
    const titles = compareTitles(models);
    assert.deepEqual(titles, ['FCN-32s', 'FCN-16s', 'FCN-8s'], 'titled by the kind each file records');
    const panels = [];
    for (let i = 0; i < models.length; i++) panels.push({ title: titles[i]!, labels: (await segment(models[i]!.model, rgb, { classNames: SYNTH_CLASS_NAMES })).labels });
    const ref = join(tmp.dir, 'reference_compare.png');
    const size = await writeComparison(ref, { image: rgb, panels, classNames: SYNTH_CLASS_NAMES });
    assert.equal(got.width, size.width);
    assert.equal(got.height, size.height);
    assert.deepEqual(got.data, decodePng(readFileSync(ref)).data);
  } finally {
    for (const m of models) m.model.dispose();
  }
  // Two files of one kind are told apart by their names.
  const twin = join(tmp.dir, 'w8-other.safetensors');
  copyFileSync(w.fcn8, twin);
  const pair = await Promise.all([w.fcn8, twin].map(async (source) => ({ model: await loadModel(source), source })));
  try {
    assert.deepEqual(compareTitles(pair), ['FCN-8s (w8)', 'FCN-8s (w8-other)']);
  } finally {
    for (const m of pair) m.model.dispose();
  }
});

test('fcn segment: every bad argument prints one clear line and exits non-zero', async () => {
  const empty = join(tmp.dir, 'no-images');
  mkdirSync(empty);
  writeFileSync(join(empty, 'readme.txt'), 'x');
  const aFile = join(tmp.dir, 'a-file');
  writeFileSync(aFile, 'x');
  const fake = join(tmp.dir, 'fake.jpg');
  writeFileSync(fake, 'not a jpeg');
  const dup = join(tmp.dir, 'dup');
  mkdirSync(dup);
  copyFileSync(single, join(dup, 'same.png'));
  await sharp(single).jpeg().toFile(join(dup, 'same.jpg'));
  const pngs = join(tmp.dir, 'pngs');
  mkdirSync(pngs);
  copyFileSync(single, join(pngs, 'x.png'));
  const voc = saveTinyModel(join(tmp.dir, 'voc21.safetensors'), 'fcn8', 3, 21);

  const cases: [string[], RegExp][] = [
    [['--weights', w.fcn8], /no images given/],
    [[single], /--weights is required/],
    [[single, '--weights', join(tmp.dir, 'nope.safetensors')], /--weights '.*nope\.safetensors': no such file/],
    [[single, '--weights', classes], /classes\.json: .*safetensors/],
    [[single, '--weights', w.fcn8, '--compare', `${w.fcn32},,${w.fcn8}`], /--compare must be a comma-separated list/],
    [[single, '--compare', `${w.fcn32},${join(tmp.dir, 'gone.safetensors')}`], /--compare '.*gone\.safetensors': no such file/],
    [[join(tmp.dir, 'missing.jpg'), '--weights', w.fcn8], /missing\.jpg: no such file or folder/],
    [[empty, '--weights', w.fcn8], /no-images: no \.jpg, \.jpeg or \.png images/],
    [[single, '--weights', w.fcn8, '--out', join(aFile, 'out')], /--out '.*a-file\/out': '.*a-file' is a file, not a folder/],
    [[fake, '--weights', w.fcn8, '--out', join(tmp.dir, 'o1')], /fake\.jpg: not a readable image/],
    [[dup, '--weights', w.fcn8, '--out', join(tmp.dir, 'o2')], /same\.png: same name as .*same\.jpg/],
    [[pngs, '--weights', w.fcn8, '--out', pngs], /x\.png: is an input image and would be overwritten/],
    [[single, '--weights', w.fcn8, '--compare', voc], /predicts 21 classes/],
    [[single, '--weights', voc, '--classes', classes], /names 6 classes but the model predicts 21/],
    [[single, '--weights', w.fcn8, '--alpha', '2'], /--alpha must be in \[0, 1\]/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli('segment', ...args);
    const what = `fcn segment ${args.join(' ')}`;
    assert.notEqual(r.code, 0, `${what}: exit code`);
    assert.equal(lines(r.err).length, 1, `${what}: one line on stderr, got ${JSON.stringify(r.err)}`);
    assert.match(r.err, /^fcn segment: /, what);
    assert.match(r.err, pattern, what);
    assert.equal(r.out, '', `${what}: nothing on stdout`);
  }
  // Nothing was written over the input.
  assert.deepEqual(readdirSync(pngs), ['x.png']);
});
