// The page in a real browser (Chromium, headless, driven by playwright-core): a VOC photo
// uploaded and its label maps, legend and shares checked against the API's answer, the
// overlay's opacity slider, the pointer's top-3 classes; a disc drawn with the mouse and
// labelled 'disc'; How it works on the uploaded photo; and the Training page following a
// short `fcn train` in another process while its curve grows. Screenshots go to
// test-artifacts/serve/ (gitignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { requires } from '../prereq.js';
import { tempDir, shapeModels, startServer, labelsOfDataUrl, vocImage, hasChromium, needsChromium, launchChromium, ARTIFACTS, type TestServer } from './fixtures.js';

const VOC_ID = '2007_000129';
const hasVoc = existsSync(vocImage(VOC_ID));
const CLI = path.join(import.meta.dirname, '..', 'cli', 'run-cli.ts');
/** The class colours the server gives for its models (the page draws label maps in them). */
let PALETTE: number[][] = [];

const tmp = tempDir('browser');
const runs = path.join(tmp.dir, 'runs');
let server: TestServer | undefined;
let browser: Browser | undefined;
let training: ChildProcess | undefined;

before(async () => {
  if (!hasChromium) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  mkdirSync(runs);
  server = await startServer({ weights: shapeModels(tmp.dir), runRoots: [runs], maxUploadBytes: 4 * 2 ** 20 });
  PALETTE = server.models[0]!.classes.map((c) => [1, 3, 5].map((i) => parseInt(c.color.slice(i, i + 2), 16)));
  browser = await launchChromium();
});

after(async () => {
  if (training && training.exitCode === null) training.kill('SIGKILL');
  await browser?.close();
  await server?.close();
  tmp.remove();
});

async function newPage(): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  // Nothing may leave 127.0.0.1: the page works offline.
  await page.route('**/*', (route) => (new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()));
  (page as Page & { problems: string[] }).problems = problems;
  return page;
}
const problemsOf = (page: Page) => (page as Page & { problems: string[] }).problems;

/** The class indices a label canvas shows, read back through the palette. */
function canvasLabels(page: Page, selector: string): Promise<{ labels: number[]; width: number; height: number }> {
  return page.$eval(selector, (c, palette) => {
    const canvas = c as HTMLCanvasElement;
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    const index = new Map(palette.map(([r, g, b], k) => [(r << 16) | (g << 8) | b, k]));
    const labels: number[] = [];
    for (let i = 0; i < data.length; i += 4) labels.push(index.get((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!) ?? -1);
    return { labels, width: canvas.width, height: canvas.height };
  }, PALETTE);
}

test('Segment: a VOC photo uploaded; label maps, legend and shares as the API answers; the opacity slider; top-3 under the pointer', { skip: needsChromium() || requires(hasVoc, `the VOC sample is not at ${vocImage(VOC_ID)}`) }, async () => {
  const page = await newPage();
  await page.goto(`${server!.url}/#segment`);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
  await page.setInputFiles('#file-input', vocImage(VOC_ID));
  await page.waitForSelector('#segment-results[data-ready=true][data-top3=true]', { timeout: 60_000 });

  const api = (await (await fetch(`${server!.url}/api/segment`, { method: 'POST', body: new Uint8Array(readFileSync(vocImage(VOC_ID))) })).json()) as any;
  for (const m of api.models) {
    const expected = labelsOfDataUrl(m.labelsPng);
    const shown = await canvasLabels(page, `#panels canvas[data-model="${m.id}"]`);
    assert.deepEqual([shown.width, shown.height], [expected.width, expected.height]);
    assert.ok(shown.labels.every((v, i) => v === expected.labels[i]), `${m.title}: the page shows the API's labels`);
    assert.equal(await page.textContent(`#panels [data-panel=model][data-model="${m.id}"] h4 .time`).then((t) => /^\d+ ms$/.test(t ?? '')), true);
    // The legend: one row per class present, this model's share in its column.
    for (const s of m.shares) {
      const cell = await page.textContent(`#legend tr[data-class="${s.index}"] td.share[data-model="${m.id}"]`);
      assert.equal(cell, `${(100 * s.share).toFixed(1)}%`, `${m.title}: ${s.name}'s share`);
      assert.match((await page.textContent(`#legend tr[data-class="${s.index}"] td:first-child`)) ?? '', new RegExp(s.name));
    }
  }
  const rows = await page.$$eval('#legend tbody tr', (trs) => trs.map((tr) => Number((tr as HTMLElement).dataset.class)));
  assert.deepEqual(rows, [...new Set(api.models.flatMap((m: any) => m.shares.map((s: any) => s.index)))].sort((a: any, b: any) => a - b));

  // The overlay: at full opacity an object pixel is its class colour; at zero, the photo.
  const fcn8 = labelsOfDataUrl(api.models[2].labelsPng);
  const object = fcn8.labels.findIndex((v) => v !== 0);
  assert.ok(object >= 0, 'FCN-8s labels something in the photo');
  const overlayPixel = () => page.$eval('#overlay-canvas', (c, i) => [...(c as HTMLCanvasElement).getContext('2d')!.getImageData(i % (c as HTMLCanvasElement).width, Math.floor(i / (c as HTMLCanvasElement).width), 1, 1).data.slice(0, 3)], object);
  await page.focus('#opacity');
  await page.keyboard.press('End');
  assert.equal(await page.textContent('#opacity-value'), '100%');
  assert.equal(await page.getAttribute('#overlay-canvas', 'data-opacity'), '1');
  assert.deepEqual(await overlayPixel(), PALETTE[fcn8.labels[object]!]);
  await page.keyboard.press('Home');
  assert.equal(await page.getAttribute('#overlay-canvas', 'data-opacity'), '0');
  const photo = await page.$eval('#panels canvas[data-role=picture]', (c, i) => [...(c as HTMLCanvasElement).getContext('2d')!.getImageData(i % (c as HTMLCanvasElement).width, Math.floor(i / (c as HTMLCanvasElement).width), 1, 1).data.slice(0, 3)], object);
  assert.deepEqual(await overlayPixel(), photo);
  await page.keyboard.press('PageUp');
  const mid = Number(await page.getAttribute('#overlay-canvas', 'data-opacity'));
  assert.ok(mid > 0 && mid < 1, `PageUp moves the slider part way (${mid})`);

  // Hovering that pixel on the FCN-8s map: its class for every model, and the top-3.
  const x = object % fcn8.width, y = Math.floor(object / fcn8.width);
  // Focusing the slider scrolled the page: the map is brought back into view to be pointed at.
  await page.locator('#panels canvas[data-model="2"]').scrollIntoViewIfNeeded();
  const box = (await page.locator('#panels canvas[data-model="2"]').boundingBox())!;
  await page.mouse.move(box.x + ((x + 0.5) / fcn8.width) * box.width, box.y + ((y + 0.5) / fcn8.height) * box.height);
  await page.waitForSelector(`#pointer-info[data-x="${x}"][data-y="${y}"]`, { timeout: 5000 });
  for (const m of api.models) {
    const label = labelsOfDataUrl(m.labelsPng).labels[object]!;
    assert.equal(await page.getAttribute(`#pointer-info tr[data-model="${m.id}"]`, 'data-label'), String(label));
    const top3 = (await page.textContent(`#pointer-info tr[data-model="${m.id}"] td.top3`)) ?? '';
    assert.match(top3, /^\w+ \d+\.\d% · \w+ \d+\.\d%/, `${m.title}: top-3 with probabilities (${top3})`);
    assert.ok(top3.startsWith(['background', 'disc', 'box', 'triangle', 'ring', 'cross'][label]!), `${m.title}: the most probable class is the label (${top3})`);
  }
  assert.equal(await page.locator('#panels .crosshair').count(), 4, 'a marker on the picture and each map');
  await page.screenshot({ path: path.join(ARTIFACTS, 'segment.png'), fullPage: true });

  // How it works, on the same photo: the five score maps of FCN-8s, 1/32 to 1/8.
  await page.click('nav a[data-tab=how]');
  await page.waitForSelector('#how-steps[data-ready=true]', { timeout: 60_000 });
  const steps = await page.$$eval('#how-steps .step', (els) => els.map((e) => (e as HTMLElement).dataset.step));
  assert.deepEqual(steps, ['picture', 'score7', 'score4', 'fuse4', 'score3', 'fuse3', 'final']);
  assert.equal(await page.getAttribute('#how-steps [data-step=score7] figure[data-kind=coarse]', 'data-cells'), `${Math.ceil(fcn8.width / 32)}x${Math.ceil(fcn8.height / 32)}`);
  assert.equal(await page.getAttribute('#how-steps [data-step=fuse3] figure[data-kind=coarse]', 'data-cells'), `${Math.ceil(fcn8.width / 8)}x${Math.ceil(fcn8.height / 8)}`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'how.png'), fullPage: true });
  assert.deepEqual(problemsOf(page), []);
  await page.close();
});

test('Draw: a disc drawn with the mouse is segmented as drawn and labelled disc by every model', { skip: needsChromium() }, async () => {
  const page = await newPage();
  await page.goto(`${server!.url}/#draw`);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
  await page.click('#draw-tools [data-tool=disc]');
  const canvas = page.locator('#draw-canvas');
  const box = (await canvas.boundingBox())!;
  const internal = await canvas.evaluate((c) => (c as HTMLCanvasElement).width);
  const scale = internal / box.width;
  // Centre at (35%, 40%), dragged out to a radius of 22% of the canvas.
  const cx = box.x + 0.35 * box.width, cy = box.y + 0.4 * box.height;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  await page.mouse.move(cx + 0.22 * box.width, cy, { steps: 12 });
  await page.mouse.up();
  const version = await canvas.getAttribute('data-version');
  await page.waitForSelector(`#draw-panels[data-version="${version}"]`, { timeout: 30_000 });
  const centre = [Math.floor((cx - box.x) * scale), Math.floor((cy - box.y) * scale)];
  for (const id of [0, 1, 2]) {
    const shown = await canvasLabels(page, `#draw-panels canvas[data-model="${id}"]`);
    assert.equal(shown.labels[centre[1]! * shown.width + centre[0]!], 1, `model ${id}: disc at the disc's centre`);
    assert.equal(shown.labels[(shown.height - 3) * shown.width + shown.width - 3], 0, `model ${id}: background in the far corner`);
  }
  assert.match((await page.textContent('#draw-legend tr[data-class="1"]')) ?? '', /disc/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'draw.png'), fullPage: true });
  assert.deepEqual(problemsOf(page), []);
  await page.close();
});

test('Training: the page follows a short fcn train in another process; its curve grows until the run completes', { skip: needsChromium() }, async () => {
  const data = path.join(tmp.dir, 'data');
  const synth = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'data', 'synth', '--out', data, '--count', '50', '--size', '64'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(synth.status, 0, synth.stderr);
  // A step record for every step, so the curve has points to grow by.
  const cfg = path.join(tmp.dir, 'train.json');
  writeFileSync(cfg, JSON.stringify({ logEvery: 1, samples: 2 }));
  // An older, finished run is there first: the page shows it until the one asked for appears.
  mkdirSync(path.join(runs, 'older'));
  writeFileSync(path.join(runs, 'older', 'config.json'), JSON.stringify({ stages: [{ model: 'fcn32', epochs: 1, trainable: 'all' }] }));
  writeFileSync(path.join(runs, 'older', 'log.jsonl'), `${JSON.stringify({ type: 'start', train: 4, val: 1 })}\n${JSON.stringify({ type: 'end', best: null })}\n`);
  const run = path.join(runs, 'live');
  training = spawn(process.execPath, ['--import', 'tsx', CLI, 'train', '--data', data, '--model', 'fcn32', '--width', '0.0625', '--size', '64', '--epochs', '2', '--batch', '2', '--config', cfg, '--out', run, '--threads', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  training.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => training!.on('exit', resolve));

  const page = await newPage();
  await page.goto(`${server!.url}/?run=live#training`);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15_000 });
  // How fast 40 tiny steps go depends on the machine, so the test holds the run still (SIGSTOP)
  // once it has logged a few steps, checks the page shows exactly those, then lets it go on.
  const log = path.join(run, 'log.jsonl');
  const stepsLogged = (): number => {
    try {
      return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length;
    } catch {
      return 0;
    }
  };
  const pauseBy = Date.now() + 120_000;
  while (stepsLogged() < 3 && training.exitCode === null && Date.now() < pauseBy) await new Promise((r) => setTimeout(r, 5));
  assert.equal(training.exitCode, null, `fcn train ended before it could be watched: ${stderr.slice(-500)}`);
  training.kill('SIGSTOP');
  const held = stepsLogged();
  assert.ok(held >= 3 && held < 40, `paused in the middle of the run: ${held} steps logged`);
  await page.waitForSelector(`#training-status[data-run=live]`, { timeout: 30_000 });
  await page.waitForSelector(`#chart-steps[data-points="${held}"]`, { timeout: 30_000 });
  assert.equal(await page.getAttribute('#training-status', 'data-status'), 'running', 'the paused run is shown running');
  const seen: number[] = [held];
  training.kill('SIGCONT');
  // Points of the step curve and the status, as the page shows them, until the run is over.
  let status = '';
  const deadline = Date.now() + 120_000;
  const readPoints = async () => Number((await page.getAttribute('#chart-steps', 'data-points').catch(() => null)) ?? 0);
  while (Date.now() < deadline) {
    // The status first: the page renders status and curve from one snapshot, so points read
    // after a 'completed' status are the completed run's (read the other way round, a render
    // between the two reads paired the last curve but one with the final status).
    status = (await page.getAttribute('#training-status', 'data-status').catch(() => null)) ?? '';
    const points = await readPoints();
    if (points !== seen.at(-1)) seen.push(points);
    if (status === 'completed') break;
    await page.waitForTimeout(250);
  }
  const code = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 30_000))]);
  assert.equal(code, 0, `fcn train: ${stderr.slice(-500)}`);
  assert.equal(status, 'completed', `the page saw the run complete (curve points seen: ${seen.join(', ')})`);
  // 40 training images, batch 2, 2 epochs: 40 steps, seen growing on the way.
  assert.equal(seen.at(-1), 40, `curve points seen: ${seen.join(', ')}`);
  assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!), `it only grew: ${seen.join(', ')}`);
  assert.equal(await page.inputValue('#run-select'), 'live');
  assert.match((await page.textContent('#run-select option[value=live]')) ?? '', /^live — completed, 2\/2 epochs$/);
  // A finished run is no longer live: the badge says how it ended.
  assert.equal(await page.getAttribute('#live-badge', 'class'), 'badge done');
  assert.equal(await page.textContent('#live-badge'), 'completed');
  assert.equal(Number(await page.getAttribute('#chart-miou', 'data-points')), 2, 'one mean IoU point per epoch');
  assert.match((await page.textContent('#final-metrics')) ?? '', /mean IoU\s*\d\.\d{4}/);
  const sample = await page.getAttribute('#samples img', 'src');
  assert.equal(sample, '/api/runs/live/files/samples/epoch002.png');
  assert.equal((await fetch(server!.url + sample)).status, 200);
  await page.screenshot({ path: path.join(ARTIFACTS, 'training.png'), fullPage: true });
  assert.deepEqual(problemsOf(page), []);
  await page.close();
});
