// Two rows about `fcn serve` live, each against a server in a process of its own:
//  - serve_first_answer_s: seconds from launching `fcn serve` with no demo trained yet to its
//    first 200 for the start page (the demo then trains beside it, in a process of its own);
//  - camera_fps_256: frames per second as the Camera view sends them — one 256×192 frame in
//    flight at a time, PNG-encoded, through the demo's FCN-8s (width 0.25), int8 where the CPU
//    has VNNI (else the precision 'auto' picks).
//
//   node --import tsx bench/serve-live.ts [--threads N] [--frames 40]
//
// Prints one JSON line; bench/run.ts runs it for those two rows.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from './args.js';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { renderScene } from '../src/data/synth.js';
import { FCN } from '../src/models/fcn.js';
import { saveWeights } from '../src/models/weights.js';
import { saveQuantized } from '../src/models/int8-weights.js';
import { calibrateOnImages, quantizeModel } from '../src/quant/quantize.js';
import { autoPrecision, configureEngine, cpuFeatures } from '../src/engine/config.js';
import { awaitHealth, freePort, launchServe, runBenchScript, stopServe } from './serve-process.js';


export interface ServeLiveBench {
  firstAnswerS: number;
  cameraFps: number;
  frames: number;
  precision: string;
}

/** Runs this script in a process of its own (for bench/run.ts); null if it failed. */
export function runServeLiveBench(threads: number): ServeLiveBench | null {
  return runBenchScript<ServeLiveBench>(fileURLToPath(import.meta.url), threads, 900_000);
}

/** Polls the start page from the launch until it answers 200; the seconds that took. */
async function firstAnswer(work: string, threads: string | undefined): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const server = launchServe(['--port', String(port), '--runs', path.join(work, 'runs'), ...(threads ? ['--threads', threads] : [])]);
  try {
    for (;;) {
      if (server.exitCode !== null) throw new Error(`fcn serve exited (${server.exitCode}) before answering`);
      try {
        const r = await fetch(`http://127.0.0.1:${port}/`);
        if (r.status === 200) break;
      } catch {
        /* not listening yet */
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    const seconds = (performance.now() - t0) / 1000;
    const models = (await (await fetch(`http://127.0.0.1:${port}/api/models`)).json()) as { preparing: { state: string } | null };
    if (models.preparing?.state !== 'training') throw new Error(`the first answer came while the server was not training the demo (${JSON.stringify(models.preparing)})`);
    return seconds;
  } finally {
    await stopServe(server);
  }
}

/** The demo's FCN-8s (random weights: speed does not depend on what was learnt), int8 with VNNI. */
function cameraModel(work: string): { file: string; precision: string } {
  configureEngine({ precision: 'float32' });
  const m = new FCN({ kind: 'fcn8', width: 0.25 });
  m.initialize(0);
  try {
    const file = path.join(work, 'fcn8.safetensors');
    if (!cpuFeatures().vnni) {
      saveWeights(file, m);
      return { file, precision: autoPrecision().precision };
    }
    const pictures = [1, 2, 3, 4].map((i) => ({ data: renderScene(7, i, 128).image, width: 128, height: 128 }));
    quantizeModel(m, calibrateOnImages(m, pictures));
    saveQuantized(file, m);
    return { file, precision: 'int8' };
  } finally {
    m.dispose();
  }
}

async function cameraFps(work: string, threads: string | undefined, frames: number): Promise<{ fps: number; precision: string }> {
  const { file, precision } = cameraModel(work);
  const port = await freePort();
  const server = launchServe(['--weights', file, '--precision', precision, '--port', String(port), '--runs', work, ...(threads ? ['--threads', threads] : [])]);
  try {
    const url = `http://127.0.0.1:${port}`;
    await awaitHealth(server, url);
    // Frames as the page sends them: 256×192 PNGs (a 4:3 camera at the 256-pixel working size).
    const scene = (i: number) => renderScene(11, i, 256).image.subarray(0, 256 * 192 * 3);
    const pngs = await Promise.all(Array.from({ length: 8 }, (_, i) => sharp(scene(i), { raw: { width: 256, height: 192, channels: 3 } }).png().toBuffer()));
    const send = async (i: number) => {
      const r = await fetch(`${url}/api/segment`, { method: 'POST', body: new Uint8Array(pngs[i % pngs.length]!) });
      if (r.status !== 200) throw new Error(`frame ${i}: ${r.status} ${await r.text()}`);
      await r.json();
    };
    for (let i = 0; i < 3; i++) await send(i);
    const t0 = performance.now();
    for (let i = 0; i < frames; i++) await send(i);
    return { fps: frames / ((performance.now() - t0) / 1000), precision };
  } finally {
    await stopServe(server);
  }
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, { options: { threads: { type: 'string' }, frames: { type: 'string' } } });
  const frames = Number(values.frames ?? 40);
  const work = mkdtempSync(path.join(os.tmpdir(), 'fcn-bench-serve-live-'));
  try {
    mkdirSync(path.join(work, 'runs'));
    const firstAnswerS = await firstAnswer(work, values.threads);
    const camera = await cameraFps(work, values.threads, frames);
    console.log(JSON.stringify({ firstAnswerS: Math.round(firstAnswerS * 100) / 100, cameraFps: Math.round(camera.fps * 100) / 100, frames, precision: camera.precision }));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(`bench serve-live: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
