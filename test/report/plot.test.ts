import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import { lineChartSvg, writeChart, type ChartSpec } from '../../src/report/plot.js';
import { assertWellFormedXml } from './xml.js';

const epochs = Array.from({ length: 12 }, (_, i) => i + 1);
const lossSpec: ChartSpec = {
  title: 'Loss <train & val>',
  xLabel: 'epoch',
  yLabel: 'loss',
  series: [
    { name: 'train', points: epochs.map((e) => [e, 2 / e + 0.1]) },
    { name: 'val "held-out"', points: epochs.map((e) => [e, e === 4 || e === 5 ? NaN : 2.2 / e + 0.2]), dashed: true },
  ],
};

function attributeValues(svg: string, element: string, attribute: string): string[] {
  return [...svg.matchAll(new RegExp(`<${element}\\b[^>]*\\s${attribute}="([^"]*)"`, 'g'))].map((m) => m[1]);
}

test('chart SVG is well-formed, escapes text, has title, axis labels, ticks and a legend entry per series', () => {
  const svg = lineChartSvg(lossSpec);
  const { elements } = assertWellFormedXml(svg);
  assert.equal(elements[0], 'svg');
  assert.ok(svg.includes('Loss &lt;train &amp; val&gt;'));
  assert.ok(svg.includes('val &quot;held-out&quot;'));
  assert.ok(!svg.includes('NaN') && !svg.includes('Infinity'));
  const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  for (const label of ['epoch', 'loss', 'train']) assert.ok(texts.includes(label), `missing text ${label}`);
  // Epoch ticks are whole numbers and cover the data.
  const numericTicks = texts.filter((t) => /^-?\d+(\.\d+)?$/.test(t)).map(Number);
  assert.ok(numericTicks.includes(12) && Math.min(...numericTicks) <= 1, `ticks ${numericTicks} do not cover epochs 1-12`);
  assert.ok(numericTicks.every((t) => t === Math.round(t * 100) / 100), 'tick labels are rounded, not float noise');
  // Deterministic: the same data gives the same bytes.
  assert.equal(lineChartSvg(lossSpec), svg);
});

test('a NaN breaks a line into two, and every coordinate lies inside the SVG', () => {
  const svg = lineChartSvg(lossSpec);
  const polylines = attributeValues(svg, 'polyline', 'points');
  // train: one line; val: a line before the gap (epochs 1-3) and one after (6-12).
  assert.equal(polylines.length, 3);
  const pointCounts = polylines.map((p) => p.trim().split(/\s+/).length).sort((a, b) => a - b);
  assert.deepEqual(pointCounts, [3, 7, 12]);
  for (const pair of polylines.flatMap((p) => p.trim().split(/\s+/))) {
    const [x, y] = pair.split(',').map(Number);
    assert.ok(x >= 0 && x <= 720 && y >= 0 && y <= 420, `point ${pair} outside the chart`);
  }
  // Higher loss is drawn higher (smaller SVG y): train's first point above its last.
  const train = polylines.find((p) => p.trim().split(/\s+/).length === 12)!.trim().split(/\s+/).map((s) => Number(s.split(',')[1]));
  assert.ok(train[0] < train[11]);
});

test('a single point and a constant series render without a zero-range axis', () => {
  const single = lineChartSvg({ title: 'one', xLabel: 'epoch', yLabel: 'mIoU', series: [{ name: 'val', points: [[1, 0.42]] }] });
  assertWellFormedXml(single);
  assert.equal(attributeValues(single, 'polyline', 'points').length, 0);
  const circles = attributeValues(single, 'circle', 'cy');
  assert.ok(circles.length >= 1);
  assert.ok(!single.includes('NaN') && !single.includes('Infinity'));

  const constant = lineChartSvg({ title: 'flat', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'train', points: [[1, 3], [2, 3], [3, 3]] }] });
  assertWellFormedXml(constant);
  assert.ok(!constant.includes('NaN') && !constant.includes('Infinity'));
  const ys = attributeValues(constant, 'polyline', 'points')[0].split(' ').map((p) => Number(p.split(',')[1]));
  assert.ok(ys.every((y) => y === ys[0] && y > 44 && y < 420 - 56), 'a constant line sits inside the plot area');

  const empty = lineChartSvg({ title: 'nothing yet', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'train', points: [[1, NaN]] }] });
  assertWellFormedXml(empty);
  assert.ok(!empty.includes('NaN'));
});

test('writeChart writes the SVG and a PNG of the same size', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-plot-'));
  try {
    const { svgPath, pngPath } = await writeChart(join(dir, 'loss'), { ...lossSpec, width: 640, height: 360 });
    assert.equal(svgPath, join(dir, 'loss.svg'));
    assertWellFormedXml(await readFile(svgPath, 'utf8'));
    const png = decodePng(await readFile(pngPath));
    assert.equal(png.width, 640);
    assert.equal(png.height, 360);
    // Not blank: the line colours made it into the raster.
    const data = png.data as Uint8Array;
    let coloured = 0;
    for (let i = 0; i < data.length; i += png.channels) if (Math.abs(data[i] - data[i + 2]) > 80) coloured++;
    assert.ok(coloured > 200, `only ${coloured} coloured pixels`);
    const scaled = decodePng(await readFile((await writeChart(join(dir, 'hidpi'), lossSpec, { scale: 2 })).pngPath));
    assert.deepEqual([scaled.width, scaled.height], [1440, 840]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
