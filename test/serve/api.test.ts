// fcn serve's JSON API on a real server (127.0.0.1, a free port): label maps identical to
// segment()'s, top-3 tables consistent with them, the stage maps of How it works, models,
// examples, and training runs (summaries and live server-sent events).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../../src/models/weights.js';
import { segment } from '../../src/infer/inference.js';
import { classShares } from '../../src/report/viz.js';
import { engineConfig } from '../../src/engine/config.js';
import { synthClassSet } from '../../src/data/synth.js';
import { requires } from '../prereq.js';
import { tempDir, vocModels, shapeModels, startServer, discPicture, labelsOfDataUrl, vocImage, type TestServer } from './fixtures.js';

const VOC_ID = '2007_000129';
const hasVoc = existsSync(vocImage(VOC_ID));
const tmp = tempDir('api');
let voc: TestServer, shapes: TestServer;
let vocFiles: string[], shapeFiles: string[];
const runs = path.join(tmp.dir, 'runs');

before(async () => {
  vocFiles = vocModels(tmp.dir);
  shapeFiles = shapeModels(tmp.dir);
  mkdirSync(runs);
  [voc, shapes] = await Promise.all([startServer({ weights: vocFiles }), startServer({ weights: shapeFiles, runRoots: [runs] })]);
});

after(async () => {
  await Promise.all([voc?.close(), shapes?.close()]);
  tmp.remove();
});

async function post(server: TestServer, url: string, body: Buffer, type = 'application/octet-stream') {
  const r = await fetch(server.url + url, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': type } });
  return { status: r.status, json: (await r.json()) as any, headers: r.headers };
}

test('POST /api/segment: every model\'s labels are exactly segment()\'s on the same image, raw or multipart; shares and times', { skip: requires(hasVoc, `the VOC sample is not at ${vocImage(VOC_ID)}`) }, async () => {
  const file = vocImage(VOC_ID);
  const bytes = readFileSync(file);
  const raw = await post(voc, '/api/segment', bytes, 'image/jpeg');
  assert.equal(raw.status, 200, JSON.stringify(raw.json));
  const form = new FormData();
  form.append('image', new Blob([bytes], { type: 'image/jpeg' }), 'photo.jpg');
  const multipart = await fetch(voc.url + '/api/segment', { method: 'POST', body: form });
  assert.equal(multipart.status, 200);
  const viaForm = (await multipart.json()) as any;
  const meta = await sharp(bytes).metadata();
  assert.equal(raw.json.width, meta.width);
  assert.equal(raw.json.height, meta.height);
  assert.equal(raw.json.type, 'jpeg');
  assert.deepEqual(raw.json.models.map((m: any) => m.title), ['FCN-32s', 'FCN-16s', 'FCN-8s']);
  for (const [i, weights] of vocFiles.entries()) {
    const model = await loadModel(weights);
    try {
      const expected = await segment(model, file, { precision: engineConfig().precision });
      for (const answer of [raw.json, viaForm]) {
        const got = labelsOfDataUrl(answer.models[i].labelsPng);
        assert.equal(got.width, expected.width);
        assert.equal(got.height, expected.height);
        assert.ok(Buffer.from(got.labels).equals(Buffer.from(expected.labels)), `${model.kind}: labels differ from segment()'s`);
        assert.deepEqual(answer.models[i].shares, classShares(expected.labels, expected.classes));
        assert.ok(answer.models[i].ms > 0);
      }
    } finally {
      model.dispose();
    }
  }
  // Random narrow models still label more than one class, or the comparison above proves little.
  assert.ok(raw.json.models.some((m: any) => m.shares.length > 1), 'some model labels several classes');
});

test('?model= picks models by id or kind; an unknown one is a 400 that lists the models', async () => {
  const png = await discPicture(64);
  const one = await post(shapes, '/api/segment?model=fcn16', png);
  assert.equal(one.status, 200);
  assert.deepEqual(one.json.models.map((m: any) => m.kind), ['fcn16']);
  const two = await post(shapes, '/api/segment?model=0,fcn8', png);
  assert.deepEqual(two.json.models.map((m: any) => m.kind), ['fcn32', 'fcn8']);
  const bad = await post(shapes, '/api/segment?model=fcn4', png);
  assert.equal(bad.status, 400);
  assert.match(bad.json.error, /unknown model 'fcn4' \(models: 0 = fcn32 \(FCN-32s\), 1 = fcn16 \(FCN-16s\), 2 = fcn8 \(FCN-8s\)/);
});

test('the hand-set shape models label the red disc "disc", the blue square "box", the rest background', async () => {
  const r = await post(shapes, '/api/segment', await discPicture(128), 'image/png');
  assert.equal(r.status, 200);
  for (const m of r.json.models) {
    const { labels, width } = labelsOfDataUrl(m.labelsPng);
    const at = (x: number, y: number) => labels[y * width + x];
    assert.equal(at(38, 45), 1, `${m.title} at the disc's centre`);
    assert.equal(at(92, 90), 2, `${m.title} at the square's centre`);
    assert.equal(at(4, 124), 0, `${m.title} in the far corner`);
    assert.deepEqual(m.shares.map((s: any) => s.name).sort(), ['background', 'box', 'disc']);
  }
});

test('top-3 tables: the first class is the label of every pixel, probabilities descend and sum to about 1', async () => {
  const r = await post(shapes, '/api/segment?top3=1', await discPicture(96), 'image/png');
  assert.equal(r.status, 200);
  for (const m of r.json.models) {
    const { labels } = labelsOfDataUrl(m.labelsPng);
    const t = await fetch(shapes.url + m.top3Url);
    assert.equal(t.status, 200);
    assert.equal(t.headers.get('x-width'), '96');
    const table = new Uint8Array(await t.arrayBuffer());
    assert.equal(table.length, 96 * 96 * 6);
    for (let p = 0; p < labels.length; p++) {
      const o = p * 6;
      assert.equal(table[o], labels[p], `${m.title}: pixel ${p}'s top class`);
      assert.ok(table[o + 3]! >= table[o + 4]! && table[o + 4]! >= table[o + 5]!, `${m.title}: pixel ${p}'s probabilities descend`);
      assert.ok(table[o + 3]! + table[o + 4]! + table[o + 5]! <= 257, `${m.title}: pixel ${p}'s probabilities sum to at most 1`);
    }
  }
  const missing = await fetch(`${shapes.url}/api/results/r999/top3/0`);
  assert.equal(missing.status, 404);
  assert.match(((await missing.json()) as any).error, /no top-3 table for result r999/);
});

test('POST /api/stages: score maps at 1/32, 1/16, 1/8 of the picture; the last one stretched is the model\'s answer', async () => {
  const png = await discPicture(100);
  const r = await post(shapes, '/api/stages', png);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.model.kind, 'fcn8', 'the deepest model by default');
  assert.deepEqual(r.json.steps.map((s: any) => [s.name, s.stride, s.coarse.width, s.coarse.height]), [
    ['score7', 32, 4, 4], ['score4', 16, 7, 7], ['fuse4', 16, 7, 7], ['score3', 8, 13, 13], ['fuse3', 8, 13, 13],
  ]);
  const model = await loadModel(shapeFiles[2]!);
  try {
    const rgb = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const expected = await segment(model, { data: new Uint8Array(rgb.data), width: rgb.info.width, height: rgb.info.height }, { precision: engineConfig().precision });
    const final = labelsOfDataUrl(r.json.final.png);
    assert.ok(Buffer.from(final.labels).equals(Buffer.from(expected.labels)), 'the final map is segment()\'s');
    // The page's bilinear stretch of fuse3 is the network's own transposed convolution.
    const stretched = labelsOfDataUrl(r.json.steps.at(-1).upsampledPng);
    const same = stretched.labels.reduce((n, v, i) => n + (v === expected.labels[i] ? 1 : 0), 0);
    assert.ok(same / expected.labels.length > 0.995, `fuse3 stretched agrees with the output on ${same} of ${expected.labels.length} pixels`);
    // The skips refine: the 1/8 map's disc overlaps the true disc better than the 1/32 map's.
    const truth = Array.from({ length: 100 * 100 }, (_, i) => Math.hypot((i % 100) - 30, Math.floor(i / 100) - 35) < 20);
    const iou = (step: any) => {
      const { labels } = labelsOfDataUrl(step.upsampledPng);
      let both = 0, either = 0;
      labels.forEach((v, i) => { both += Number(v === 1 && truth[i]!); either += Number(v === 1 || truth[i]!); });
      return both / either;
    };
    const coarse = iou(r.json.steps[0]), fine = iou(r.json.steps.at(-1));
    assert.ok(fine > coarse + 0.02, `disc IoU with the truth: 1/32 map ${coarse.toFixed(3)}, 1/8 map ${fine.toFixed(3)}`);
  } finally {
    model.dispose();
  }
  const only32 = await post(shapes, '/api/stages?model=fcn32', png);
  assert.deepEqual(only32.json.steps.map((s: any) => s.name), ['score7']);
});

test('GET /api/models, /api/health, /api/examples and the example pictures', async () => {
  const models = (await (await fetch(shapes.url + '/api/models')).json()) as any;
  assert.deepEqual(models.models.map((m: any) => [m.id, m.kind, m.title, m.source]), [
    [0, 'fcn32', 'FCN-32s', 'shape-fcn32.safetensors'], [1, 'fcn16', 'FCN-16s', 'shape-fcn16.safetensors'], [2, 'fcn8', 'FCN-8s', 'shape-fcn8.safetensors'],
  ]);
  // The shapes' own colours (a disc red-orange, a box blue), as the synthetic data's class set has them.
  const hex = (c: number[]) => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
  const synth = synthClassSet();
  for (const m of models.models) assert.deepEqual(m.classes, synth.names.map((name, index) => ({ index, name, color: hex(synth.colors[index]!) })));
  assert.deepEqual(synth.colors.slice(0, 3), [[0, 0, 0], [242, 71, 36], [36, 122, 242]]);
  // VOC models keep VOC's colours.
  const vocInfo = (await (await fetch(voc.url + '/api/models')).json()) as any;
  assert.deepEqual(vocInfo.models[0].classes.slice(0, 3), [{ index: 0, name: 'background', color: '#000000' }, { index: 1, name: 'aeroplane', color: '#800000' }, { index: 2, name: 'bicycle', color: '#008000' }]);
  assert.equal(models.limits.maxPixels, 1_000_000);
  const health = (await (await fetch(shapes.url + '/api/health')).json()) as any;
  assert.equal(health.status, 'ok');
  assert.equal(health.models, 3);
  assert.equal(health.queue.queueLimit, 8);
  const { examples } = (await (await fetch(shapes.url + '/api/examples')).json()) as any;
  assert.equal(examples.length, 4);
  const png = await fetch(shapes.url + examples[0].url);
  assert.equal(png.status, 200);
  assert.equal(png.headers.get('content-type'), 'image/png');
  const meta = await sharp(Buffer.from(await png.arrayBuffer())).metadata();
  assert.equal(meta.width, examples[0].width);
  const page = await fetch(shapes.url + '/');
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>fcn/);
});

/** A run folder as `fcn train` writes it, with `epochs` epoch records and a step record before each. */
function writeRun(dir: string, opts: { epochs: number; end: boolean }): void {
  mkdirSync(path.join(dir, 'samples'), { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    data: { root: '/data/synth', size: 64 }, model: { width: 0.0625 }, optimizer: { kind: 'adam', lr: 0.001 }, batchSize: 4,
    stages: [{ model: 'fcn32', epochs: 2, trainable: 'all' }, { model: 'fcn16', epochs: 2, trainable: 'new' }],
  }));
  const lines = [{ type: 'start', train: 20, val: 5 }, { type: 'stage', stage: 1, model: 'fcn32' }];
  for (let e = 1; e <= opts.epochs; e++) {
    const stage = e <= 2 ? 1 : 2;
    lines.push({ type: 'step', step: e * 5, stage, epoch: e, batch: 5, loss: 1 / e, imagesPerSecond: 10 } as any);
    lines.push({ type: 'epoch', epoch: e, stage, model: stage === 1 ? 'fcn32' : 'fcn16', lr: 0.001, train: { loss: 1 / e, pixelAccuracy: 0.5, meanIoU: 0.1 * e }, val: { loss: 1.2 / e, pixelAccuracy: 0.5, meanIoU: 0.1 * e, meanAccuracy: 0.3, frequencyWeightedIoU: 0.4 }, imagesPerSecond: 10, seconds: 2 } as any);
  }
  if (opts.end) lines.push({ type: 'end', best: null } as any);
  writeFileSync(path.join(dir, 'log.jsonl'), lines.map((l) => JSON.stringify(l) + '\n').join(''));
  writeFileSync(path.join(dir, 'samples', 'epoch001.png'), Buffer.from('not really a png'));
}

test('GET /api/runs and /api/runs/:name: runs under the roots, summarised from config.json and log.jsonl', async () => {
  writeRun(path.join(runs, 'done'), { epochs: 4, end: true });
  writeRun(path.join(runs, 'demo-x', 'run'), { epochs: 1, end: false });
  const list = (await (await fetch(shapes.url + '/api/runs')).json()) as any;
  assert.deepEqual(list.runs.map((r: any) => r.name).sort(), ['demo-x/run', 'done']);
  const done = (await (await fetch(`${shapes.url}/api/runs/done`)).json()) as any;
  assert.equal(done.status, 'completed');
  assert.equal(done.epochs.length, 4);
  assert.equal(done.current.totalEpochs, 4);
  assert.deepEqual(done.final.metrics, { pixelAccuracy: 0.5, meanAccuracy: 0.3, meanIoU: 0.4, frequencyWeightedIoU: 0.4 });
  assert.deepEqual(done.best, { meanIoU: 0.4, epoch: 4, stage: 2 });
  assert.deepEqual(done.samples, [{ file: 'epoch001.png', url: '/api/runs/done/files/samples/epoch001.png' }]);
  const running = (await (await fetch(`${shapes.url}/api/runs/${encodeURIComponent('demo-x/run')}`)).json()) as any;
  assert.equal(running.status, 'running');
  assert.deepEqual([running.current.stage, running.current.epoch, running.current.globalEpoch, running.current.batchesPerEpoch], [1, 2, 2, 5]);
  // 3 epochs of 5 batches of 4 images left, at 10 images/s.
  assert.equal(running.current.etaSeconds, 6);
  const sample = await fetch(shapes.url + done.samples[0].url);
  assert.equal(sample.status, 200);
  assert.equal(await sample.text(), 'not really a png');
  const unknown = await fetch(`${shapes.url}/api/runs/nope`);
  assert.equal(unknown.status, 404);
  assert.match(((await unknown.json()) as any).error, /no run named 'nope'/);
});

test('GET /api/runs/:name/events: a summary at once, then again as the log grows', async () => {
  const dir = path.join(runs, 'live');
  writeRun(dir, { epochs: 1, end: false });
  const summaries: any[] = [];
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(() => { req.destroy(); reject(new Error(`timed out after ${summaries.length} summaries`)); }, 10_000);
    const req = http.get(`${shapes.url}/api/runs/live/events`, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/event-stream/);
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = /^event: summary\ndata: (.*)$/m.exec(event);
          if (!data) continue;
          summaries.push(JSON.parse(data[1]!));
          if (summaries.length === 1) {
            // Training goes on in "another process": two more records, the second the end.
            appendFileSync(path.join(dir, 'log.jsonl'), JSON.stringify({ type: 'epoch', epoch: 2, stage: 1, model: 'fcn32', lr: 0.001, train: { loss: 0.4, pixelAccuracy: 0.6, meanIoU: 0.3 }, val: null, imagesPerSecond: 11, seconds: 2 }) + '\n');
            setTimeout(() => appendFileSync(path.join(dir, 'log.jsonl'), JSON.stringify({ type: 'end', best: null }) + '\n'), 400);
          }
          if (summaries.at(-1).status === 'completed') {
            clearTimeout(deadline);
            req.destroy();
            resolve();
          }
        }
      });
    });
    req.on('error', (e) => { if (summaries.at(-1)?.status !== 'completed') reject(e); });
  });
  assert.equal(summaries[0].epochs.length, 1);
  assert.equal(summaries[0].status, 'running');
  assert.equal(summaries.at(-1).epochs.length, 2);
  assert.ok(summaries.length >= 2 && summaries.length <= 4, `${summaries.length} summaries for 2 changes`);
});
