import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encode as encodePng } from 'fast-png';
import sharp from 'sharp';
import { writeLabelPng } from '../../src/io/image.js';
import { parseClassSet, vocClassSet, VOC_CLASS_NAMES } from '../../src/data/classes.js';
import {
  customDataset, openDataset, parseIdList, readIdList, readSample, sbdDataset, vocDataset,
} from '../../src/data/datasets.js';
import { decodeLabelPng, readLabel } from '../../src/data/labels.js';
import { readSbdLabel } from '../../src/data/mat.js';
import { needShared, sbdRoot, sharedData, tempDir, vocRoot } from './helpers.js';

const riderLabel = join(sharedData, 'images', 'rider_label.png');
const riderMat = join(sbdRoot, 'cls', 'rider.mat');

describe('label PNGs', () => {
  test('VOC palette PNG gives class indices, not colours', { skip: needShared(vocRoot) }, async () => {
    const l = await readLabel(join(vocRoot, 'SegmentationClass', '2007_000032.png'));
    assert.equal(l.width, 500);
    assert.equal(l.height, 281);
    assert.deepEqual([...new Set(l.data)].sort((a, b) => a - b), [0, 1, 15, 255]);
  });
  test('an RGB-coloured label maps back through the VOC palette, equal to the SBD .mat', { skip: needShared(riderLabel, riderMat) }, async () => {
    const rgb = await readLabel(riderLabel, vocClassSet());
    const mat = await readSbdLabel(riderMat);
    assert.equal(rgb.width, mat.width);
    assert.equal(rgb.height, mat.height);
    assert.deepEqual(rgb.data, mat.data);
  });
  test('colours outside the palette are an error that lists them', async () => {
    const w = 4, h = 2;
    const data = new Uint8Array(w * h * 3);
    data.set([128, 0, 0], 0); // class 1
    data.set([1, 2, 3], 3);
    data.set([1, 2, 3], 6);
    data.set([250, 10, 10], 9);
    const png = encodePng({ width: w, height: h, data, channels: 3, depth: 8 });
    assert.throws(() => decodeLabelPng(png, 'x.png', vocClassSet()), (e: Error) =>
      e.message.startsWith('x.png: 2 colours not in the palette') && e.message.includes('(1, 2, 3) × 2') && e.message.includes('(250, 10, 10) × 1'));
    assert.throws(() => decodeLabelPng(png, 'x.png'), /x\.png: colour \(RGB\) mask needs a class set/);
  });
  test('greyscale and low-bit-depth palette PNGs read as values', () => {
    const w = 5, h = 3;
    const vals = Uint8Array.from({ length: w * h }, (_, i) => i % 4);
    const grey = encodePng({ width: w, height: h, data: vals, channels: 1, depth: 8 });
    assert.deepEqual(decodeLabelPng(grey, 'g.png').data, vals);
    // 2-bit palette: pack 4 pixels per byte, rows padded to whole bytes.
    const rowBytes = Math.ceil((w * 2) / 8);
    const packed = new Uint8Array(rowBytes * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) packed[y * rowBytes + (x >> 2)]! |= vals[y * w + x]! << (6 - 2 * (x & 3));
    const pal = encodePng({ width: w, height: h, data: packed, channels: 1, depth: 2, palette: [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]] });
    assert.deepEqual(decodeLabelPng(pal, 'p.png').data, vals);
  });
  test('a non-PNG or truncated PNG label names the file', () => {
    assert.throws(() => decodeLabelPng(Buffer.from('GIF89a....'), 'a.png'), /^Error: a\.png: not a PNG file/);
    const png = encodePng({ width: 64, height: 64, data: new Uint8Array(64 * 64).map((_, i) => (i * 7) % 21), channels: 1, depth: 8 });
    assert.throws(() => decodeLabelPng(png.subarray(0, 60), 'b.png'), /^Error: b\.png: /);
  });
});

describe('classes files', () => {
  test('parses names and colours, defaults colours to the VOC palette, rejects bad ones', () => {
    const cs = parseClassSet({ classes: [{ name: 'bg', color: '#000000' }, { name: 'road', color: [10, 20, 30] }, { name: 'car' }], void: [255, 255, 255] }, 'c.json');
    assert.deepEqual(cs.names, ['bg', 'road', 'car']);
    assert.deepEqual(cs.colors, [[0, 0, 0], [10, 20, 30], [0, 128, 0]]);
    assert.deepEqual(cs.voidColor, [255, 255, 255]);
    assert.throws(() => parseClassSet([], 'c.json'), /c\.json: the class list is empty/);
    assert.throws(() => parseClassSet([{ name: 'a' }, { name: 'a' }], 'c.json'), /duplicate name "a"/);
    assert.throws(() => parseClassSet([{ name: 'a', color: [0, 0, 0] }, { name: 'b', color: [0, 0, 0] }], 'c.json'), /share the colour/);
    assert.throws(() => parseClassSet([{ name: 'a', color: [300, 0, 0] }], 'c.json'), /c\.json: class 0: colour/);
    assert.deepEqual(vocClassSet().names, VOC_CLASS_NAMES);
    assert.deepEqual(vocClassSet().colors[15], [192, 128, 128]);
  });
});

describe('id lists', () => {
  test('first word per line, blanks and comments skipped; empty and duplicated lists fail', async () => {
    assert.deepEqual(parseIdList('a\n\n# note\nb  1\r\nc\n', 'l.txt'), ['a', 'b', 'c']);
    assert.throws(() => parseIdList('\n\n', 'l.txt'), /^Error: l\.txt: empty split \(no ids\)/);
    assert.throws(() => parseIdList('a\nb\na\n', 'l.txt'), /l\.txt: line 3: id "a" is listed twice/);
    await assert.rejects(readIdList('/nonexistent/list.txt'), /\/nonexistent\/list\.txt: cannot read id list \(ENOENT\)/);
  });
});

describe('VOC and SBD readers on the real sample', () => {
  test('VOC train/val/trainval have 580/96/676 pairs that decode with matching sizes', { skip: needShared(vocRoot) }, async () => {
    const train = await vocDataset(vocRoot, { split: 'train' });
    const val = await vocDataset(join(vocRoot, '..'), { split: 'val' }); // VOCdevkit/ works too
    const all = await vocDataset(join(vocRoot, '..', '..'), { split: 'trainval' }); // and its parent
    assert.deepEqual([train.entries.length, val.entries.length, all.entries.length], [580, 96, 676]);
    assert.equal(train.kind, 'voc');
    const s = await readSample(train.entries[0]!, train.classes);
    assert.equal(s.image.length, s.width * s.height * 3);
    assert.equal(s.label.length, s.width * s.height);
    assert.ok(s.label.every((v) => v <= 20 || v === 255));
  });
  test('SBD reader pairs img/<id>.jpg with cls/<id>.mat', { skip: needShared(riderMat) }, async () => {
    const ds = await sbdDataset(sbdRoot, { split: 'val' });
    assert.equal(ds.entries.length, 1);
    const s = await readSample(ds.entries[0]!, ds.classes);
    assert.equal(s.id, 'rider');
    assert.deepEqual([s.width, s.height], [500, 333]);
    assert.deepEqual(await openDataset(join(sbdRoot, '..'), { split: 'val' }).then((d) => d.kind), 'sbd');
  });
  test('an empty SBD split is an error naming the list', { skip: needShared(sbdRoot) }, async () => {
    await assert.rejects(sbdDataset(sbdRoot, { split: 'train' }), (e: Error) => e.message === `${join(sbdRoot, 'train.txt')}: empty split (no ids)`);
  });
});

describe('bad input', () => {
  let dir = '';
  let cleanup = () => {};
  before(async () => {
    ({ dir, cleanup } = tempDir('bad'));
    const voc = join(dir, 'VOC2012');
    for (const d of ['JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation']) mkdirSync(join(voc, d), { recursive: true });
    const img = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 90, g: 120, b: 30 } } }).jpeg().toBuffer();
    const ok = await img(40, 30);
    writeFileSync(join(voc, 'JPEGImages', 'good.jpg'), ok);
    await writeLabelPng(join(voc, 'SegmentationClass', 'good.png'), new Uint8Array(40 * 30).fill(3), 40, 30);
    const big = await img(200, 150);
    writeFileSync(join(voc, 'JPEGImages', 'truncated.jpg'), big.subarray(0, Math.floor(big.length / 2)));
    await writeLabelPng(join(voc, 'SegmentationClass', 'truncated.png'), new Uint8Array(200 * 150), 200, 150);
    writeFileSync(join(voc, 'JPEGImages', 'notimage.jpg'), 'hello, not a JPEG');
    await writeLabelPng(join(voc, 'SegmentationClass', 'notimage.png'), new Uint8Array(4), 2, 2);
    writeFileSync(join(voc, 'JPEGImages', 'size.jpg'), ok);
    await writeLabelPng(join(voc, 'SegmentationClass', 'size.png'), new Uint8Array(41 * 30), 41, 30);
    writeFileSync(join(voc, 'JPEGImages', 'nolabel.jpg'), ok);
    writeFileSync(join(voc, 'ImageSets/Segmentation/all.txt'), 'good\ntruncated\nnotimage\nsize\n');
    writeFileSync(join(voc, 'ImageSets/Segmentation/missing.txt'), 'good\nnolabel\nghost\n');
    writeFileSync(join(voc, 'ImageSets/Segmentation/empty.txt'), '\n');
  });
  after(() => cleanup());

  test('truncated image, non-image, size mismatch: each error names the file and the problem', async () => {
    const voc = join(dir, 'VOC2012');
    const ds = await vocDataset(voc, { split: 'all' });
    const byId = Object.fromEntries(ds.entries.map((e) => [e.id, e]));
    const s = await readSample(byId['good']!, ds.classes);
    assert.ok(s.label.every((v) => v === 3));
    await assert.rejects(readSample(byId['truncated']!, ds.classes), (e: Error) => e.message.startsWith(`${join(voc, 'JPEGImages', 'truncated.jpg')}: not a readable image`));
    await assert.rejects(readSample(byId['notimage']!, ds.classes), (e: Error) => e.message.startsWith(`${join(voc, 'JPEGImages', 'notimage.jpg')}: not a readable image`));
    await assert.rejects(readSample(byId['size']!, ds.classes), (e: Error) =>
      e.message === `${join(voc, 'SegmentationClass', 'size.png')}: label is 41×30 but its image size.jpg is 40×30`);
  });
  test('missing ids: an error naming the missing file, or skipped and reported', async () => {
    const voc = join(dir, 'VOC2012');
    await assert.rejects(vocDataset(voc, { split: 'missing' }), (e: Error) =>
      e.message === `${join(voc, 'SegmentationClass', 'nolabel.png')}: missing file for id "nolabel"`);
    const missing: { id: string; file: string; reason: string }[] = [];
    const ds = await vocDataset(voc, { split: 'missing', onMissing: 'skip', missing });
    assert.deepEqual(ds.entries.map((e) => e.id), ['good']);
    assert.deepEqual(missing.map((m) => [m.id, m.file]), [['nolabel', join(voc, 'SegmentationClass', 'nolabel.png')], ['ghost', join(voc, 'JPEGImages', 'ghost.jpg')]]);
  });
  test('empty split and unknown split name', async () => {
    const voc = join(dir, 'VOC2012');
    await assert.rejects(vocDataset(voc, { split: 'empty' }), /empty\.txt: empty split \(no ids\)/);
    await assert.rejects(vocDataset(voc, { split: 'nope' }), /nope\.txt: cannot read id list \(ENOENT\)/);
    await assert.rejects(vocDataset(join(dir, 'nothing')), /nothing: not a Pascal VOC root/);
  });
});

describe('custom datasets', () => {
  let dir = '';
  let cleanup = () => {};
  before(() => ({ dir, cleanup } = tempDir('custom')));
  after(() => cleanup());

  test('colour masks and palette masks with a 3-class classes file read everywhere VOC does', async () => {
    mkdirSync(join(dir, 'images'));
    mkdirSync(join(dir, 'masks'));
    writeFileSync(join(dir, 'classes.json'), JSON.stringify({ classes: [{ name: 'sky', color: [0, 0, 255] }, { name: 'grass', color: [0, 255, 0] }, { name: 'rock', color: [128, 128, 128] }], void: [255, 255, 255] }));
    const w = 16, h = 12;
    const want = Uint8Array.from({ length: w * h }, (_, i) => (i % w === 0 ? 255 : Math.floor((i / w) / 4)));
    const cols: Record<number, number[]> = { 0: [0, 0, 255], 1: [0, 255, 0], 2: [128, 128, 128], 255: [255, 255, 255] };
    const rgb = new Uint8Array(w * h * 3);
    want.forEach((v, i) => rgb.set(cols[v]!, i * 3));
    writeFileSync(join(dir, 'masks', 'a.png'), encodePng({ width: w, height: h, data: rgb, channels: 3, depth: 8 }));
    await writeLabelPng(join(dir, 'masks', 'b.png'), want, w, h);
    for (const id of ['a', 'b']) await sharp({ create: { width: w, height: h, channels: 3, background: '#808080' } }).png().toFile(join(dir, 'images', `${id}.png`));
    await sharp({ create: { width: w, height: h, channels: 3, background: '#808080' } }).jpeg().toFile(join(dir, 'images', 'c.jpg')); // no mask: not listed
    const ds = await openDataset(dir);
    assert.equal(ds.kind, 'custom');
    assert.deepEqual(ds.classes.names, ['sky', 'grass', 'rock']);
    assert.deepEqual(ds.entries.map((e) => e.id), ['a', 'b']);
    for (const e of ds.entries) assert.deepEqual((await readSample(e, ds.classes)).label, want);
    writeFileSync(join(dir, 'val.txt'), 'b\n');
    const val = await customDataset(dir, { split: 'val' });
    assert.deepEqual(val.entries.map((e) => e.id), ['b']);
    copyFileSync(join(dir, 'classes.json'), join(dir, 'c2.json'));
    assert.equal(JSON.parse(readFileSync(join(dir, 'c2.json'), 'utf8')).classes.length, 3);
  });
});
