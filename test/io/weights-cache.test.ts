import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FcnError } from '../../src/errors.js';
import type { ProgressEvent } from '../../src/io/download.js';
import {
  KNOWN_WEIGHTS, KNOWN_WEIGHTS_NAMES, cacheDir, cacheState, cachedPath, fetchWeights, resolveWeights, urlVariable, weightsUrl,
} from '../../src/io/weights-cache.js';
import { tempDir } from '../data/helpers.js';

describe('known weights', () => {
  test('the official addresses and file names', () => {
    assert.deepEqual(KNOWN_WEIGHTS_NAMES, ['vgg16', 'vgg16-notop', 'fcn32s', 'fcn16s', 'fcn8s', 'fcn8s-atonce']);
    const keras = 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/';
    assert.equal(KNOWN_WEIGHTS.vgg16.url, `${keras}vgg16_weights_tf_dim_ordering_tf_kernels.h5`);
    assert.equal(KNOWN_WEIGHTS['vgg16-notop'].url, `${keras}vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`);
    for (const [name, file] of [['fcn32s', 'fcn32s-heavy-pascal'], ['fcn16s', 'fcn16s-heavy-pascal'], ['fcn8s', 'fcn8s-heavy-pascal'], ['fcn8s-atonce', 'fcn8s-atonce-pascal']] as const) {
      assert.equal(KNOWN_WEIGHTS[name].url, `http://dl.caffe.berkeleyvision.org/${file}.caffemodel`);
      assert.equal(KNOWN_WEIGHTS[name].file, `${file}.caffemodel`);
      assert.equal(KNOWN_WEIGHTS[name].format, 'caffemodel');
    }
    // Roughly the sizes FACTS.md gives: ~528 MB and ~56 MB (MiB), ~500 MB.
    assert.ok(Math.abs(KNOWN_WEIGHTS.vgg16.bytes! / 2 ** 20 - 528) < 1);
    assert.ok(Math.abs(KNOWN_WEIGHTS['vgg16-notop'].bytes! / 2 ** 20 - 56) < 1);
    for (const k of Object.values(KNOWN_WEIGHTS)) assert.ok(k.md5 === undefined || /^[0-9a-f]{32}$/.test(k.md5), k.name);
  });

  test('the cache folder: FCN_HOME, else XDG_CACHE_HOME, else ~/.cache', () => {
    assert.equal(cacheDir({ FCN_HOME: '/a/home', XDG_CACHE_HOME: '/x' }), join('/a/home', 'weights'));
    assert.equal(cacheDir({ XDG_CACHE_HOME: '/x' }), join('/x', 'fcn', 'weights'));
    assert.equal(cacheDir({ FCN_HOME: '', XDG_CACHE_HOME: '' }), join(homedir(), '.cache', 'fcn', 'weights'));
    assert.equal(cachedPath('fcn8s-atonce', { FCN_HOME: '/h' }), join('/h', 'weights', 'fcn8s-atonce-pascal.caffemodel'));
    assert.throws(() => cachedPath('vgg19', {}), /unknown weights 'vgg19' \(known: vgg16, vgg16-notop, fcn32s/);
  });

  test('address overrides: the option, then FCN_WEIGHTS_<NAME>_URL, then the official one', () => {
    assert.equal(urlVariable('vgg16-notop'), 'FCN_WEIGHTS_VGG16_NOTOP_URL');
    assert.equal(urlVariable('fcn8s-atonce'), 'FCN_WEIGHTS_FCN8S_ATONCE_URL');
    const env = { FCN_WEIGHTS_FCN8S_URL: 'http://mirror/fcn8s' };
    assert.equal(weightsUrl('fcn8s', env), 'http://mirror/fcn8s');
    assert.equal(weightsUrl('fcn8s', env, 'http://other/x'), 'http://other/x');
    assert.equal(weightsUrl('fcn16s', env), KNOWN_WEIGHTS.fcn16s.url);
  });
});

interface ServerState {
  /** Cut the connection after this many body bytes, on the next `drops` requests. */
  dropAfter: number;
  drops: number;
  /** Range headers of the requests to /file.bin, in order. */
  ranges: (string | undefined)[];
  requests: number;
}

describe('fetchWeights against a local server', { timeout: 30_000 }, () => {
  const payload = randomBytes(150_000);
  const state: ServerState = { dropAfter: 0, drops: 0, ranges: [], requests: 0 };
  let server: http.Server;
  let base = '';
  let tmp: { dir: string; cleanup: () => void };
  let home = 0;
  /** A fresh FCN_HOME per test, so no test sees another's cache. */
  const freshEnv = (): NodeJS.ProcessEnv => ({ FCN_HOME: join(tmp.dir, `home${home++}`) });

  before(async () => {
    tmp = tempDir('weights-cache');
    server = http.createServer((req, res) => {
      // Bounded: a runaway client loop fails the test instead of spinning.
      if (++state.requests > 100) {
        res.writeHead(503).end();
        return;
      }
      const status = /^\/status\/(\d+)$/.exec(req.url ?? '');
      if (status) {
        res.writeHead(Number(status[1])).end('no');
        return;
      }
      if (req.url === '/chunked.bin') {
        // No Content-Length: the size is known only when the body ends.
        res.writeHead(200, { 'transfer-encoding': 'chunked' });
        res.end(payload);
        return;
      }
      if (req.url !== '/file.bin') {
        res.writeHead(404).end();
        return;
      }
      state.ranges.push(req.headers.range);
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = m ? Number(m[1]) : 0;
      if (m) {
        res.writeHead(206, { 'content-length': payload.length - start, 'content-range': `bytes ${start}-${payload.length - 1}/${payload.length}` });
      } else {
        res.writeHead(200, { 'content-length': payload.length, 'accept-ranges': 'bytes' });
      }
      const body = payload.subarray(start);
      if (state.drops > 0) {
        state.drops--;
        res.write(body.subarray(0, state.dropAfter), () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    tmp.cleanup();
  });

  test('a full download lands in the cache with the right bytes; a second fetch downloads nothing', async () => {
    state.ranges = [];
    const env = freshEnv();
    const events: ProgressEvent[] = [];
    const r = await fetchWeights('fcn32s', { env, url: `${base}/file.bin`, onProgress: (p) => events.push(p) });
    assert.equal(r.path, join(env['FCN_HOME']!, 'weights', 'fcn32s-heavy-pascal.caffemodel'));
    assert.equal(r.cached, false);
    assert.equal(r.bytes, payload.length);
    assert.deepEqual(readFileSync(r.path), payload);
    assert.ok(!existsSync(`${r.path}.part`));
    const last = events.at(-1)!;
    assert.ok(last.done && last.received === payload.length && last.total === payload.length);
    const again = await fetchWeights('fcn32s', { env, url: `${base}/file.bin` });
    assert.equal(again.cached, true);
    assert.deepEqual(state.ranges, [undefined]);
    assert.equal(resolveWeights('fcn32s', env), r.path);
    // --force downloads again.
    const forced = await fetchWeights('fcn32s', { env, url: `${base}/file.bin`, force: true });
    assert.equal(forced.cached, false);
    assert.deepEqual(state.ranges, [undefined, undefined]);
    assert.deepEqual(readFileSync(forced.path), payload);
  });

  test('the address comes from FCN_WEIGHTS_<NAME>_URL when no option gives one', async () => {
    state.ranges = [];
    const env = { ...freshEnv(), FCN_WEIGHTS_FCN8S_ATONCE_URL: `${base}/file.bin` };
    const r = await fetchWeights('fcn8s-atonce', { env });
    assert.deepEqual(readFileSync(r.path), payload);
    assert.deepEqual(state.ranges, [undefined]);
  });

  test('an interrupted transfer keeps a .part file; the next fetch resumes it with a Range request', async () => {
    state.ranges = [];
    state.dropAfter = 60_000;
    state.drops = 1;
    const env = freshEnv();
    const url = `${base}/file.bin`;
    const dest = cachedPath('fcn16s', env);
    await assert.rejects(fetchWeights('fcn16s', { env, url, retries: 0 }), (e: Error) =>
      e.message.startsWith(`${url}: download failed (connection`) &&
      e.message.includes(`kept in ${dest}.part, run again to resume`) &&
      e.message.includes(`download ${url} elsewhere and put it at ${dest}`));
    assert.ok(!existsSync(dest), 'nothing under the final name');
    assert.equal(statSync(`${dest}.part`).size, 60_000);
    assert.deepEqual(cacheState('fcn16s', env), { state: 'partial', path: `${dest}.part`, bytes: 60_000 });
    assert.throws(() => resolveWeights('fcn16s', env), /not downloaded yet \(58\.6 KiB of it are in .*fcn16s-heavy-pascal\.caffemodel\.part/);
    const notes: string[] = [];
    const r = await fetchWeights('fcn16s', { env, url, retries: 0, onNote: (n) => notes.push(n) });
    assert.deepEqual(state.ranges, [undefined, 'bytes=60000-']);
    assert.ok(notes.some((n) => /resuming at 58\.6 KiB/.test(n)), notes.join('\n'));
    assert.deepEqual(readFileSync(r.path), payload);
    assert.ok(!existsSync(`${dest}.part`));
  });

  test('a server announcing the wrong size is refused before anything is kept', async () => {
    const env = freshEnv();
    const dest = cachedPath('vgg16-notop', env);
    await assert.rejects(fetchWeights('vgg16-notop', { env, url: `${base}/file.bin` }), (e: Error) =>
      e.message.startsWith(`${base}/file.bin: download refused (the server's file has ${payload.length} bytes, expected 58889256)`));
    assert.ok(!existsSync(dest) && !existsSync(`${dest}.part`));
  });

  test('a finished download of the wrong size is deleted and nothing is left under the final name', async () => {
    const env = freshEnv();
    const dest = cachedPath('vgg16', env);
    await assert.rejects(fetchWeights('vgg16', { env, url: `${base}/chunked.bin` }), (e: Error) =>
      e.message.startsWith(`${dest}: size mismatch: got ${payload.length} bytes, expected 553467096; the download was deleted`));
    assert.ok(!existsSync(dest) && !existsSync(`${dest}.part`));
    // A file of the wrong size already in the cache is not taken for the real one.
    mkdirSync(cacheDir(env), { recursive: true });
    writeFileSync(dest, 'truncated');
    const notes: string[] = [];
    await assert.rejects(fetchWeights('vgg16', { env, url: `${base}/chunked.bin`, onNote: (n) => notes.push(n) }), /size mismatch/);
    assert.match(notes.join('\n'), /has 9 bytes, not 553467096: downloading again/);
    assert.ok(!existsSync(dest));
  });

  test('server errors name the address and the status', async () => {
    for (const code of [500, 404]) {
      const env = freshEnv();
      const url = `${base}/status/${code}`;
      await assert.rejects(fetchWeights('fcn8s', { env, url }), (e: Error) =>
        e.message.startsWith(`${url}: download failed (HTTP ${code} ${http.STATUS_CODES[code]})`) &&
        e.message.includes(`put it at ${cachedPath('fcn8s', env)}`));
      assert.ok(!existsSync(cachedPath('fcn8s', env)) && !existsSync(`${cachedPath('fcn8s', env)}.part`));
    }
  });
});

describe('resolveWeights', () => {
  const tmp = tempDir('resolve-weights');
  after(() => tmp.cleanup());
  const env = { FCN_HOME: join(tmp.dir, 'home') };

  test('an existing file is itself, whatever its name', () => {
    const file = join(tmp.dir, 'mine.safetensors');
    writeFileSync(file, 'x');
    assert.equal(resolveWeights(file, env), file);
  });

  test('a known name not in the cache: a code the command line adds its fetch command by, and the address and exact path for offline machines', () => {
    const dest = join(tmp.dir, 'home', 'weights', 'fcn8s-heavy-pascal.caffemodel');
    assert.throws(() => resolveWeights('fcn8s', env), (e: Error) => {
      assert.match(e.message, /^weights 'fcn8s' \(.*FCN-8s.*\) are not downloaded yet\n/);
      assert.equal((e as FcnError).code, 'WEIGHTS_NOT_DOWNLOADED');
      assert.ok(!e.message.includes('fcn weights'), `io names no command: ${e.message}`);
      assert.ok(e.message.includes(`download http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel elsewhere and put it at ${dest}`), e.message);
      return true;
    });
    // Known size and digest are given for checking a file copied by hand; a mirror's address replaces the official one.
    assert.throws(() => resolveWeights('vgg16-notop', { ...env, FCN_WEIGHTS_VGG16_NOTOP_URL: 'http://mirror.example/notop.h5' }),
      /download http:\/\/mirror\.example\/notop\.h5 elsewhere and put it at .*vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5 \(58889256 bytes, md5 6d6bbae143d832006294945121d1f1fc\)/);
  });

  test('a known name in the cache is the cached file', () => {
    const dest = cachedPath('vgg16', env);
    mkdirSync(cacheDir(env), { recursive: true });
    writeFileSync(dest, 'h5');
    assert.equal(resolveWeights('vgg16', env), dest);
  });

  test('anything else is named, with the known names; a folder is not a weights file', () => {
    assert.throws(() => resolveWeights('fcn4s', env), /^Error: fcn4s: no such file, and not a known weights name \(known: vgg16, vgg16-notop, fcn32s, fcn16s, fcn8s, fcn8s-atonce\)$/);
    assert.throws(() => resolveWeights(tmp.dir, env), /is a folder, not a weights file/);
  });
});
