import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import type { RgbImage } from '../../src/io/image.js';
import { classShares, colorize, overlay, writeComparison, writeRgbPng, writeSampleGrid } from '../../src/report/viz.js';

// Expected colours straight from the VOC definition (not from the code under test).
const vocColours: Record<number, [number, number, number]> = {
  0: [0, 0, 0], 1: [128, 0, 0], 2: [0, 128, 0], 7: [128, 128, 128], 15: [192, 128, 128], 20: [0, 64, 128], 255: [224, 224, 192],
};
const classNames = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor'];

function gradientImage(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    data[3 * i] = (i % width) * 4 % 256;
    data[3 * i + 1] = Math.floor(i / width) * 4 % 256;
    data[3 * i + 2] = 90;
  }
  return { data, width, height };
}

/** Left half background, a band of `cls`, a void column. */
function sceneLabels(width: number, height: number, cls: number): Uint8Array {
  const labels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    labels[y * width + x] = x === width - 1 ? 255 : x >= width / 2 ? cls : 0;
  }
  return labels;
}

function pixelAt(png: { data: ArrayLike<number>; width: number; channels: number }, x: number, y: number): number[] {
  const o = (y * png.width + x) * png.channels;
  return [png.data[o], png.data[o + 1], png.data[o + 2]];
}

test('colorize uses the VOC palette, void included', () => {
  const labels = Uint8Array.from(Object.keys(vocColours).map(Number));
  const rgb = colorize(labels, labels.length, 1);
  labels.forEach((k, i) => assert.deepEqual([...rgb.subarray(3 * i, 3 * i + 3)], vocColours[k], `class ${k}`));
  assert.throws(() => colorize(labels, 2, 2), /labels for a 2×2 image/);
});

test('overlay blends class colours at alpha, keeps background pixels, leaves the input alone', () => {
  const image: RgbImage = { data: Uint8Array.of(100, 50, 200, 100, 50, 200, 100, 50, 200), width: 3, height: 1 };
  const before = Uint8Array.from(image.data);
  const out = overlay(image, Uint8Array.of(0, 15, 255), 0.25);
  assert.deepEqual([...out.data.subarray(0, 3)], [100, 50, 200]);
  assert.deepEqual([...out.data.subarray(3, 6)], [Math.round(0.75 * 100 + 0.25 * 192), Math.round(0.75 * 50 + 0.25 * 128), Math.round(0.75 * 200 + 0.25 * 128)]);
  assert.deepEqual([...out.data.subarray(6, 9)], [Math.round(0.75 * 100 + 0.25 * 224), Math.round(0.75 * 50 + 0.25 * 224), Math.round(0.75 * 200 + 0.25 * 192)]);
  assert.deepEqual(image.data, before);
  assert.deepEqual([...overlay(image, Uint8Array.of(1, 1, 1), 1).data], [128, 0, 0, 128, 0, 0, 128, 0, 0]);
});

test('classShares counts each class present, largest first, with names and void', () => {
  const labels = Uint8Array.of(15, 15, 15, 0, 0, 255, 7, 7, 3, 3);
  const shares = classShares(labels, classNames);
  assert.deepEqual(shares.map((s) => [s.name, s.index, s.pixels]), [
    ['person', 15, 3], ['background', 0, 2], ['bird', 3, 2], ['car', 7, 2], ['void', 255, 1],
  ]);
  assert.ok(Math.abs(shares.reduce((sum, s) => sum + s.share, 0) - 1) < 1e-12);
  assert.equal(shares[0].share, 0.3);
});

test('writeComparison: image then one colourised panel per model, titled, with a legend', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-viz-'));
  try {
    const width = 200, height = 120;
    const image = gradientImage(width, height);
    const panels = [
      { title: 'FCN-32s', labels: sceneLabels(width, height, 15) },
      { title: 'FCN-8s <best>', labels: sceneLabels(width, height, 7) },
    ];
    const path = join(dir, 'compare.png');
    const size = await writeComparison(path, { image, panels, classNames });
    const png = decodePng(await readFile(path));
    assert.deepEqual([png.width, png.height], [size.width, size.height]);
    // Three tiles of 200 px, two 10 px gaps, 12 px margins.
    assert.equal(png.width, 3 * width + 2 * 10 + 2 * 12);
    assert.ok(png.height > height + 26 + 22, 'room for titles and a legend row');
    // Find the tiles by their colours: each panel's right half carries its class colour.
    const tileTop = 12 + 26;
    const inTile = (tile: number, x: number, y: number) => pixelAt(png, 12 + tile * (width + 10) + x, tileTop + y);
    assert.deepEqual(inTile(0, 10, 10), [...image.data.subarray((10 * width + 10) * 3, (10 * width + 10) * 3 + 3)]);
    assert.deepEqual(inTile(1, 10, 60), vocColours[0]);
    assert.deepEqual(inTile(1, 150, 60), vocColours[15]);
    assert.deepEqual(inTile(2, 150, 60), vocColours[7]);
    assert.deepEqual(inTile(2, width - 1, 60), vocColours[255]);
    // Legend swatches (below the tiles) include the person, car and void colours.
    const legendColours = new Set<string>();
    for (let y = tileTop + height; y < png.height; y++) for (let x = 0; x < png.width; x++) legendColours.add(pixelAt(png, x, y).join(','));
    for (const k of [15, 7, 255]) assert.ok(legendColours.has(vocColours[k].join(',')), `legend lacks class ${k}`);
    assert.ok(!legendColours.has(vocColours[20].join(',')), 'legend shows only classes present');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writeComparison enlarges small images by a whole factor and rejects mismatched maps', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-viz-'));
  try {
    const image = gradientImage(40, 30);
    const { width } = await writeComparison(join(dir, 'small.png'), { image, panels: [{ title: 'a', labels: sceneLabels(40, 30, 1) }], classNames });
    assert.equal(width, 2 * 160 + 10 + 24); // 40 px × 4 = 160
    await assert.rejects(writeComparison(join(dir, 'bad.png'), { image, panels: [{ title: 'a', labels: new Uint8Array(10) }], classNames }), /panel "a"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writeSampleGrid lays out image | truth | prediction rows at the cell size; writeRgbPng round-trips', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-viz-'));
  try {
    const rows = [0, 1, 2].map((r) => ({ image: gradientImage(128, 96), truth: sceneLabels(128, 96, 15), pred: sceneLabels(128, 96, r + 1) }));
    const path = join(dir, 'grid.png');
    const size = await writeSampleGrid(path, rows, { cellSize: 64 });
    const png = decodePng(await readFile(path));
    assert.deepEqual([png.width, png.height], [size.width, size.height]);
    assert.equal(png.width, 3 * 64 + 2 * 10 + 2 * 12);
    assert.equal(png.height, 12 + 26 + 3 * 48 + 2 * 10 + 12);
    // Row 2's prediction (right column, right half) is class 3 = (128, 128, 0).
    assert.deepEqual(pixelAt(png, 12 + 2 * (64 + 10) + 48, 12 + 26 + 2 * (48 + 10) + 24), [128, 128, 0]);

    const overlayPath = join(dir, 'overlay.png');
    const blended = overlay(rows[0].image, rows[0].truth);
    await writeRgbPng(overlayPath, blended);
    const decoded = decodePng(await readFile(overlayPath));
    assert.equal(decoded.channels, 3);
    assert.deepEqual(Uint8Array.from(decoded.data as Uint8Array), blended.data);
    await assert.rejects(writeSampleGrid(path, []), /no samples/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
