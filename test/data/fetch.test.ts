import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tar from 'tar';
import { dataCommand } from '../../src/cli/data.js';
import { fetchDataset } from '../../src/data/fetch.js';
import { downloadFile, progressPrinter, type ProgressEvent } from '../../src/io/download.js';
import { vocDataset } from '../../src/data/datasets.js';
import { synthesizeDataset } from '../../src/data/synth.js';
import { tempDir } from './helpers.js';

interface ServerState {
  /** Drop the connection after this many body bytes on the next n requests. */
  dropAfter?: number;
  drops: number;
  ignoreRange: boolean;
  ranges: (string | undefined)[];
}

describe('fetch', () => {
  let dir = '';
  let cleanup = () => {};
  let archive: Buffer;
  let md5 = '';
  let server: http.Server;
  let base = '';
  const state: ServerState = { drops: 0, ignoreRange: false, ranges: [] };

  before(async () => {
    ({ dir, cleanup } = tempDir('fetch'));
    // A small archive in VOC's own layout: VOCdevkit/VOC2012/...
    const src = join(dir, 'src');
    await synthesizeDataset({ out: join(src, 'VOCdevkit', 'VOC2012'), count: 12, size: 48, seed: 1 });
    const tarPath = join(dir, 'small.tar');
    await tar.c({ file: tarPath, cwd: src }, ['VOCdevkit']);
    archive = readFileSync(tarPath);
    md5 = createHash('md5').update(archive).digest('hex');
    server = http.createServer((req, res) => {
      if (req.url === '/missing.tar') {
        res.writeHead(404).end('not here');
        return;
      }
      if (req.url === '/moved.tar') {
        res.writeHead(302, { location: '/small.tar' }).end();
        return;
      }
      state.ranges.push(req.headers.range);
      let start = 0;
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (m && !state.ignoreRange) {
        start = Number(m[1]);
        if (start >= archive.length) {
          res.writeHead(416, { 'content-range': `bytes */${archive.length}` }).end();
          return;
        }
        res.writeHead(206, { 'content-length': archive.length - start, 'content-range': `bytes ${start}-${archive.length - 1}/${archive.length}`, 'accept-ranges': 'bytes' });
      } else {
        res.writeHead(200, { 'content-length': archive.length, 'accept-ranges': 'bytes' });
      }
      const body = archive.subarray(start);
      if (state.drops > 0 && state.dropAfter !== undefined) {
        state.drops--;
        // Send part of the body, then cut the connection.
        res.write(body.subarray(0, state.dropAfter), () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    cleanup();
  });

  test('downloads, checks the md5, extracts, and the result reads as a VOC root', async () => {
    state.ranges = [];
    const out = join(dir, 'plain');
    const events: ProgressEvent[] = [];
    const r = await fetchDataset('voc2012', { dir: out, url: `${base}/small.tar`, md5, onProgress: (p) => events.push(p) });
    assert.equal(r.root, join(out, 'VOCdevkit', 'VOC2012'));
    assert.equal(r.md5, md5);
    assert.ok(events.at(-1)!.done && events.at(-1)!.received === archive.length && events.at(-1)!.total === archive.length);
    const ds = await vocDataset(r.root, { split: 'trainval' });
    assert.equal(ds.entries.length, 12);
    assert.deepEqual(state.ranges, [undefined]);
    // Run again: the archive is already there with the right sum, so nothing is downloaded.
    await fetchDataset('voc2012', { dir: out, url: `${base}/small.tar`, md5 });
    assert.deepEqual(state.ranges, [undefined]);
  });

  test('an interrupted transfer keeps the partial file; the next run resumes with a Range request', async () => {
    state.ranges = [];
    state.dropAfter = Math.floor(archive.length * 0.4);
    state.drops = 1;
    const out = join(dir, 'resume');
    mkdirSync(out);
    const dest = join(out, 'VOCtrainval_11-May-2012.tar');
    const url = `${base}/small.tar`;
    await assert.rejects(downloadFile(url, dest, { md5, retries: 0 }), (e: Error) =>
      e.message.startsWith(`${url}: download failed (connection`) && e.message.includes(`kept in ${dest}.part, run again to resume`));
    const have = statSync(`${dest}.part`).size;
    assert.equal(have, state.dropAfter);
    const notes: string[] = [];
    const r = await downloadFile(url, dest, { md5, retries: 0, onNote: (n) => notes.push(n) });
    assert.equal(r.md5, md5);
    assert.deepEqual(state.ranges, [undefined, `bytes=${have}-`]);
    assert.ok(notes.some((n) => /resuming at/.test(n)));
    assert.deepEqual(readFileSync(dest), archive);
    assert.ok(!existsSync(`${dest}.part`));
  });

  test('automatic retries resume within one run', async () => {
    state.ranges = [];
    state.dropAfter = 1000;
    state.drops = 2;
    const dest = join(dir, 'retry.tar');
    await downloadFile(`${base}/small.tar`, dest, { md5, retries: 3, retryDelayMs: 10 });
    assert.deepEqual(state.ranges, [undefined, 'bytes=1000-', 'bytes=2000-']);
    assert.deepEqual(readFileSync(dest), archive);
  });

  test('a server that ignores Range restarts from zero and still ends right', async () => {
    state.ranges = [];
    const dest = join(dir, 'norange.tar');
    writeFileSync(`${dest}.part`, archive.subarray(0, 500));
    state.ignoreRange = true;
    try {
      await downloadFile(`${base}/moved.tar`, dest, { md5 });
    } finally {
      state.ignoreRange = false;
    }
    assert.deepEqual(readFileSync(dest), archive);
  });

  test('a wrong checksum is a clear error, exit code non-zero, the bad file removed', async () => {
    const out = join(dir, 'badsum');
    const wrong = '0123456789abcdef0123456789abcdef';
    await assert.rejects(fetchDataset('sbd', { dir: out, url: `${base}/small.tar`, md5: wrong }), (e: Error) =>
      e.message === `${join(out, 'benchmark.tgz')}: md5 mismatch: got ${md5}, expected ${wrong}; the corrupt download was deleted`);
    assert.ok(!existsSync(join(out, 'benchmark.tgz')) && !existsSync(join(out, 'benchmark.tgz.part')));
    // Through the command line, with the address and sum from the environment.
    const env = { FCN_SBD_URL: process.env['FCN_SBD_URL'], FCN_SBD_MD5: process.env['FCN_SBD_MD5'] };
    process.env['FCN_SBD_URL'] = `${base}/small.tar`;
    process.env['FCN_SBD_MD5'] = wrong;
    let err = '';
    const ew = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((c: string | Uint8Array, ...rest: never[]) => (typeof c === 'string' ? ((err += c), true) : ew(c, ...rest))) as typeof process.stderr.write;
    let code: number;
    try {
      code = await dataCommand(['fetch', 'sbd', '--dir', out, '--quiet']);
    } finally {
      process.stderr.write = ew;
      for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
    assert.equal(code, 1);
    assert.match(err, /^fcn data fetch: .*benchmark\.tgz: md5 mismatch: got [0-9a-f]{32}, expected 0123456789abcdef0123456789abcdef/);
  });

  test('HTTP errors and an archive without the expected root are reported', async () => {
    await assert.rejects(downloadFile(`${base}/missing.tar`, join(dir, 'm.tar')), /missing\.tar: download failed \(HTTP 404/);
    await assert.rejects(fetchDataset('sbd', { dir: join(dir, 'wrongroot'), url: `${base}/small.tar`, md5 }), /benchmark\.tgz: extracted, but .*benchmark_RELEASE\/dataset is not in it/);
  });

  test('progress: a bar with speed and ETA on a terminal, plain lines otherwise', () => {
    const chunks: string[] = [];
    const fake = (isTTY: boolean) => ({ isTTY, write: (s: string) => { chunks.push(s); return true; } }) as unknown as NodeJS.WriteStream;
    const tty = progressPrinter('voc2012', fake(true));
    tty({ received: 50 * 2 ** 20, total: 200 * 2 ** 20, speed: 10 * 2 ** 20, done: false });
    assert.match(chunks[0]!, /^\rvoc2012 +25\.0% \[#{6}-{18}\] 50\.0 MiB \/ 200\.0 MiB {2}10\.0 MiB\/s {2}ETA 0:15/);
    chunks.length = 0;
    const plain = progressPrinter('sbd', fake(false), 60_000);
    plain({ received: 1, total: 4, speed: 1, done: false });
    plain({ received: 2, total: 4, speed: 1, done: false }); // within the interval: silent
    plain({ received: 4, total: 4, speed: 1, done: true });
    assert.equal(chunks.length, 2);
    assert.match(chunks[0]!, /^sbd: 25\.0%, 1 B \/ 4 B, 1 B\/s, ETA 0:03\n$/);
    assert.match(chunks[1]!, /, done\n$/);
  });
});
