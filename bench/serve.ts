// Load on `fcn serve`: N requests from C concurrent clients, a mix of valid pictures and bad
// uploads (not an image, a decompression bomb, too large, truncated), against a server in a
// process of its own. Reports latency percentiles of the valid requests and the server's peak
// resident memory (VmHWM of its /proc status).
//
//   node --import tsx bench/serve.ts [--requests 200] [--clients 8] [--width 0.25] [--voc-width 250] [--threads N]
//
// The server holds FCN-32s, 16s and 8s at the demo's width (random weights: speed does not
// depend on what was learnt); every valid request goes through all three. Prints one JSON
// line: { requests, clients, ok, refused, failures, p50Ms, p95Ms, maxRssMb, … }.
// bench/run.ts runs it for its serve_p95_ms and serve_rss_mb rows; test/serve/load.test.ts
// uses loadTest() to check every answer.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from './args.js';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { renderScene } from '../src/data/synth.js';
import { FCN, FCN_KINDS } from '../src/models/fcn.js';
import { saveWeights } from '../src/models/weights.js';
import { awaitHealth, freePort, launchServe, runBenchScript, stopServe } from './serve-process.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const VOC = path.resolve(here, '..', '..', 'shared', 'data', 'VOCdevkit', 'VOC2012', 'JPEGImages');

export interface LoadCase {
  name: string;
  body: Uint8Array<ArrayBuffer>;
  contentType: string;
  /** The status the server must answer: 200 for a valid picture, the 4xx for a bad one. */
  expect: number;
}

export interface LoadAnswer {
  caseName: string;
  status: number;
  ms: number;
  json: any;
}

export interface LoadResult {
  answers: LoadAnswer[];
  /** Answers whose status is not the one expected (503s counted apart). */
  failures: LoadAnswer[];
  refused: number;
  p50Ms: number;
  p95Ms: number;
  seconds: number;
}

const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]! : NaN);

/**
 * Sends `requests` requests, `clients` at a time, cycling through the cases in a fixed
 * shuffled order. Every request has a deadline; a 503 (queue full) counts as refused, not
 * as a failure.
 */
export async function loadTest(url: string, cases: LoadCase[], options: { requests: number; clients: number; timeoutMs?: number }): Promise<LoadResult> {
  let seed = 12345;
  const order = Array.from({ length: options.requests }, (_, i) => i % cases.length).sort(() => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 2 ** 32 - 0.5;
  });
  const answers: LoadAnswer[] = [];
  let next = 0;
  const t0 = performance.now();
  const client = async () => {
    while (next < order.length) {
      const c = cases[order[next++]!]!;
      const start = performance.now();
      try {
        const r = await fetch(`${url}/api/segment`, { method: 'POST', body: c.body, headers: { 'content-type': c.contentType }, signal: AbortSignal.timeout(options.timeoutMs ?? 60_000) });
        answers.push({ caseName: c.name, status: r.status, ms: performance.now() - start, json: await r.json() });
      } catch (e) {
        answers.push({ caseName: c.name, status: 0, ms: performance.now() - start, json: { error: (e as Error).message } });
      }
    }
  };
  await Promise.all(Array.from({ length: options.clients }, client));
  const expected = new Map(cases.map((c) => [c.name, c.expect]));
  const valid = answers.filter((a) => expected.get(a.caseName) === 200 && a.status === 200).map((a) => a.ms).sort((a, b) => a - b);
  return {
    answers,
    failures: answers.filter((a) => a.status !== 503 && a.status !== expected.get(a.caseName)),
    refused: answers.filter((a) => a.status === 503).length,
    p50Ms: percentile(valid, 0.5),
    p95Ms: percentile(valid, 0.95),
    seconds: (performance.now() - t0) / 1000,
  };
}

/** A PNG whose header claims width × height over a few bytes of data. */
function pngBomb(width: number, height: number): Buffer {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = table[(c ^ x) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const td = Buffer.concat([Buffer.from(type), data]);
    const out = Buffer.alloc(td.length + 8);
    out.writeUInt32BE(data.length, 0);
    td.copy(out, 4);
    out.writeUInt32BE(crc(td), td.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0, 0])), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * The mix: valid pictures (VOC photos when the shared sample is there, scaled to `vocWidth`
 * wide, and synthetic scenes as PNG and WebP) and four kinds of bad upload.
 */
export async function loadCases(options: { maxUploadBytes: number; vocWidth?: number; vocIds?: string[] }): Promise<LoadCase[]> {
  const valid: LoadCase[] = [];
  for (const id of options.vocIds ?? ['2007_000129', '2007_000033']) {
    const file = path.join(VOC, `${id}.jpg`);
    if (!existsSync(file)) continue;
    const bytes = options.vocWidth ? await sharp(readFileSync(file)).resize({ width: options.vocWidth }).jpeg({ quality: 90 }).toBuffer() : readFileSync(file);
    valid.push({ name: `voc-${id}.jpg`, body: new Uint8Array(bytes), contentType: 'image/jpeg', expect: 200 });
  }
  for (const [i, format] of [[3, 'png'], [8, 'webp']] as const) {
    const { image } = renderScene(7, i, 128);
    const s = sharp(image, { raw: { width: 128, height: 128, channels: 3 } });
    const bytes = format === 'png' ? await s.png().toBuffer() : await s.webp({ lossless: true }).toBuffer();
    valid.push({ name: `synth-${i}.${format}`, body: new Uint8Array(bytes), contentType: `image/${format}`, expect: 200 });
  }
  const first = Buffer.from(valid[0]!.body);
  const bad: LoadCase[] = [
    { name: 'text.png', body: new Uint8Array(Buffer.from('not a picture at all')), contentType: 'image/png', expect: 415 },
    { name: 'bomb.png', body: new Uint8Array(pngBomb(40000, 40000)), contentType: 'image/png', expect: 413 },
    { name: 'oversize.jpg', body: new Uint8Array(Buffer.concat([first, Buffer.alloc(options.maxUploadBytes)])), contentType: 'image/jpeg', expect: 413 },
    { name: 'truncated.png', body: new Uint8Array(Buffer.concat([Buffer.from(valid.at(-2)!.body).subarray(0, 8), Buffer.from('no chunks here')])), contentType: 'image/png', expect: 400 },
  ];
  // About two valid requests for each bad one.
  return [...valid, ...valid, ...bad];
}

export interface ServeBench {
  p50Ms: number;
  p95Ms: number;
  maxRssMb: number | null;
  requests: number;
  clients: number;
  width: number;
  vocWidth: number;
  failures: number;
}

/** Runs this script in a process of its own (for bench/run.ts); null if it failed. */
export function runServeBench(threads: number): ServeBench | null {
  return runBenchScript<ServeBench>(fileURLToPath(import.meta.url), threads, 1_200_000);
}

/** Peak resident memory of a process, MB (VmHWM). */
function peakRssMb(pid: number): number | null {
  try {
    const m = /^VmHWM:\s*(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, { options: { requests: { type: 'string' }, clients: { type: 'string' }, width: { type: 'string' }, 'voc-width': { type: 'string' }, threads: { type: 'string' } } });
  const requests = Number(values.requests ?? 200), clients = Number(values.clients ?? 8), width = Number(values.width ?? 0.25), vocWidth = Number(values['voc-width'] ?? 250);
  const work = mkdtempSync(path.join(os.tmpdir(), 'fcn-bench-serve-'));
  const maxUploadMb = 4;
  try {
    // The demo's network width, random weights: the speed does not depend on what was learnt.
    const weights = FCN_KINDS.map((kind, i) => {
      const m = new FCN({ kind, width });
      m.initialize(i);
      const file = path.join(work, `${kind}.safetensors`);
      saveWeights(file, m);
      m.dispose();
      return file;
    });
    const port = await freePort(), url = `http://127.0.0.1:${port}`;
    const server = launchServe(['--weights', weights.join(','), '--port', String(port), '--runs', work, '--max-upload-mb', String(maxUploadMb), ...(values.threads ? ['--threads', values.threads] : [])]);
    try {
      await awaitHealth(server, url);
      const cases = await loadCases({ maxUploadBytes: maxUploadMb * 2 ** 20, vocWidth });
      const r = await loadTest(url, cases, { requests, clients });
      const ok = r.answers.filter((a) => a.status === 200).length;
      console.log(JSON.stringify({
        requests, clients, width, vocWidth, ok, refused: r.refused, failures: r.failures.length, p50Ms: Math.round(r.p50Ms), p95Ms: Math.round(r.p95Ms),
        requestsPerSecond: Math.round((requests / r.seconds) * 10) / 10, maxRssMb: peakRssMb(server.pid!), validCases: cases.filter((c) => c.expect === 200).map((c) => c.name),
      }));
      if (r.failures.length) {
        console.error(`bench serve: ${r.failures.length} unexpected answers, e.g. ${r.failures[0]!.caseName}: ${r.failures[0]!.status} ${JSON.stringify(r.failures[0]!.json)}`);
        process.exitCode = 1;
      }
    } finally {
      await stopServe(server);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(`bench serve: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
