// `fcn serve`: a web page where FCN-32s, 16s and 8s segment pictures side by side, a drawing
// canvas, a walk through the network's score maps, and live training curves.
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { engineConfig } from '../engine/config.js';
import { isKnownWeights } from '../io/weights-cache.js';
import { checkInputFile } from './paths.js';
import { createServer } from '../serve/server.js';
import type { ServeContext } from '../serve/context.js';
import { latestDemo } from '../serve/demo-models.js';
import { UsageError, parse, parseNumber } from './args.js';
import { applyEngineFlags } from './engine-flags.js';
import { inferenceEngineOptionSpecs, type CommandSpec } from './help.js';

const cmd = 'serve';
const DEFAULT_RUNS = 'runs';

export const serveSpec = {
  name: cmd,
  summary: 'a web page: FCN-32s/16s/8s side by side, drawing, how it works, live training',
  usage: ['[--weights W[,W2,W3]] [--host H] [--port N] [--runs DIR[,DIR]] [--max-upload-mb N] [--max-pixels N] [--queue N]'],
  details: `Serves a page with four parts: Segment (upload, drop, paste or pick an example: each model's
label map, an overlay, class shares, top-3 classes under the pointer), Draw (shapes drawn with the
mouse, segmented as you draw), How it works (the picture's own score maps at 1/32, 1/16 and 1/8)
and Training (a run's curves, followed live while fcn train writes it). Without --weights, the
models are the stages of the latest fcn demo under runs/; if there is none, the demo trains first
while the page already answers and shows that training live.
The JSON API: POST /api/segment, POST /api/stages, GET /api/models, /api/runs, /api/runs/NAME,
/api/runs/NAME/events (server-sent events), /api/health.`,
  options: {
    weights: { type: 'string', value: 'W[,W2,W3]', help: 'weight files (any format) or known names: several are compared side by side', default: 'the latest fcn demo run\'s stage models' },
    host: { type: 'string', value: 'H', help: 'address to listen on (another than 127.0.0.1 exposes the page to the network)', default: '127.0.0.1' },
    port: { type: 'string', value: 'N', help: 'port to listen on (0: any free port)', default: '8080' },
    runs: { type: 'string', value: 'DIR[,DIR]', help: 'folders searched for training runs (a folder with config.json is a run)', default: DEFAULT_RUNS },
    'max-upload-mb': { type: 'string', value: 'N', help: 'largest upload, in megabytes', default: '10' },
    'max-pixels': { type: 'string', value: 'N', help: 'largest picture, in decoded pixels (checked from the header before decoding)', default: '4000000' },
    queue: { type: 'string', value: 'N', help: 'pictures that may wait while one is segmented; more are refused with 503', default: '8' },
    'demo-count': { type: 'string', value: 'N', help: 'scenes the demo synthesises when it trains first (fcn demo --count)', default: '300' },
    ...inferenceEngineOptionSpecs,
  },
  examples: [
    'fcn serve',
    'fcn serve --weights runs/demo/run/checkpoints/stage1-fcn32.safetensors,runs/demo/run/checkpoints/stage5-fcn8.safetensors --port 8081',
    'fcn serve --weights fcn8s --max-pixels 1000000',
  ],
} satisfies CommandSpec;

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parse(serveSpec, argv);
  applyEngineFlags(serveSpec, values);
  const port = parseNumber(cmd, values.port, 'port', (n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'an integer from 0 to 65535') ?? 8080;
  const host = values.host ?? '127.0.0.1';
  const maxUploadMb = parseNumber(cmd, values['max-upload-mb'], 'max-upload-mb', (n) => n > 0 && n <= 1024, 'a number of megabytes in (0, 1024]') ?? 10;
  const maxPixels = parseNumber(cmd, values['max-pixels'], 'max-pixels', (n) => Number.isInteger(n) && n >= 1024, 'an integer ≥ 1024') ?? 4_000_000;
  const queue = parseNumber(cmd, values.queue, 'queue', (n) => Number.isInteger(n) && n >= 0 && n <= 1000, 'an integer from 0 to 1000') ?? 8;
  const demoCount = parseNumber(cmd, values['demo-count'], 'demo-count', (n) => Number.isInteger(n) && n >= 10, 'an integer ≥ 10');
  const runRoots = (values.runs ?? DEFAULT_RUNS).split(',').map((s) => s.trim()).filter(Boolean);
  const { weights, origin, demoOut } = chooseModels(values.weights, runRoots);

  const cfg = engineConfig();
  if (weights.length) console.log(`fcn serve: loading ${weights.length} model${weights.length === 1 ? '' : 's'} from ${origin} (${cfg.precision}, ${cfg.threads} threads)…`);
  const loopback = ['127.0.0.1', 'localhost', '::1'].includes(host);
  const served = await createServer({ weights, runRoots, maxUploadBytes: Math.round(maxUploadMb * 2 ** 20), maxPixels, queueLimit: queue, threads: cfg.threads, precision: cfg.precision, loopbackOnly: loopback });
  let address: string;
  try {
    address = await served.app.listen({ host, port });
  } catch (e) {
    await served.app.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UsageError(`fcn ${cmd}: port ${port} on ${host} is in use: choose another with --port (0 picks a free one)`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UsageError(`fcn ${cmd}: cannot listen on --host '${host}': no such local address`);
    throw e;
  }
  const demo = demoOut ? trainDemo(served.context, demoOut, runRoots[0]!, demoCount) : null;
  console.log(`fcn serve: ${demoOut ? 'the demo models (training now)' : served.models.map((m) => m.title).join(', ')} at ${address}  (Ctrl-C stops)`);
  if (!loopback) console.log(`fcn serve: listening on ${host}: other machines on the network can reach this page`);

  // Until Ctrl-C or SIGTERM; then neither signal is listened to any more.
  const signalled = new AbortController();
  await Promise.race(['SIGINT', 'SIGTERM'].map((s) => once(process, s, { signal: signalled.signal }).catch(() => {})));
  signalled.abort();
  console.log('fcn serve: stopping');
  demo?.kill('SIGTERM');
  await served.app.close();
  return 0;
}

/** The weight files given, or the latest finished demo's; neither: the folder a demo should train into. */
function chooseModels(given: string | undefined, runRoots: string[]): { weights: string[]; origin: string; demoOut: string | null } {
  if (given !== undefined) {
    const weights = given.split(',').map((s) => s.trim()).filter(Boolean);
    if (weights.length === 0) throw new UsageError(`fcn ${cmd}: --weights needs at least one file`);
    for (const w of weights) if (!isKnownWeights(w)) checkInputFile(cmd, 'weights', w);
    // A run's checkpoints: its training curves belong on the page too.
    for (const w of weights) {
      const run = path.dirname(path.dirname(path.resolve(w)));
      if (path.basename(path.dirname(path.resolve(w))) === 'checkpoints' && existsSync(path.join(run, 'config.json')) && !runRoots.some((r) => run.startsWith(path.resolve(r) + path.sep))) runRoots.push(run);
    }
    return { weights, origin: weights.length === 1 ? weights[0]! : `${weights.length} files`, demoOut: null };
  }
  if (engineConfig().precision === 'int8') throw new UsageError(`fcn ${cmd}: --precision int8 serves int8 models: make them with fcn quantize and give them with --weights`);
  const demo = runRoots.map((r) => latestDemo(r)).find((d) => d !== null) ?? null;
  if (demo) return { weights: demo, origin: path.relative(process.cwd(), path.dirname(demo[0]!)) || '.', demoOut: null };
  return { weights: [], origin: '', demoOut: path.join(runRoots[0]!, `demo-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`) };
}

/**
 * Trains the demo's models in a process of its own while the server answers (the page follows
 * the run live), then loads them into the running server.
 */
function trainDemo(ctx: ServeContext, out: string, root: string, count: number | undefined): ChildProcess {
  console.log(`fcn serve: no finished fcn demo under ${root}: training its models now (${out}, a few minutes on 2 cores); the page shows the training meanwhile`);
  const cfg = engineConfig();
  const run = path.relative(path.resolve(root), path.resolve(out, 'run')).split(path.sep).join('/');
  ctx.preparing = { state: 'training', message: 'Training the demo models: FCN-32s, then FCN-16s, then FCN-8s', run };
  const cli = process.argv[1] ?? fileURLToPath(new URL('../../bin/fcn.js', import.meta.url));
  const args = [...process.execArgv, cli, 'demo', '--out', out, '--threads', String(cfg.threads), '--precision', cfg.precision, ...(count ? ['--count', String(count)] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  child.on('exit', (code, signal) => {
    const demo = code === 0 ? latestDemo(root) : null;
    if (!demo) {
      const why = code === 0 ? `it left no stage models in ${out}` : `it stopped (${signal ?? `exit code ${code}`})`;
      ctx.preparing = { state: 'failed', message: `The demo did not finish: ${why}; restart fcn serve, or give models with --weights`, run };
      return console.error(`fcn serve: ${ctx.preparing.message}`);
    }
    ctx.preparing = { state: 'loading', message: 'Loading the demo models', run };
    ctx.addModels(demo).then(
      (models) => {
        ctx.preparing = null;
        console.log(`fcn serve: ${models.map((m) => m.title).join(', ')} ready`);
      },
      (e: Error) => {
        ctx.preparing = { state: 'failed', message: `The demo models cannot be loaded: ${e.message}`, run };
        console.error(`fcn serve: ${ctx.preparing.message}`);
      },
    );
  });
  return child;
}
