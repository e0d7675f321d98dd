import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decode } from 'fast-png';
import { writeLabelPng } from '../../src/io/image.js';
import { checkDataset } from '../../src/data/check.js';
import { vocDataset } from '../../src/data/datasets.js';
import { synthesizeDataset } from '../../src/data/synth.js';
import { needShared, runData as run, sbdRoot, tempDir, vocRoot } from './helpers.js';

describe('dataset check', () => {
  test('real VOC val: all good, and pixel counts per value equal an independent count', { skip: needShared(vocRoot) }, async () => {
    const r = await run('check', vocRoot, '--split', 'val', '--json');
    assert.equal(r.code, 0, r.err);
    const rep = JSON.parse(r.out);
    assert.equal(rep.pairs, 96);
    assert.equal(rep.ok, 96);
    assert.deepEqual(rep.bad, []);
    // Count label values straight from the PNGs with fast-png.
    const want: Record<string, number> = {};
    let pixels = 0;
    for (const id of readFileSync(join(vocRoot, 'ImageSets', 'Segmentation', 'val.txt'), 'utf8').split('\n').filter(Boolean)) {
      const p = decode(readFileSync(join(vocRoot, 'SegmentationClass', `${id}.png`)));
      for (const v of p.data as Uint8Array) want[String(v)] = (want[String(v)] ?? 0) + 1;
      pixels += p.width * p.height;
    }
    assert.deepEqual(rep.labelValueCounts, want);
    assert.equal(rep.totalPixels, pixels);
    assert.equal(rep.classes[15].name, 'person');
    assert.equal(rep.classes[15].pixels, want['15']);
    const text = await run('check', vocRoot, '--split', 'val');
    assert.match(text.out, /pairs: 96, good: 96, bad: 0/);
    assert.match(text.out, /15 {2}person +\d+/);
  });

  test('real SBD root: val checks clean; the empty train list is reported', { skip: needShared(sbdRoot) }, async () => {
    const val = await run('check', sbdRoot, '--split', 'val', '--json');
    assert.equal(val.code, 0, val.err);
    const rep = JSON.parse(val.out);
    assert.deepEqual(Object.keys(rep.labelValueCounts).sort(), ['0', '13', '15']);
    assert.equal(rep.totalPixels, 333 * 500);
    const all = await run('check', sbdRoot);
    assert.equal(all.code, 1);
    assert.match(all.out, /train\.txt: empty split/);
  });

  describe('on a damaged dataset', () => {
    let dir = '';
    let cleanup = () => {};
    before(async () => {
      ({ dir, cleanup } = tempDir('check'));
      await synthesizeDataset({ out: dir, count: 10, seed: 2, size: 48 });
      const jpg = join(dir, 'JPEGImages');
      const seg = join(dir, 'SegmentationClass');
      writeFileSync(join(jpg, 'synth_00000.jpg'), readFileSync(join(jpg, 'synth_00000.jpg')).subarray(0, 300)); // truncated
      await writeLabelPng(join(seg, 'synth_00001.png'), new Uint8Array(50 * 48), 50, 48); // wrong size
      await writeLabelPng(join(seg, 'synth_00002.png'), new Uint8Array(48 * 48).fill(9), 48, 48); // class 9 of 6
      rmSync(join(seg, 'synth_00003.png')); // missing
    });
    after(() => cleanup());

    test('every bad pair is listed with its file and reason; exit code 1', async () => {
      const r = await run('check', dir, '--json');
      assert.equal(r.code, 1);
      const rep = JSON.parse(r.out);
      assert.equal(rep.pairs, 10);
      assert.equal(rep.ok, 6);
      const reasons = Object.fromEntries(rep.bad.map((b: { id: string; file: string; reason: string }) => [b.id, `${b.file}: ${b.reason}`]));
      assert.match(reasons['synth_00000'], /JPEGImages\/synth_00000\.jpg: not a readable image/);
      assert.match(reasons['synth_00001'], /SegmentationClass\/synth_00001\.png: label is 50×48 but its image synth_00001\.jpg is 48×48/);
      assert.match(reasons['synth_00002'], /synth_00002\.png: label values outside the 6 classes and 255: 9 \(2304 px\)/);
      assert.match(reasons['synth_00003'], /synth_00003\.png: missing file for id "synth_00003"/);
      const text = await run('check', dir);
      assert.match(text.out, /bad pairs:\n.*synth_00000\.jpg: not a readable image/);
    });
    test('the library call counts only the good pairs', async () => {
      const ds = await vocDataset(dir, { split: 'trainval', onMissing: 'skip' });
      const rep = await checkDataset(ds, { concurrency: 2 });
      const sum = Object.values(rep.labelValueCounts).reduce((a, b) => a + b, 0);
      assert.equal(sum, rep.ok * 48 * 48);
      assert.equal(rep.classes.reduce((a, c) => a + c.pixels, 0) + rep.voidPixels, sum);
    });
  });
});

describe('fcn data command line', () => {
  let dir = '';
  let cleanup = () => {};
  before(() => ({ dir, cleanup } = tempDir('cli')));
  after(() => cleanup());

  test('synth writes a dataset that checks clean', async () => {
    const out = join(dir, 's');
    const r = await run('synth', '--out', out, '--count', '8', '--size', '40', '--seed', '4');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), out);
    const c = await run('check', out, '--json');
    assert.equal(c.code, 0, c.out);
    assert.equal(JSON.parse(c.out).ok, 8);
  });
  test('bad arguments: one clear line on stderr and a non-zero code', async () => {
    const cases: [string[], RegExp][] = [
      [['synth'], /^fcn data synth: --out is required\n$/],
      [['synth', '--out', dir, '--count', 'x'], /^fcn data synth: --count must be an integer ≥ 2, got 'x'\n$/],
      [['synth', '--out', dir, '--bogus'], /^fcn data synth: unknown option '--bogus' \(fcn data synth --help lists the options\)\n$/],
      [['check'], /^fcn data check: expected one dataset root, got none\n$/],
      [['check', dir, '--split', 'a', '--list', 'b'], /^fcn data check: give --split or --list, not both\n$/],
      [['check', join(dir, 'nope')], /^fcn data check: .*nope: no such folder\n$/],
      [['fetch'], /^fcn data fetch: expected one dataset \(voc2012 or sbd\), got none\n$/],
      [['fetch', 'imagenet'], /^fcn data fetch: unknown dataset 'imagenet' \(voc2012, sbd\)\n$/],
      [['fetch', 'sbd', '--md5', 'xyz'], /^fcn data fetch: --md5 must be 32 hex digits, got 'xyz'\n$/],
      [['split', 'other', '--voc', 'a', '--sbd', 'b', '--out', 'c'], /^fcn data split: unknown split 'other' \(keras, paper\)\n$/],
      [['frobnicate'], /^fcn data: unknown subcommand 'frobnicate'/],
    ];
    for (const [argv, re] of cases) {
      const r = await run(...argv);
      assert.notEqual(r.code, 0, argv.join(' '));
      assert.match(r.err, re, argv.join(' '));
      assert.equal(r.err.trim().split('\n').length, 1, argv.join(' '));
    }
    mkdirSync(join(dir, 'empty'));
    const e = await run('check', join(dir, 'empty'));
    assert.equal(e.code, 1);
    assert.match(e.err, /neither a VOC root/);
  });
});
