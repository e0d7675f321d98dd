import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfusionMatrix } from '../../src/report/confusion.js';
import { writeHtmlReport, type HtmlReportSpec } from '../../src/report/html.js';
import { lineChartSvg } from '../../src/report/plot.js';
import { assertWellFormedXml } from './xml.js';

const hostileName = '<script>alert("x")</script> & co';

function spec(dir: string): HtmlReportSpec {
  const m = ConfusionMatrix.fromJSON({ numClasses: 3, hist: [[50, 2, 0], [4, 30, 0], [0, 0, 0]] }).compute();
  return {
    title: 'FCN-8s <demo> & "friends"',
    subtitle: 'synthetic val, 12 images',
    metrics: m,
    classNames: ['background', hostileName, 'bicycle'],
    charts: [
      { title: 'Loss <per epoch>', svgPath: join(dir, 'loss.svg') },
      { title: 'Mean IoU', svgPath: join(dir, 'miou.svg') },
    ],
    samples: [
      { id: 'img <1>', imagePng: join(dir, 'samples', 'a b.png'), truthPng: 'samples/t.png', predPng: 'p.png' },
    ],
    config: { model: 'fcn8', note: '</pre><b>bold</b>', lr: 1e-4 },
  };
}

test('the HTML report has every section, escapes all text, inlines charts and links images', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-html-'));
  try {
    await writeFile(join(dir, 'loss.svg'), lineChartSvg({ title: 'loss', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'train', points: [[1, 2], [2, 1]] }] }));
    await writeFile(join(dir, 'miou.svg'), '<?xml version="1.0" encoding="UTF-8"?>\n' +
      lineChartSvg({ title: 'mIoU chart', xLabel: 'epoch', yLabel: 'mean IoU', series: [{ name: 'val', points: [[1, 0.3], [2, 0.5]] }] }));
    const path = join(dir, 'report.html');
    const s = spec(dir);
    await writeHtmlReport(path, s);
    const html = await readFile(path, 'utf8');

    assert.ok(html.startsWith('<!DOCTYPE html>'));
    for (const section of ['metrics', 'classes', 'charts', 'samples', 'config']) {
      assert.equal(html.split(`<section id="${section}">`).length, 2, `section ${section} once`);
    }
    // Escaping: no injected markup survives; the escaped forms are there.
    assert.ok(!html.includes('<script'));
    assert.ok(!html.includes('<b>bold'));
    assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co'));
    assert.ok(html.includes('<title>FCN-8s &lt;demo&gt; &amp; &quot;friends&quot;</title>'));
    assert.ok(html.includes('Loss &lt;per epoch&gt;'));
    assert.ok(html.includes('img &lt;1&gt;'));
    // Metrics: the four values as percentages, and a row per class.
    for (const v of [s.metrics.meanIoU, s.metrics.pixelAccuracy, s.metrics.meanAccuracy, s.metrics.frequencyWeightedIoU]) {
      assert.ok(html.includes(`>${(100 * v).toFixed(2)}<`), `metric ${v}`);
    }
    assert.ok(html.includes(`<td>bicycle</td><td class="num">—</td>`), 'an absent class shows a dash');
    // Charts: both inlined (no XML declaration inside HTML), and each well-formed on its own.
    const svgs = [...html.matchAll(/<svg[\s\S]*?<\/svg>/g)].map((m) => m[0]);
    assert.equal(svgs.length, 2);
    svgs.forEach((svg) => assertWellFormedXml(svg));
    assert.ok(html.includes('mIoU chart'));
    assert.ok(!html.includes('<?xml'));
    // Images: absolute path → relative and URL-encoded link; relative kept.
    assert.ok(html.includes('src="samples/a%20b.png"'));
    assert.ok(html.includes('src="samples/t.png"'));
    // Config as pretty JSON.
    assert.ok(html.includes('&quot;model&quot;: &quot;fcn8&quot;'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a report without charts or samples says so, and a chart whose file is missing is an error', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-html-'));
  try {
    const s = { ...spec(dir), charts: [], samples: [] };
    await writeHtmlReport(join(dir, 'r.html'), s);
    const html = await readFile(join(dir, 'r.html'), 'utf8');
    assert.ok(html.includes('No charts.') && html.includes('No samples.'));
    await assert.rejects(writeHtmlReport(join(dir, 'r.html'), { ...s, charts: [{ title: 'lost', svgPath: join(dir, 'lost.svg') }] }), /lost\.svg: cannot read chart \(ENOENT\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
