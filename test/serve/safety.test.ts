// fcn serve's defences, over real HTTP on 127.0.0.1: upload size and pixel limits (a
// decompression bomb refused from its header, before decoding), the type checked by content,
// clear 4xx messages, no file outside web/ and the runs' images served whatever the spelling
// of the path, a bounded queue (503 + Retry-After), and /api/health answering while the
// worker runs a model. Jobs that must stay in flight are held at a gate the test opens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import sharp from 'sharp';
import { tempDir, shapeModels, startServer, discPicture, pngBomb, jpegBomb, type TestServer } from './fixtures.js';

const tmp = tempDir('safety');
let server: TestServer;
let files: string[];
const runs = path.join(tmp.dir, 'runs');
const SECRET = 'SECRET-CONTENT-5b1f';

before(async () => {
  files = shapeModels(tmp.dir);
  // A run with things that must not be served beside its images, and a secret beside the runs.
  const run = path.join(runs, 'done');
  for (const d of ['samples', 'plots', 'checkpoints']) mkdirSync(path.join(run, d), { recursive: true });
  writeFileSync(path.join(run, 'config.json'), JSON.stringify({ stages: [], secret: SECRET }));
  writeFileSync(path.join(run, 'log.jsonl'), '');
  writeFileSync(path.join(run, 'checkpoints', 'last.safetensors'), SECRET);
  writeFileSync(path.join(run, 'samples', 'epoch001.png'), 'sample');
  writeFileSync(path.join(runs, 'secret.txt'), SECRET);
  writeFileSync(path.join(tmp.dir, 'secret.png'), SECRET);
  symlinkSync(path.join(tmp.dir, 'secret.png'), path.join(run, 'samples', 'link.png'));
  server = await startServer({ weights: files, runRoots: [runs], maxUploadBytes: 256 * 1024, maxPixels: 1_000_000 });
});

after(async () => {
  await server?.close();
  tmp.remove();
});

/** A request with the path sent exactly as written (no normalisation by a client library). */
function raw(method: string, rawPath: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: rawPath, headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...headers }, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${rawPath}: timed out`)));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

const health = async () => (await (await fetch(server.url + '/api/health')).json()) as any;

async function postBytes(body: Buffer, type = 'application/octet-stream') {
  const r = await raw('POST', '/api/segment', body, { 'content-type': type });
  return { ...r, json: JSON.parse(r.text) };
}

test('an upload over --max-upload-mb is refused with 413, as the body or as a form file', async () => {
  const big = Buffer.concat([await discPicture(64), Buffer.alloc(300 * 1024)]);
  const r = await postBytes(big, 'image/png');
  assert.equal(r.status, 413);
  assert.match(r.json.error, /the upload \(0\.29 MB\) is larger than the limit of 0\.25 MB \(--max-upload-mb\)/);
  // Far over the limit, through fetch: the answer arrives (the server reads the upload to
  // its end first), not a connection reset.
  const huge = await fetch(server.url + '/api/segment', { method: 'POST', body: new Uint8Array(Buffer.concat([big, Buffer.alloc(3 * 2 ** 20)])), headers: { 'content-type': 'image/png' } });
  assert.equal(huge.status, 413);
  assert.match(((await huge.json()) as any).error, /the upload \(3\.29 MB\) is larger than the limit of 0\.25 MB/);
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(Buffer.concat([big, Buffer.alloc(3 * 2 ** 20)]))], { type: 'image/png' }), 'big.png');
  const m = await fetch(server.url + '/api/segment', { method: 'POST', body: form });
  assert.equal(m.status, 413);
  assert.match(((await m.json()) as any).error, /larger than the limit of 0\.25 MB \(--max-upload-mb\)/);
});

test('decompression bombs (PNG and JPEG headers claiming gigapixels) are refused from the header, before decoding', async () => {
  const before = await health();
  const png = pngBomb(30000, 30000);
  assert.ok(png.length < 100, `the PNG bomb is ${png.length} bytes`);
  const meta = await sharp(png, { limitInputPixels: false }).metadata();
  assert.deepEqual([meta.width, meta.height], [30000, 30000], 'sharp reads the claimed size from the header');
  const rp = await postBytes(png, 'image/png');
  assert.equal(rp.status, 413);
  assert.equal(rp.json.error, 'the image is 30000×30000 (900 MP), more than the limit of 1 MP (--max-pixels): it was refused before decoding');
  const rj = await postBytes(await jpegBomb(60000, 50000), 'image/jpeg');
  assert.equal(rj.status, 413);
  assert.match(rj.json.error, /^the image is 60000×50000 \(3,000 MP\), more than the limit of 1 MP/);
  // Just over the limit is refused too; nothing reached the model.
  const over = await postBytes(pngBomb(1001, 1000), 'image/png');
  assert.equal(over.status, 413);
  assert.equal((await health()).queue.completed, before.queue.completed, 'no job reached the worker');
});

test('anything but a PNG, JPEG, WebP or GIF is 415, whatever its name or Content-Type; broken images and empty bodies are 400', async () => {
  const cases: [string, Buffer, string][] = [
    ['text', Buffer.from('hello, this is not a picture'), 'image/png'],
    ['JSON', Buffer.from('{"image": "photo.jpg"}'), 'application/json'],
    ['HTML', Buffer.from('<!doctype html><img src=x>'), 'text/html'],
    ['ZIP', Buffer.from('PK\u0003\u0004rest-of-an-archive'), 'image/jpeg'],
    ['SVG', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>'), 'image/svg+xml'],
  ];
  for (const [what, body, type] of cases) {
    const r = await postBytes(body, type);
    assert.equal(r.status, 415, what);
    assert.equal(r.json.error, 'the upload is not a PNG, JPEG, WebP or GIF image (its content was checked, not its name or Content-Type)', what);
    assert.equal(r.json.statusCode, 415);
  }
  const form = new FormData();
  form.append('image', new Blob(['plain text']), 'photo.png');
  const fr = await fetch(server.url + '/api/segment', { method: 'POST', body: form });
  assert.equal(fr.status, 415);
  // A PNG signature followed by garbage, a truncated JPEG, nothing at all, a form without a file.
  const png = await discPicture(64);
  const broken = await postBytes(Buffer.concat([png.subarray(0, 8), Buffer.from('garbage garbage garbage garbage')]), 'image/png');
  assert.equal(broken.status, 400);
  assert.match(broken.json.error, /^the PNG image cannot be read/);
  const jpeg = await sharp(png).jpeg().toBuffer();
  const truncated = await postBytes(jpeg.subarray(0, Math.floor(jpeg.length / 3)), 'image/jpeg');
  assert.equal(truncated.status, 400);
  assert.match(truncated.json.error, /^the JPEG image cannot be (read|decoded)/);
  const empty = await raw('POST', '/api/segment', Buffer.alloc(0), { 'content-type': 'image/png' });
  assert.equal(empty.status, 400);
  assert.match(JSON.parse(empty.text).error, /^no picture in the request/);
  const noFile = new FormData();
  noFile.append('note', 'no picture here');
  const nf = await fetch(server.url + '/api/segment', { method: 'POST', body: noFile });
  assert.equal(nf.status, 400);
  assert.match(((await nf.json()) as any).error, /^the form has no file/);
});

test('no file outside web/ and the runs\' images is served, however the path is spelled (404/403)', async () => {
  const paths = [
    '/../package.json', '/%2e%2e/package.json', '/%2e%2e%2fpackage.json', '/..%2fpackage.json', '/..%5cpackage.json', '/%2e%2e%5cpackage.json',
    '/%252e%252e%252fpackage.json', '/js/../../package.json', '/js/%2e%2e/%2e%2e/package.json', '/js/..%2f..%2fpackage.json', '/js/..%5c..%5cpackage.json',
    '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/....//....//etc/passwd', '//etc/passwd', '/.%2e/.%2e/etc/passwd', '/%c0%ae%c0%ae/package.json',
    '/js/%2e%2e%2f%2e%2e%2fsrc/serve/server.ts', '/..%252f..%252fpackage.json', '/src/serve/server.ts', '/.git/config',
    '/examples/..%2f..%2fpackage.json', '/examples/%2e%2e%2fscene-1.png', '/api/results/..%2f..%2f/top3/0',
    '/api/runs/..%2F..%2Fetc/files/samples/passwd', '/api/runs/%2e%2e/files/samples/secret.txt', '/api/runs/done%2F..%2F..%2F/files/samples/secret.txt',
    '/api/runs/done/files/samples/..%2F..%2Fsecret.txt', '/api/runs/done/files/samples/%2e%2e%2f%2e%2e%2fsecret.txt', '/api/runs/done/files/samples/..%5c..%5csecret.txt',
    '/api/runs/done/files/samples/%252e%252e%252fconfig.json', '/api/runs/done/files/plots/..%2Fconfig.json', '/api/runs/done/files/..%2Fcheckpoints/last.safetensors',
    '/api/runs/done/files/checkpoints/last.safetensors', '/api/runs/done/files/samples/link.png', '/api/runs/done/files/samples/.%2e/config.json',
    '/api/runs/done/files/samples/epoch001.png%00.txt', '/api/runs/done/files/samples/../../secret.txt', '/api/runs/done/../secret.txt',
  ];
  for (const p of paths) {
    const r = await raw('GET', p);
    assert.ok(r.status === 404 || r.status === 403 || r.status === 400, `${p}: status ${r.status}`);
    assert.ok(!r.text.includes(SECRET) && !r.text.includes('"name": "fcn"') && !r.text.includes('root:x:0') && !r.text.includes('createServer'), `${p}: leaked content`);
    if (r.headers['content-type']?.startsWith('application/json')) assert.ok(JSON.parse(r.text).error, `${p}: an error message`);
  }
  // What is served still is.
  assert.equal((await raw('GET', '/api/runs/done/files/samples/epoch001.png')).text, 'sample');
  assert.equal((await raw('GET', '/js/common.js')).status, 200);
});

/** Permits for a gated server's worker: each job waits for one (see ServeConfig.gate). */
function gate(): { buffer: SharedArrayBuffer; release: (n?: number) => void } {
  const buffer = new SharedArrayBuffer(4);
  const permits = new Int32Array(buffer);
  return { buffer, release: (n = 1) => { Atomics.add(permits, 0, n); Atomics.notify(permits, 0); } };
}

const healthOf = async (target: TestServer) => ((await (await fetch(target.url + '/api/health')).json()) as any).queue as { running: number; waiting: number; completed: number; refused: number; workerRestarts: number };

const pick = (q: { running: number; completed: number }) => ({ running: q.running, completed: q.completed });

/**
 * Asks /api/health until `ready` holds. Only for states that last until the test itself
 * changes them (a job held at the gate): whatever the timing, the state is still there when
 * the test acts on it.
 */
async function until(target: TestServer, ready: (q: Awaited<ReturnType<typeof healthOf>>) => boolean): Promise<void> {
  while (!ready(await healthOf(target))) await new Promise((r) => setTimeout(r, 10));
}

test('a full queue answers 503 with Retry-After at once; the waiting ones are answered', { timeout: 120_000 }, async () => {
  const g = gate();
  const slow = await startServer({ weights: [files[0]!], queueLimit: 1, gate: g.buffer });
  try {
    const png = await discPicture(64);
    const post = async () => {
      const r = await fetch(slow.url + '/api/segment', { method: 'POST', body: new Uint8Array(png) });
      return { status: r.status, retryAfter: r.headers.get('retry-after'), json: (await r.json()) as any };
    };
    // One job held in the worker, one waiting behind it: the queue is full.
    const running = post();
    await until(slow, (q) => q.running === 1);
    const waiting = post();
    await until(slow, (q) => q.waiting === 1);
    // Two more are refused while both are still held: the refusal waits for nothing.
    const refused = await Promise.all([post(), post()]);
    for (const b of refused) {
      assert.equal(b.status, 503);
      assert.ok(Number(b.retryAfter) >= 1, `Retry-After ${b.retryAfter}`);
      assert.match(b.json.error, /^the server is busy: 1 picture already waits for the model \(--queue 1\); retry in \d+ s$/);
    }
    const full = await healthOf(slow);
    assert.deepEqual([full.running, full.waiting, full.completed, full.refused], [1, 1, 0, 2]);
    g.release(2);
    assert.deepEqual((await Promise.all([running, waiting])).map((r) => r.status), [200, 200]);
    const q = await healthOf(slow);
    assert.deepEqual([q.refused, q.completed, q.running, q.waiting], [2, 2, 0, 0]);
  } finally {
    g.release(100);
    await slow.close();
  }
});

test('/api/health answers while the worker is held (a job that cannot finish) and during a real forward pass', { timeout: 300_000 }, async (t) => {
  // A blocked worker: the job cannot finish before the test gives its permit, so every
  // answer below came while the worker was busy with it.
  const g = gate();
  const held = await startServer({ weights: files, gate: g.buffer });
  try {
    const job = fetch(held.url + '/api/segment', { method: 'POST', body: new Uint8Array(await discPicture(64)) }).then((r) => r.status);
    await until(held, (q) => q.running === 1);
    for (let i = 0; i < 5; i++) assert.deepEqual(pick(await healthOf(held)), { running: 1, completed: 0 }, `answer ${i + 1} while the job is held`);

    // A real forward pass (a large picture through the three models), let through the gate
    // only once it is queued: the answers asked for after the release that still say running 1,
    // completed 1 (the first job) were given while the worker computed. An event loop held by
    // the forward pass could give none: it would read the queue only after the job ended.
    g.release();
    assert.equal(await job, 200);
    const big = await sharp(await discPicture(256)).resize(1000, 1000, { kernel: 'nearest' }).png().toBuffer();
    const real = fetch(held.url + '/api/segment', { method: 'POST', body: new Uint8Array(big) }).then((r) => r.status);
    await until(held, (q) => q.running === 1);
    let finished = false;
    const answered = real.then((s) => { finished = true; return s; });
    g.release();
    const during: { running: number; completed: number }[] = [];
    while (!finished) {
      const q = pick(await healthOf(held));
      if (!finished) during.push(q);
    }
    assert.equal(await answered, 200);
    const inPass = during.filter((q) => q.running === 1 && q.completed === 1);
    assert.ok(inPass.length >= 1, `health answered ${inPass.length} times during the forward pass (${during.length} answers before the job's)`);
    t.diagnostic(`health answered ${inPass.length} times during the forward pass`);
    assert.deepEqual(pick(await healthOf(held)), { running: 0, completed: 2 });
  } finally {
    g.release(100);
    await held.close();
  }
});

test('a request addressed to another host name is refused (DNS rebinding)', async () => {
  const r = await raw('GET', '/api/health', undefined, { host: 'attacker.example:8080' });
  assert.equal(r.status, 403);
  assert.match(JSON.parse(r.text).error, /^this server answers requests to 127\.0\.0\.1 or localhost only, not to 'attacker\.example'/);
  for (const host of ['localhost:1234', '127.0.0.1']) assert.equal((await raw('GET', '/api/health', undefined, { host })).status, 200, host);
});

test('a worker that dies fails its job with 500, and a new one takes the next', { timeout: 120_000 }, async () => {
  const g = gate();
  const fragile = await startServer({ weights: [files[0]!], gate: g.buffer });
  try {
    const png = await discPicture(64);
    const job = fetch(fragile.url + '/api/segment', { method: 'POST', body: new Uint8Array(png) });
    // The job is held in the worker (no permit): the worker goes away under it, as a crash
    // in native code would take it.
    await until(fragile, (q) => q.running === 1);
    await (fragile.jobs as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    const lost = await job;
    assert.equal(lost.status, 500);
    assert.match(((await lost.json()) as any).error, /^the inference worker stopped \(exit code 1\); it is being restarted: try again$/);
    g.release();
    const next = await fetch(fragile.url + '/api/segment', { method: 'POST', body: new Uint8Array(png) });
    assert.equal(next.status, 200);
    const q = await healthOf(fragile);
    assert.deepEqual([q.workerRestarts, q.completed], [1, 1]);
  } finally {
    g.release(100);
    await fragile.close();
  }
});

test('unknown routes and methods answer JSON 404s', async () => {
  const r = await raw('GET', '/api/nothing');
  assert.equal(r.status, 404);
  assert.deepEqual(JSON.parse(r.text), { error: 'nothing here: GET /api/nothing', statusCode: 404 });
  const put = await raw('PUT', '/api/segment', Buffer.from('x'));
  assert.equal(put.status, 404);
});
