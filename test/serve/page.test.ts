// The page as a learner meets it, in Chromium at a desktop size (1280×900) and a phone's
// (390×844): on every view, nothing wider than the screen, a screenshot that shows something,
// and no serious or critical accessibility problem (axe-core). Then what each view must say
// and do: legends beside the maps, How it works's captions and grids, waiting and errors on
// Segment, Draw's stamps and the drawing under the maps, the Training view's status, badge,
// charts and runs that appear by themselves, taps and the keyboard. Screenshots go to
// test-artifacts/serve/page/ (gitignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { tempDir, shapeModels, startServer, discPicture, vocImage, hasChromium, needsChromium, launchChromium, ARTIFACTS as SHOTS, type TestServer } from './fixtures.js';
import { writeRun } from './page-runs.js';

const VOC_ID = '2007_000129';
const hasVoc = existsSync(vocImage(VOC_ID));
const skip = needsChromium();
const ARTIFACTS = process.env.FCN_PAGE_SHOTS ?? path.join(SHOTS, 'page');
const SIZES = [
  { name: 'desktop', width: 1280, height: 900, touch: false },
  { name: 'phone', width: 390, height: 844, touch: true },
] as const;
const VIEWS = ['segment', 'draw', 'how', 'training'] as const;

const tmp = tempDir('page');
const runs = path.join(tmp.dir, 'runs');
let server: TestServer | undefined;
let browser: Browser | undefined;

before(async () => {
  if (!hasChromium) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  mkdirSync(runs);
  writeRun(path.join(runs, 'finished'), { status: 'completed' });
  server = await startServer({ weights: shapeModels(tmp.dir), runRoots: [runs], maxUploadBytes: 4 * 2 ** 20, maxPixels: 2_000_000 });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.close();
  tmp.remove();
});

type Size = (typeof SIZES)[number];

/** A class's colour as the server gives it for a model (the page draws maps in it). */
function colourOf(model: number, name: string): number[] {
  const c = server!.models[model]!.classes.find((x) => x.name === name)!;
  return [1, 3, 5].map((i) => parseInt(c.color.slice(i, i + 2), 16));
}

async function open(size: Size, hash: string): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
  const context = await browser!.newContext({ viewport: { width: size.width, height: size.height }, hasTouch: size.touch, isMobile: size.touch });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  await page.route('**/*', (route) => (new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()));
  await page.goto(`${server!.url}/${hash}`);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
  return { page, context, problems };
}

/** Brings a view to the state a learner would look at: a picture segmented, a shape drawn… */
async function prepare(page: Page, view: (typeof VIEWS)[number]): Promise<void> {
  if (view === 'segment') {
    // A real photo where the shared data has one (larger than the examples, as learners' are).
    if (hasVoc) await page.setInputFiles('#file-input', vocImage(VOC_ID));
    else await page.click('#examples button >> nth=0');
    await page.waitForSelector('#segment-results[data-ready=true]', { timeout: 60_000 });
  } else if (view === 'draw') {
    await dragDisc(page, 0.35, 0.4, 0.2);
  } else if (view === 'how') {
    await page.waitForSelector('#how-steps[data-ready=true]', { timeout: 60_000 });
  } else {
    await page.waitForSelector('#training-status[data-status=completed]', { timeout: 30_000 });
  }
}

/** A disc dragged out from (fx, fy) of the canvas to a radius of `fr` of its width; waits for the maps. */
async function dragDisc(page: Page, fx: number, fy: number, fr: number): Promise<void> {
  await page.click('#draw-tools [data-tool=disc]');
  const box = (await page.locator('#draw-canvas').boundingBox())!;
  const cx = box.x + fx * box.width, cy = box.y + fy * box.height;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  await page.mouse.move(cx + fr * box.width, cy, { steps: 8 });
  await page.mouse.up();
  const version = await page.getAttribute('#draw-canvas', 'data-version');
  await page.waitForSelector(`#draw-panels[data-version="${version}"]`, { timeout: 30_000 });
}

/** Per-channel standard deviation of a screenshot: a blank page has (almost) none. */
async function spread(png: Buffer): Promise<number> {
  const stats = await sharp(png).stats();
  return Math.max(...stats.channels.slice(0, 3).map((c) => c.stdev));
}

for (const size of SIZES) {
  for (const view of VIEWS) {
    test(`${view} at ${size.width}×${size.height}: no wider than the screen, not blank, no serious accessibility issue`, { skip }, async () => {
      const { page, context, problems } = await open(size, `#${view}`);
      await prepare(page, view);
      await page.waitForTimeout(300);
      // A phone's browser widens its layout viewport to fit a page that overflows, so the page
      // is held to the screen's width itself, not only to innerWidth.
      const widths = await page.evaluate(() => ({ scroll: document.scrollingElement!.scrollWidth, inner: window.innerWidth }));
      assert.ok(widths.scroll <= widths.inner && widths.inner <= size.width, `${view}: the page is ${widths.scroll} px wide in a ${widths.inner} px window on a ${size.width} px screen`);
      const shot = await page.screenshot({ path: path.join(ARTIFACTS, `${view}-${size.name}.png`), fullPage: true });
      assert.ok((await spread(shot)) > 20, `${view}: the screenshot shows something`);
      const axe = await new AxeBuilder({ page }).analyze();
      const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
      assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')})`), []);
      assert.deepEqual(problems, []);
      await context.close();
    });
  }
}

test('the tabs wrap on a phone: every tab is on the screen', { skip }, async () => {
  const { page, context } = await open(SIZES[1], '#segment');
  for (const tab of await page.locator('nav a').all()) {
    const b = (await tab.boundingBox())!;
    assert.ok(b.x >= 0 && b.x + b.width <= 390, `tab ${await tab.textContent()} at ${b.x}..${b.x + b.width}`);
  }
  await context.close();
});

test('Segment: a compact legend beside each map; a tap inspects a pixel; the keyboard moves it', { skip }, async () => {
  const { page, context } = await open(SIZES[1], '#segment');
  await prepare(page, 'segment');
  const models = await page.locator('#panels [data-panel=model]').count();
  assert.equal(models, 3);
  for (let i = 0; i < models; i++) {
    const panel = page.locator('#panels [data-panel=model]').nth(i);
    const entries = await panel.locator('.map-legend li').count();
    assert.ok(entries >= 1, 'every map has its legend');
    // Each entry names a class the map shows, with its share.
    assert.match((await panel.locator('.map-legend li').first().textContent()) ?? '', /^\w+ \d+(\.\d)?%$/);
  }
  // The overlay's legend: the overlaid model's classes (background is left clear, so not listed).
  const overlaid = await page.$$eval('#overlay-legend li', (lis) => lis.map((li) => (li as HTMLElement).dataset.class));
  assert.ok(overlaid.length >= 1 && !overlaid.includes('0'), `overlay legend: classes ${overlaid.join(', ')}`);
  const canvas = page.locator('#panels canvas[data-model="2"]');
  await canvas.scrollIntoViewIfNeeded();
  const box = (await canvas.boundingBox())!;
  await page.touchscreen.tap(box.x + box.width / 2, box.y + box.height / 2);
  await page.waitForSelector('#pointer-info[data-x]', { timeout: 5000 });
  const x = Number(await page.getAttribute('#pointer-info', 'data-x'));
  await page.focus('#overlay-canvas');
  await page.keyboard.press('ArrowRight');
  assert.equal(Number(await page.getAttribute('#pointer-info', 'data-x')), x + 1, 'the arrow keys move the inspected pixel');
  await context.close();
});

test('Segment: old results dimmed while a request runs; a large picture announced before upload; results cleared on an error', { skip }, async () => {
  const { page, context } = await open(SIZES[0], '#segment');
  await prepare(page, 'segment');
  // Hold the next upload so the waiting state can be seen.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route('**/api/segment*', async (route) => { await held; await route.continue(); });
  const big = await sharp({ create: { width: 1400, height: 1000, channels: 3, background: { r: 120, g: 130, b: 140 } } }).png().toBuffer();
  await page.setInputFiles('#file-input', { name: 'big.png', mimeType: 'image/png', buffer: big });
  await page.waitForSelector('#segment-results.busy', { timeout: 5000 });
  assert.equal(await page.isVisible('#segment-progress'), true, 'a progress indicator while the request runs');
  assert.match((await page.textContent('#segment-status')) ?? '', /1400×1000.*1\.4 megapixels/);
  release();
  await page.waitForSelector('#segment-results:not(.busy)[data-ready=true]', { timeout: 60_000 });
  await page.unroute('**/api/segment*');
  assert.equal(await page.isVisible('#segment-progress'), false);
  // Too many pixels for this server: refused before the upload, the old results gone.
  const huge = await sharp({ create: { width: 2000, height: 1500, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
  await page.setInputFiles('#file-input', { name: 'huge.png', mimeType: 'image/png', buffer: huge });
  await page.waitForSelector('#segment-status.error', { timeout: 10_000 });
  assert.match((await page.textContent('#segment-status')) ?? '', /huge\.png.*2000×1500/);
  assert.equal(await page.isVisible('#segment-results'), false, 'no stale results under the error');
  // An error from the server clears them too.
  await page.setInputFiles('#file-input', { name: 'disc.png', mimeType: 'image/png', buffer: await discPicture() });
  await page.waitForSelector('#segment-results[data-ready=true]:not(.busy)', { timeout: 60_000 });
  await page.setInputFiles('#file-input', { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not a picture at all') });
  await page.waitForSelector('#segment-status.error', { timeout: 10_000 });
  assert.equal(await page.isVisible('#segment-results'), false);
  await context.close();
});

test('Draw: a hint to drag, a click stamps a shape big enough to be seen, the drawing under the maps', { skip }, async () => {
  const { page, context } = await open(SIZES[1], '#draw');
  assert.match((await page.textContent('#draw-hint')) ?? '', /drag/i);
  const canvas = page.locator('#draw-canvas');
  const box = (await canvas.boundingBox())!;
  assert.ok(Math.abs(box.width - box.height) < 1, `a square canvas (${box.width}×${box.height})`);
  await page.click('#draw-tools [data-tool=disc]');
  // A plain click, no drag: the stamp still has a size the models see.
  await canvas.click({ position: { x: box.width * 0.5, y: box.height * 0.5 } });
  const version = await canvas.getAttribute('data-version');
  await page.waitForSelector(`#draw-panels[data-version="${version}"]`, { timeout: 30_000 });
  for (const id of [0, 1, 2]) {
    const centre = await page.$eval(`#draw-panels canvas[data-model="${id}"]`, (c) => {
      const canvas = c as HTMLCanvasElement;
      return [...canvas.getContext('2d')!.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data.slice(0, 3)];
    });
    assert.deepEqual(centre, colourOf(id, 'disc'), `model ${id}: the clicked disc is labelled disc`);
  }
  assert.equal(await page.locator('#draw-panels .panel img.under').count(), 3, 'the drawing under each map');
  assert.ok((await page.locator('#draw-panels .map-legend li').count()) >= 3, 'a legend beside each map');
  await context.close();
});

test('Segment: every control is reached with the Tab key', { skip }, async () => {
  const { page, context } = await open(SIZES[0], '#segment');
  await prepare(page, 'segment');
  const reached = new Set<string>();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => { const e = document.activeElement as HTMLElement; return e.id || e.dataset.example || e.dataset.tab || e.className; }));
  }
  for (const id of ['segment', 'draw', 'how', 'training', 'dropzone', 'scene-1.png', 'overlay-model', 'opacity', 'download-overlay', 'overlay-canvas']) assert.ok(reached.has(id), `${id} is reached by Tab (${[...reached].join(', ')})`);
  await context.close();
});

test('Draw: the keyboard stamps a shape where its cursor is', { skip }, async () => {
  const { page, context } = await open(SIZES[0], '#draw');
  await page.focus('#draw-canvas');
  await page.keyboard.press('Enter');
  const version = await page.getAttribute('#draw-canvas', 'data-version');
  assert.ok(Number(version) >= 1, 'Enter on the canvas stamps the chosen shape');
  await context.close();
});

test('How it works: captions say whose map it is, FCN-32s\'s own coarse map, no grid lines on small cells, skip sums as coarse + skip = finer', { skip }, async () => {
  const { page, context } = await open(SIZES[0], '#how');
  await prepare(page, 'how');
  const text = (s: string) => page.textContent(s).then((t) => t ?? '');
  // The chosen model is FCN-8s; its own 1/32 map is said to be its own.
  assert.match(await text('#how-steps [data-step=score7] figure[data-kind=coarse] figcaption'), /FCN-8s/);
  assert.doesNotMatch(await text('#how-steps [data-step=score7] figure[data-kind=upsampled] figcaption'), /this is FCN-32s/);
  // FCN-32s's own answer, from FCN-32s.
  assert.equal(await page.getAttribute('#how-steps [data-step=score7] figure[data-kind=other]', 'data-model-kind'), 'fcn32');
  assert.match(await text('#how-steps [data-step=score7] figure[data-kind=other] figcaption'), /FCN-32s/);
  // The 1/8 cells of a 256-pixel picture are small on screen: no lines over them.
  const grids = await page.$$eval('#how-steps figure[data-kind=coarse] canvas', (cs) => cs.map((c) => ({ grid: (c as HTMLElement).dataset.grid, cell: Number((c as HTMLElement).dataset.cellPx) })));
  for (const g of grids) assert.equal(g.grid, g.cell >= 6 ? 'on' : 'off', `grid ${g.grid} for cells of ${g.cell} px`);
  // The sums: coarse + skip = finer.
  for (const step of ['fuse4', 'fuse3']) {
    const row = await text(`#how-steps [data-step=${step}] .sum`);
    assert.match(row, /\+.*=/, `${step}: ${row}`);
    assert.equal(await page.locator(`#how-steps [data-step=${step}] .sum figure`).count(), 3);
  }
  // The figures use the card: wider than the old 220 px.
  const w = await page.$eval('#how-steps [data-step=score7] figure[data-kind=coarse] canvas', (c) => c.getBoundingClientRect().width);
  assert.ok(w > 260, `the coarse map is ${w} px wide`);
  assert.ok((await page.locator('#how-steps [data-step=fuse3] .map-legend li').count()) >= 1, 'a legend by the maps');
  await context.close();
});

test('Training: status and badge of a finished run, readable charts, and a new run appears by itself', { skip }, async () => {
  const { page, context } = await open(SIZES[1], '#training');
  await prepare(page, 'training');
  const status = (await page.textContent('#training-status')) ?? '';
  assert.doesNotMatch(status, /completed\W+completed/);
  assert.notEqual(await page.textContent('#live-badge'), 'live');
  assert.doesNotMatch((await page.getAttribute('#live-badge', 'class')) ?? '', /\blive\b/);
  // Chart text at 12 px or more as shown, and stage labels that do not overlap.
  const texts = await page.$$eval('svg.chart text', (ts) => ts.map((t) => parseFloat(getComputedStyle(t).fontSize) * ((t as SVGGraphicsElement).ownerSVGElement!.getBoundingClientRect().width / (t as SVGGraphicsElement).ownerSVGElement!.viewBox.baseVal.width)));
  assert.ok(texts.length > 10 && Math.min(...texts) >= 12, `chart text ${Math.min(...texts).toFixed(1)} px at the smallest`);
  for (const id of ['chart-steps', 'chart-loss', 'chart-miou']) {
    const boxes = await page.$$eval(`#${id} text.stage-label`, (ts) => ts.map((t) => t.getBoundingClientRect()).map((r) => [r.left, r.right, r.top, r.bottom]));
    for (let i = 1; i < boxes.length; i++) {
      const [a, b] = [boxes[i - 1]!, boxes[i]!];
      assert.ok(a[1] <= b[0] || a[3] <= b[2] || b[3] <= a[2], `${id}: stage labels ${i} and ${i + 1} overlap`);
    }
  }
  // The loss chart's scale lets the later epochs be read despite the first one's loss.
  assert.equal(await page.getAttribute('#chart-steps', 'data-scale'), 'log');
  // A new run started while the page is open shows up and is followed.
  writeRun(path.join(runs, 'newer'), { status: 'running' });
  await page.waitForSelector('#run-select option[value=newer]', { state: 'attached', timeout: 15_000 });
  await page.waitForSelector('#training-status[data-run=newer]', { timeout: 15_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'training-newer-phone.png'), fullPage: true });
  await context.close();
});
