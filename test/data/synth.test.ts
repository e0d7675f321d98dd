import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readSample, vocDataset, type RawSample } from '../../src/data/datasets.js';
import { renderScene, synthesizeDataset, SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { tempDir } from './helpers.js';

describe('synthetic dataset', () => {
  let dir = '', dir2 = '';
  const cleanups: (() => void)[] = [];
  let train: RawSample[] = [], val: RawSample[] = [];
  before(async () => {
    const a = tempDir('synth'), b = tempDir('synth2');
    dir = a.dir; dir2 = b.dir;
    cleanups.push(a.cleanup, b.cleanup);
    await synthesizeDataset({ out: dir, count: 60, seed: 3, size: 96 });
    await synthesizeDataset({ out: dir2, count: 6, seed: 3, size: 96 });
    const tr = await vocDataset(dir, { split: 'train' });
    const va = await vocDataset(dir, { split: 'val' });
    train = await Promise.all(tr.entries.map((e) => readSample(e, tr.classes)));
    val = await Promise.all(va.entries.map((e) => readSample(e, va.classes)));
  });
  after(() => cleanups.forEach((c) => c()));

  test('VOC layout with split files and a classes file; reads back as a VOC root', async () => {
    assert.equal(train.length, 48);
    assert.equal(val.length, 12);
    const ds = await vocDataset(dir, { split: 'trainval' });
    assert.deepEqual(ds.classes.names, SYNTH_CLASS_NAMES);
    assert.equal(ds.entries.length, 60);
    assert.ok(train.every((s) => s.width === 96 && s.height === 96));
    assert.ok([...train, ...val].every((s) => s.label.every((v) => v <= 5 || v === 255)));
  });

  test('one seed decides everything: the same scenes for the same seed whatever the count', () => {
    for (const f of ['JPEGImages/synth_00004.jpg', 'SegmentationClass/synth_00004.png']) {
      assert.deepEqual(readFileSync(join(dir, f)), readFileSync(join(dir2, f)));
    }
    const a = renderScene(3, 4, 96), b = renderScene(4, 4, 96);
    assert.notDeepEqual(a.label, b.label);
  });

  test('varied: every class appears, objects of several classes share scenes, sizes vary', () => {
    const pixels = new Array(6).fill(0), scenesWith = new Array(6).fill(0);
    let multi = 0;
    const areas: number[] = [];
    for (const s of train) {
      const present = new Set<number>();
      s.label.forEach((v) => { if (v < 6) { pixels[v]++; present.add(v); } });
      for (const c of present) scenesWith[c]++;
      if ([...present].filter((c) => c > 0).length >= 2) multi++;
      areas.push(s.label.filter((v) => v > 0 && v < 6).length);
    }
    for (let c = 1; c < 6; c++) assert.ok(scenesWith[c] >= 5, `class ${c} in ${scenesWith[c]} scenes`);
    assert.ok(multi >= 10, `${multi} multi-class scenes`);
    assert.ok(Math.max(...areas) > 3 * Math.min(...areas));
  });

  test('learnable but not trivial: colour alone classifies object pixels well but not perfectly', () => {
    // Nearest class-mean colour, fitted on train object pixels, scored on val object pixels.
    const sum = Array.from({ length: 6 }, () => [0, 0, 0, 0]);
    for (const s of train) s.label.forEach((v, i) => {
      if (v === 0 || v > 5) return;
      const t = sum[v]!;
      t[0]! += s.image[i * 3]!; t[1]! += s.image[i * 3 + 1]!; t[2]! += s.image[i * 3 + 2]!; t[3]!++;
    });
    const means = sum.map((t) => [t[0]! / t[3]!, t[1]! / t[3]!, t[2]! / t[3]!]);
    let right = 0, total = 0;
    for (const s of val) s.label.forEach((v, i) => {
      if (v === 0 || v > 5) return;
      let best = 1, bd = Infinity;
      for (let c = 1; c < 6; c++) {
        const d = (s.image[i * 3]! - means[c]![0]!) ** 2 + (s.image[i * 3 + 1]! - means[c]![1]!) ** 2 + (s.image[i * 3 + 2]! - means[c]![2]!) ** 2;
        if (d < bd) { bd = d; best = c; }
      }
      total++;
      if (best === v) right++;
    });
    const acc = right / total;
    if (process.env.FCN_TEST_VERBOSE) console.log(`colour-only accuracy ${acc.toFixed(3)}`);
    assert.ok(acc > 0.5 && acc < 0.97, `colour-only accuracy ${acc.toFixed(3)}`);
  });
  test('bad options are refused', async () => {
    await assert.rejects(synthesizeDataset({ out: dir, count: 1 }), /count must be/);
    await assert.rejects(synthesizeDataset({ out: dir, size: 8 }), /size must be/);
  });
});
