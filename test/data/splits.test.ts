import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { paperSplit, kerasSplit, kerasSplitIds } from '../../src/data/splits.js';
import { needShared, runData, sharedData, tempDir } from './helpers.js';

const seedDir = join(sharedData, 'splits', 'seed');
const seg11 = join(sharedData, 'splits', 'paper', 'seg11valid.txt');
const lines = (p: string) => readFileSync(p, 'utf8').split('\n').filter(Boolean);

describe('seed split', () => {
  let dir = '';
  let cleanup = () => {};
  before(() => ({ dir, cleanup } = tempDir('splits')));
  after(() => cleanup());

  test('from VOC and SBD roots, equals the seed\'s own lists id for id', { skip: needShared(seedDir) }, async () => {
    const trainMat = lines(join(seedDir, 'train_mat.txt'));
    const trainPng = lines(join(seedDir, 'train_png.txt'));
    const valMat = lines(join(seedDir, 'val_mat.txt'));
    assert.deepEqual([trainMat.length, trainPng.length, valMat.length], [10155, 676, 1200]);
    // Rebuild SBD's own lists the way the release has them (train.txt 8,498 and val.txt 2,857
    // ids, val sorted with Keras-FCN's 1,200 first), shuffling train.txt so order is not assumed;
    // VOC's trainval holds the 676 VOC-only ids plus some SBD ids, which must be left out.
    const lastVal = valMat[valMat.length - 1]!;
    const late = trainMat.filter((id) => id > lastVal);
    const valTail = late.filter((_, i) => i % 3 === 1).slice(0, 1657);
    assert.equal(valTail.length, 1657);
    const tail = new Set(valTail);
    const sbdTrain = trainMat.filter((id) => !tail.has(id)).reverse();
    assert.equal(sbdTrain.length, 8498);
    const sbdVal = [...valMat, ...valTail];
    const vocTrainval = [...trainPng, ...trainMat.slice(0, 300), ...valMat.slice(0, 200)].sort();
    const voc = join(dir, 'VOCdevkit', 'VOC2012');
    mkdirSync(join(voc, 'ImageSets', 'Segmentation'), { recursive: true });
    mkdirSync(join(voc, 'JPEGImages'));
    mkdirSync(join(voc, 'SegmentationClass'));
    writeFileSync(join(voc, 'ImageSets', 'Segmentation', 'trainval.txt'), vocTrainval.join('\n') + '\n');
    const sbd = join(dir, 'benchmark_RELEASE', 'dataset');
    mkdirSync(join(sbd, 'img'), { recursive: true });
    mkdirSync(join(sbd, 'cls'));
    writeFileSync(join(sbd, 'train.txt'), sbdTrain.join('\n') + '\n');
    writeFileSync(join(sbd, 'val.txt'), sbdVal.join('\n') + '\n');

    const split = await kerasSplit(dir, join(dir, 'benchmark_RELEASE'));
    assert.deepEqual(split.ids.trainMat, trainMat);
    assert.deepEqual(split.ids.trainPng, trainPng);
    assert.deepEqual(split.ids.valMat, valMat);
    assert.equal(split.train.entries.length, 10831);
    assert.equal(split.val.entries.length, 1200);
    assert.equal(split.train.kind, 'mixed');
    assert.ok(split.train.entries[0]!.label.endsWith(`${trainMat[0]}.mat`));
    assert.ok(split.train.entries[10830]!.label.endsWith(join('SegmentationClass', `${trainPng[675]}.png`)));
    assert.ok(split.val.entries.every((e) => e.image.startsWith(join(sbd, 'img'))));
    // The command line writes the same three lists.
    const out = join(dir, 'lists');
    // 'keras' is the split's name, 'seed' its old one: both give the lists in ../shared.
    for (const name of ['keras', 'seed']) {
      const r = await runData('split', name, '--voc', dir, '--sbd', sbd, '--out', join(out, name));
      assert.equal(r.code, 0, r.err);
      for (const f of ['train_mat.txt', 'train_png.txt', 'val_mat.txt']) assert.deepEqual(lines(join(out, name, f)), lines(join(seedDir, f)), `${name}: ${f}`);
    }
  });

  test('pure split function: val is SBD val\'s head, VOC-only ids exclude anything in SBD', () => {
    const s = kerasSplitIds(['v1', 'b2', 'v0', 'a9'], ['b2', 'b1'], Array.from({ length: 1203 }, (_, i) => `s${String(i).padStart(4, '0')}`).concat(['a9']));
    assert.equal(s.valMat.length, 1200);
    assert.deepEqual(s.trainMat, ['a9', 'b1', 'b2', 's1200', 's1201', 's1202']);
    assert.deepEqual(s.trainPng, ['v1', 'v0']);
  });
});

describe('paper split', () => {
  let dir = '';
  let cleanup = () => {};
  before(() => ({ dir, cleanup } = tempDir('paper')));
  after(() => cleanup());

  test('SBD train for training, the 736 seg11valid ids (VOC PNG labels) for validation', { skip: needShared(seg11) }, async () => {
    const voc = join(dir, 'VOC2012');
    mkdirSync(join(voc, 'JPEGImages'), { recursive: true });
    mkdirSync(join(voc, 'SegmentationClass'));
    const sbd = join(dir, 'sbd');
    mkdirSync(join(sbd, 'img'), { recursive: true });
    mkdirSync(join(sbd, 'cls'));
    writeFileSync(join(sbd, 'train.txt'), 'x1\nx2\nx3\n');
    const split = await paperSplit(voc, sbd, seg11);
    assert.deepEqual(split.train.entries.map((e) => e.id), ['x1', 'x2', 'x3']);
    assert.equal(split.val.entries.length, 736);
    assert.deepEqual(split.val.entries.map((e) => e.id), lines(seg11));
    assert.ok(split.val.entries[0]!.label.endsWith('.png'));
  });
});
