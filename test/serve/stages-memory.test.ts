// /api/stages keeps to the memory budget segment() honours: on a 4 MP picture a server that
// answers one /api/stages peaks within a quarter above a server that answers one
// /api/segment for the same picture. Each route runs in an `fcn serve` of its own, so that
// each peak (VmHWM of the child's /proc status) is that route's alone.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { tempDir, vocModels } from './fixtures.js';
import { requires } from '../prereq.js';

const CLI = path.join(import.meta.dirname, '..', 'cli', 'run-cli.ts');
const tmp = tempDir('stages-memory');
after(() => tmp.remove());

/** 2400×1660 (4.0 MP) of smooth colour and stripes, as PNG. */
async function bigPicture(): Promise<Buffer> {
  const [w, h] = [2400, 1660];
  const rgb = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = (y * w + x) * 3;
      rgb[p] = 128 + Math.round(100 * Math.sin(x / 37) * Math.cos(y / 53));
      rgb[p + 1] = (x + 2 * y) % 97 < 40 ? 200 : 60;
      rgb[p + 2] = Math.round((255 * x) / w);
    }
  }
  return sharp(rgb, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

/** Starts `fcn serve` with one model, posts `body` to `route`, and returns the child's peak RSS in MB. */
async function peakRssOf(weights: string, route: string, body: Buffer): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--weights', weights, '--port', '0', '--threads', '2', '--precision', 'float32', '--max-upload-mb', '64', '--runs', tmp.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = / at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) (clearInterval(timer), resolve(m[1]!));
      }, 100);
      void exited.then((code) => (clearInterval(timer), reject(new Error(`fcn serve exited (${code}): ${err}`))));
    });
    const r = await fetch(url + route, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'image/png' } });
    const json = (await r.json()) as { width?: number; error?: string };
    assert.equal(r.status, 200, `${route}: ${json.error}`);
    assert.equal(json.width, 2400);
    const hwm = /^VmHWM:\s*(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return Number(hwm![1]) / 1024;
  } finally {
    child.kill('SIGINT');
    await exited;
  }
}

test('/api/stages on a 4 MP picture peaks within a quarter above /api/segment on the same picture', { skip: requires(existsSync('/proc/self/status'), 'peak RSS is read from /proc/<pid>/status (Linux)') }, async (t) => {
  const weights = vocModels(tmp.dir)[2]!; // FCN-8s: every stage map
  const png = await bigPicture();
  const segmentMb = await peakRssOf(weights, '/api/segment', png);
  const stagesMb = await peakRssOf(weights, '/api/stages', png);
  t.diagnostic(`peak RSS: /api/segment ${segmentMb.toFixed(0)} MB, /api/stages ${stagesMb.toFixed(0)} MB`);
  assert.ok(stagesMb <= 1.25 * segmentMb, `/api/stages peaked at ${stagesMb.toFixed(0)} MB, over 1.25 × /api/segment's ${segmentMb.toFixed(0)} MB`);
});
