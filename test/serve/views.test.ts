// The Camera and Models views in Chromium (headless, playwright-core): the camera view
// segments the fake camera's frames continuously and reports frames per second, with every
// model side by side or one alone; the Models panel describes each model, and, with only the
// demo's models loaded, fetches the paper's FCN-8s from a local mirror (resuming a partial
// download) into the weights cache and loads it without a restart, after which it segments.
// Both views at 1280×900 and 390×844: no sideways scroll, screenshots not blank, no serious
// or critical axe-core finding. Screenshots go to test-artifacts/serve/ (gitignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import sharp from 'sharp';
import type { Browser, Page } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { cachedPath } from '../../src/io/weights-cache.js';
import { tempDir, shapeModels, vocModels, startServer, hasChromium, needsChromium, launchChromium, ARTIFACTS, type TestServer } from './fixtures.js';

const SIZES = [{ width: 1280, height: 900 }, { width: 390, height: 844 }];
const needs = { skip: needsChromium() };

const tmp = tempDir('views');
let server: TestServer | undefined;
let browser: Browser | undefined;
let mirror: http.Server | undefined;
/** The Range headers the mirror was asked with, and the file it serves as fcn8s. */
const ranges: (string | undefined)[] = [];
let paperFile = '';
const saved = { home: process.env['FCN_HOME'], url: process.env['FCN_WEIGHTS_FCN8S_URL'], url16: process.env['FCN_WEIGHTS_FCN16S_URL'] };

before(async () => {
  if (!hasChromium) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  // A narrow VOC FCN-8s stands for the paper's: the reader goes by the file's bytes, not its name.
  paperFile = vocModels(tmp.dir).at(-1)!;
  const bytes = readFileSync(paperFile);
  mirror = http.createServer((req, res) => {
    ranges.push(req.headers.range);
    if (req.url !== '/fcn8s') return res.writeHead(404).end();
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const from = m ? Number(m[1]) : 0;
    res.writeHead(m ? 206 : 200, { 'content-length': String(bytes.length - from), ...(m ? { 'content-range': `bytes ${from}-${bytes.length - 1}/${bytes.length}` } : {}) });
    res.end(bytes.subarray(from));
  });
  await new Promise<void>((r) => mirror!.listen(0, '127.0.0.1', r));
  const port = (mirror.address() as AddressInfo).port;
  // The server's worker reads the cache through the environment, as `fcn serve` would.
  process.env['FCN_HOME'] = path.join(tmp.dir, 'home');
  process.env['FCN_WEIGHTS_FCN8S_URL'] = `http://127.0.0.1:${port}/fcn8s`;
  process.env['FCN_WEIGHTS_FCN16S_URL'] = `http://127.0.0.1:${port}/nothing-here`;
  // Half of the file is already there: the download resumes from it.
  const dest = cachedPath('fcn8s');
  mkdirSync(path.dirname(dest), { recursive: true });
  writeFileSync(`${dest}.part`, bytes.subarray(0, Math.floor(bytes.length / 2)));
  server = await startServer({ weights: shapeModels(tmp.dir) });
  // A fake camera, allowed without asking, for the Camera view.
  browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
});

after(async () => {
  await browser?.close();
  await server?.close();
  await new Promise((r) => (mirror ? mirror.close(r) : r(null)));
  for (const [k, v] of [['FCN_HOME', saved.home], ['FCN_WEIGHTS_FCN8S_URL', saved.url], ['FCN_WEIGHTS_FCN16S_URL', saved.url16]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  tmp.remove();
});

async function newPage(size = SIZES[0]!): Promise<Page> {
  const context = await browser!.newContext({ viewport: size });
  await context.grantPermissions(['camera'], { origin: server!.url });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  (page as Page & { problems: string[] }).problems = problems;
  await page.route('**/*', (route) => (new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()));
  return page;
}

/** The view at this size: as wide as the viewport at most, a screenshot that is not one flat colour, no serious axe finding. */
async function checkView(page: Page, name: string, size: { width: number; height: number }): Promise<void> {
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= size.width, `${name} at ${size.width}px: the page is ${wide}px wide`);
  const file = path.join(ARTIFACTS, `${name}-${size.width}x${size.height}.png`);
  await page.screenshot({ path: file, fullPage: true });
  const { channels } = await sharp(file).stats();
  assert.ok(channels.some((c) => c.stdev > 10), `${file} is blank`);
  const axe = await new AxeBuilder({ page: page as never }).include(`#page-${name}`).analyze();
  const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`), [], name);
}

test('Camera: the fake camera\'s frames segmented continuously, fps shown, all models or one alone', needs, async () => {
  for (const size of SIZES) {
    const page = await newPage(size);
    await page.goto(`${server!.url}/#camera`);
    await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
    await page.click('#camera-start');
    await page.waitForFunction(() => Number(document.getElementById('camera-panels')!.dataset.frames ?? 0) >= 4, null, { timeout: 120_000 });
    assert.equal(await page.locator('#camera-panels .camera-panel').count(), 3, 'the three models side by side');
    const fps = Number(await page.getAttribute('#camera-panels', 'data-fps'));
    assert.ok(fps > 0, `frames per second reported: ${fps}`);
    assert.match((await page.textContent('#camera-status')) ?? '', /^\d+\.\d frames\/s at 256×192, 3 models, /);
    // Each panel shows the frame: the fake camera's picture is not one flat colour.
    for (const stdev of await page.$$eval('#camera-panels canvas', (cs) => cs.map((c) => {
      const { data } = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height);
      let s = 0, s2 = 0;
      for (let i = 0; i < data.length; i += 4) { s += data[i]!; s2 += data[i]! ** 2; }
      const n = data.length / 4;
      return Math.sqrt(s2 / n - (s / n) ** 2);
    }))) assert.ok(stdev > 5, `a camera panel is blank (stdev ${stdev})`);
    await checkView(page, 'camera', size);
    // One model alone: FCN-8s only, the other panels go.
    await page.selectOption('#camera-models', '2');
    const before = Number(await page.getAttribute('#camera-panels', 'data-frames'));
    await page.waitForFunction((n) => Number(document.getElementById('camera-panels')!.dataset.frames) >= n + 3, before, { timeout: 60_000 });
    assert.deepEqual(await page.$$eval('#camera-panels .camera-panel', (ps) => ps.map((p) => (p as HTMLElement).dataset.model)), ['2']);
    await page.click('#camera-stop');
    assert.deepEqual((page as Page & { problems: string[] }).problems, []);
    await page.context().close();
  }
});

// The race the page must not lose: a small file from a near mirror can be fetched and loaded
// before the page's first poll, which then sees it done without having seen it under way. Here
// the server's answers are replaced (nothing is fetched) so that the poll always sees it done.
test('Models: a download done before the first poll still reloads the page to show it', needs, async () => {
  const real = (await (await fetch(`${server!.url}/api/weights`)).json()) as { download: unknown };
  const download = { name: 'fcn8s', state: 'done', received: 1, total: 1, message: null };
  const page = await newPage();
  try {
    await page.goto(`${server!.url}/#models`);
    await page.waitForSelector('#weights-offer [data-weights=fcn8s] button');
    await page.route('**/api/weights/fcn8s/fetch', (route) => route.fulfill({ status: 202, contentType: 'application/json', body: JSON.stringify({ download }) }));
    await page.route('**/api/weights', (route) => route.fulfill({ contentType: 'application/json', body: JSON.stringify({ ...real, download }) }));
    const reloaded = page.waitForEvent('load', { timeout: 15_000 });
    await page.click('#weights-offer [data-weights=fcn8s] button');
    await reloaded;
    assert.deepEqual((page as Page & { problems: string[] }).problems, []);
  } finally {
    await page.context().close();
  }
});

test('Models: each model described; the paper\'s FCN-8s fetched from a local mirror (resumed), loaded without a restart, and segmenting', needs, async () => {
  const api = (await (await fetch(`${server!.url}/api/models`)).json()) as any;
  assert.equal(api.demoOnly, true);
  // Only the known names, one download at a time; a failed one says what to download by hand and where.
  let r = await fetch(`${server!.url}/api/weights/vgg16/fetch`, { method: 'POST' });
  assert.equal(r.status, 400);
  r = await fetch(`${server!.url}/api/weights/${encodeURIComponent('http://example.com/x')}/fetch`, { method: 'POST' });
  assert.equal(r.status, 400);
  r = await fetch(`${server!.url}/api/weights/fcn16s/fetch`, { method: 'POST' });
  assert.equal(r.status, 202);
  let state: any;
  for (let i = 0; i < 100 && state?.download?.state !== 'failed'; i++) state = await (await fetch(`${server!.url}/api/weights`)).json().then((j) => (new Promise((res) => setTimeout(() => res(j), 100))));
  assert.equal(state.download.state, 'failed');
  assert.match(state.download.message, /Without network access from here: download http:\/\/127\.0\.0\.1:\d+\/nothing-here elsewhere and put it at .*fcn16s-heavy-pascal\.caffemodel/);

  for (const size of SIZES) {
    const page = await newPage(size);
    await page.goto(`${server!.url}/#models`);
    await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
    const rows = await page.$$eval('#models-table tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
    assert.equal(rows.length, 3);
    for (const row of rows) assert.match(row[1]!, /^backgrounddiscboxtrianglering/);
    await page.waitForSelector('#weights-offer [data-weights=fcn8s] button');
    await checkView(page, 'models', size);
    await page.context().close();
  }

  const page = await newPage();
  await page.goto(`${server!.url}/#models`);
  await page.waitForSelector('#weights-offer [data-weights=fcn8s] button');
  assert.match((await page.textContent('#weights-offer [data-weights=fcn8s] button')) ?? '', /^Resume fcn8s/);
  await page.click('#weights-offer [data-weights=fcn8s] button');
  // The page reloads with the new model once it is loaded.
  await page.waitForSelector('#models-table tbody tr:nth-child(4)', { timeout: 120_000 });
  assert.equal(ranges.filter((h) => h?.startsWith('bytes=')).length, 1, 'the download resumed from the partial file');
  assert.deepEqual(readFileSync(cachedPath('fcn8s')), readFileSync(paperFile));
  const row = await page.$$eval('#models-table tbody tr:nth-child(4) td', (tds) => tds.map((td) => td.textContent));
  assert.match(row[0]!, /^FCN-8s \(fcn8s\)/);
  assert.match(row[1]!, /^backgroundaeroplanebicycle/);
  assert.match(row[2]!, /paper's FCN-8s/);
  // It segments: the Segment view shows a fourth panel for an example picture.
  await page.goto(`${server!.url}/#segment`);
  await page.waitForSelector('body[data-ready=true]');
  await page.click('#examples button');
  await page.waitForSelector('#panels [data-panel=model][data-model="3"]', { timeout: 60_000 });
  const models = (await (await fetch(`${server!.url}/api/models`)).json()) as any;
  assert.equal(models.models[3].classes.length, 21);
  assert.equal(models.models[3].classes[1].color, '#800000', "a VOC model keeps VOC's colours");
  assert.deepEqual((page as Page & { problems: string[] }).problems, []);
  await page.context().close();
});
