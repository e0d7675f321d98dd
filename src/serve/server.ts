// `fcn serve`'s web server: the page (static files from web/), the JSON API, the example
// pictures, and the training runs (their summaries, live events and images). Everything it
// serves comes from web/, from memory, or from a run found under the run roots; inference runs
// in a worker thread behind a bounded queue (inference.ts).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyMultipart from '@fastify/multipart';
import fastifyStatic from '@fastify/static';
import type { InferencePrecision } from '../engine/config.js';
import { vocPalette } from '../io/image.js';
import { modelTitle } from '../infer/segment-files.js';
import { HttpError, errorBody } from './errors.js';
import { Inference } from './inference.js';
import { decodeUpload, tooLarge, ACCEPTED, type UploadLimits } from './uploads.js';
import { makeExamples, type Example } from './examples.js';
import { LogTail, findRun, findRuns, runFile, summarizeRun, runUrl, type RunRef } from './runs.js';
import type { ModelInfo, SegmentAnswer } from './protocol.js';
import { TOP3_BYTES } from './work.js';

export interface ServeConfig {
  /** Weight files (any format) or known names: the models shown side by side, in this order. */
  weights: string[];
  /** Folders searched for training runs (a folder holding config.json is a run). */
  runRoots: string[];
  maxUploadBytes: number;
  maxPixels: number;
  /** Pictures that may wait while one is segmented; more get 503. */
  queueLimit: number;
  threads: number;
  precision: InferencePrecision;
  /** Tests only: the worker waits for a permit from this gate before each job (see WorkerInit.gate). */
  gate?: SharedArrayBuffer;
  /** How often a followed run's files are looked at, ms (default 500). */
  pollMs?: number;
  logger?: boolean;
  /**
   * Answer only requests addressed to 127.0.0.1, localhost or [::1] (default true): a web page
   * elsewhere cannot reach a local server through a host name of its own (DNS rebinding).
   * Off when the server listens on another address on purpose.
   */
  loopbackOnly?: boolean;
}

export interface Served {
  app: FastifyInstance;
  inference: Inference;
  models: PublicModel[];
}

export interface PublicModel {
  id: number;
  kind: string;
  title: string;
  width: number;
  style: string;
  /** The weight file's name (not its path). */
  source: string;
  classes: { index: number; name: string; color: string }[];
}

const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');
const PALETTE = vocPalette(256);
const hex = (k: number) => `#${PALETTE[k]!.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/** The paper's name of each model, with the file's stem where two share a kind. */
function titles(models: ModelInfo[], weights: string[]): string[] {
  const base = models.map((m) => modelTitle(m.kind));
  return base.map((t, i) => (base.filter((u) => u === t).length > 1 ? `${t} (${path.basename(weights[i]!, path.extname(weights[i]!))})` : t));
}

/** Top-3 tables of recent answers, for hovering: bounded in count and bytes, oldest out first. */
class ResultCache {
  private readonly entries = new Map<string, { width: number; height: number; top3: Map<number, Uint8Array>; bytes: number }>();
  private bytes = 0;
  private next = 1;
  constructor(private readonly maxEntries = 16, private readonly maxBytes = 128 * 2 ** 20) {}

  add(width: number, height: number, answers: SegmentAnswer[]): string {
    const id = `r${this.next++}`;
    const top3 = new Map(answers.filter((a) => a.top3).map((a) => [a.model, a.top3!]));
    const bytes = [...top3.values()].reduce((n, t) => n + t.length, 0);
    this.entries.set(id, { width, height, top3, bytes });
    this.bytes += bytes;
    for (const [key, e] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      if (key === id) break;
      this.entries.delete(key);
      this.bytes -= e.bytes;
    }
    return id;
  }

  get(id: string) {
    return this.entries.get(id);
  }
}

/** Reads what is left of a request and drops it, up to `cap` bytes and 30 s. */
function drain(stream: NodeJS.ReadableStream & { destroy?: () => void; readableEnded?: boolean }, cap: number): Promise<void> {
  if (stream.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    let bytes = 0;
    const finish = () => {
      clearTimeout(timer);
      stream.removeListener('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > cap) {
        stream.destroy?.();
        finish();
      }
    };
    const timer = setTimeout(() => {
      stream.destroy?.();
      finish();
    }, 30_000);
    stream.on('data', onData);
    stream.once('end', finish);
    stream.once('close', finish);
    stream.resume();
  });
}

const dataUrl = (png: Uint8Array) => `data:image/png;base64,${Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64')}`;

export async function createServer(config: ServeConfig): Promise<Served> {
  const limits: UploadLimits = { maxBytes: config.maxUploadBytes, maxPixels: config.maxPixels };
  const inference = await Inference.start({ weights: config.weights, threads: config.threads, precision: config.precision, queueLimit: config.queueLimit, gate: config.gate });
  const modelTitles = titles(inference.models, config.weights);
  const models: PublicModel[] = inference.models.map((m, id) => ({
    id,
    kind: m.kind,
    title: modelTitles[id]!,
    width: m.width,
    style: m.style,
    source: path.basename(config.weights[id]!),
    classes: m.classNames.map((name, index) => ({ index, name, color: hex(index) })),
  }));
  let examples: Example[] = [];
  try {
    examples = await makeExamples();
  } catch (e) {
    await inference.close();
    throw e;
  }
  const results = new ResultCache();
  const tails = new Map<string, LogTail>();
  const tailOf = (run: RunRef) => {
    const file = path.join(run.dir, 'log.jsonl');
    let t = tails.get(file);
    if (!t) {
      if (tails.size >= 64) tails.delete(tails.keys().next().value!);
      tails.set(file, (t = new LogTail(file)));
    }
    return t;
  };
  const started = Date.now();

  const app = Fastify({ logger: config.logger ?? false, bodyLimit: config.maxUploadBytes, routerOptions: { maxParamLength: 1000 } });
  app.addHook('onClose', async () => inference.close());
  if (config.loopbackOnly ?? true) {
    app.addHook('onRequest', async (request) => {
      const host = (request.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      if (!LOOPBACK_NAMES.has(host)) throw new HttpError(403, `this server answers requests to 127.0.0.1 or localhost only, not to '${host}' (fcn serve --host to listen elsewhere)`);
    });
  }

  // Every error answers JSON with a message for a person; fastify's own codes get ours.
  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    if (error instanceof HttpError) return reply.code(error.statusCode).headers(error.headers).send(errorBody(error.statusCode, error.message));
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || error.code === 'FST_REQ_FILE_TOO_LARGE') {
      const e = tooLarge(Number(request.headers['content-length']) || null, config.maxUploadBytes);
      return reply.code(413).send(errorBody(413, e.message));
    }
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500;
    if (status >= 500) request.log.error(error);
    return reply.code(status).send(errorBody(status, status >= 500 ? `internal error: ${error.message}` : error.message));
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).send(errorBody(404, `nothing here: ${request.method} ${request.url.split('?')[0]}`)));

  // Bodies: multipart forms (the page), or the picture's bytes as the whole body (curl
  // --data-binary) whatever the Content-Type says: the content decides what it is.
  app.removeAllContentTypeParsers();
  // An upload over the limit is read to its end (up to a bound) before the 413 goes out:
  // a server that answers and closes while the client is still sending leaves most clients
  // (fetch, browsers) with a reset connection instead of the message.
  const drainCap = Math.max(64 * 2 ** 20, 4 * config.maxUploadBytes);
  app.addContentTypeParser('*', (request, payload, done) => {
    const declared = Number(request.headers['content-length']);
    if (declared > drainCap) return done(tooLarge(declared, config.maxUploadBytes), undefined);
    const chunks: Buffer[] = [];
    let bytes = 0;
    payload.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= config.maxUploadBytes) chunks.push(chunk);
      else if (bytes > drainCap) payload.destroy(tooLarge(bytes, config.maxUploadBytes));
    });
    payload.on('error', (e) => done(e instanceof HttpError ? e : new HttpError(400, `the upload was cut short (${e.message})`), undefined));
    payload.on('end', () => (bytes > config.maxUploadBytes ? done(tooLarge(bytes, config.maxUploadBytes), undefined) : done(null, Buffer.concat(chunks))));
  });
  await app.register(fastifyMultipart, { limits: { fileSize: config.maxUploadBytes, files: 1, fields: 8, parts: 9, fieldSize: 1024, headerPairs: 100 } });
  await app.register(fastifyStatic, { root: WEB_ROOT, prefix: '/', index: 'index.html', dotfiles: 'deny', cacheControl: false });

  const uploadOf = async (request: FastifyRequest): Promise<Buffer> => {
    if (request.isMultipart()) {
      const part = await request.file();
      if (!part) throw new HttpError(400, `the form has no file: send the picture in a file field (e.g. image=@photo.jpg)`);
      try {
        return await part.toBuffer();
      } catch (e) {
        if ((e as { code?: string }).code !== 'FST_REQ_FILE_TOO_LARGE') throw e;
        await drain(request.raw, drainCap);
        throw tooLarge(null, config.maxUploadBytes);
      }
    }
    const body = request.body;
    if (!Buffer.isBuffer(body) || body.length === 0) throw new HttpError(400, `no picture in the request: send a ${ACCEPTED} image as the body or as a multipart form file`);
    return body;
  };

  const pickModels = (value: unknown): number[] => {
    if (value === undefined || value === '' || value === 'all') return models.map((m) => m.id);
    const wanted = String(value).split(',').map((s) => s.trim()).filter(Boolean);
    const ids = wanted.map((w) => {
      const m = models.find((x) => String(x.id) === w || x.kind === w || x.title.toLowerCase() === w.toLowerCase());
      if (!m) throw new HttpError(400, `unknown model '${w}' (models: ${models.map((x) => `${x.id} = ${x.kind} (${x.title})`).join(', ')}, or 'all')`);
      return m.id;
    });
    return [...new Set(ids)];
  };
  const flag = (v: unknown) => v === '1' || v === 'true' || v === '';

  /** Refuses at once when the queue is full, before the upload is decoded. */
  const admit = () => inference.admit();

  app.get('/api/health', async () => ({
    status: 'ok',
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    models: models.length,
    queue: inference.stats(),
    rssMb: Math.round(process.memoryUsage().rss / 2 ** 20),
  }));

  app.get('/api/models', async () => ({
    models,
    limits: { maxUploadBytes: config.maxUploadBytes, maxPixels: config.maxPixels, queue: config.queueLimit },
    precision: config.precision,
  }));

  app.get('/api/examples', async () => ({ examples: examples.map((e) => ({ name: e.name, url: `/examples/${e.name}`, width: e.width, height: e.height })) }));
  app.get('/examples/:name', async (request: FastifyRequest<{ Params: { name: string } }>, reply) => {
    const e = examples.find((x) => x.name === request.params.name);
    if (!e) throw new HttpError(404, `no example '${request.params.name}' (examples: ${examples.map((x) => x.name).join(', ')})`);
    return reply.type('image/png').send(e.png);
  });

  app.post('/api/segment', async (request: FastifyRequest<{ Querystring: Record<string, string> }>) => {
    const t0 = performance.now();
    const ids = pickModels(request.query.model);
    admit();
    const rgb = await decodeUpload(await uploadOf(request), limits);
    const t1 = performance.now();
    const answers = await inference.segment({ data: rgb.data, width: rgb.width, height: rgb.height }, ids, flag(request.query.top3));
    const id = results.add(rgb.width, rgb.height, answers);
    return {
      id,
      width: rgb.width,
      height: rgb.height,
      type: rgb.type,
      models: answers.map((a) => ({
        id: a.model,
        kind: models[a.model]!.kind,
        title: models[a.model]!.title,
        ms: Math.round(a.ms * 10) / 10,
        labelsPng: dataUrl(a.png),
        shares: a.shares,
        ...(a.top3 ? { top3Url: `/api/results/${id}/top3/${a.model}` } : {}),
      })),
      timings: { decodeMs: Math.round((t1 - t0) * 10) / 10, totalMs: Math.round((performance.now() - t0) * 10) / 10 },
    };
  });

  app.get('/api/results/:id/top3/:model', async (request: FastifyRequest<{ Params: { id: string; model: string } }>, reply) => {
    const r = results.get(request.params.id);
    const table = r?.top3.get(Number(request.params.model));
    if (!r || !table) throw new HttpError(404, `no top-3 table for result ${request.params.id}, model ${request.params.model} (only the last few answers asked with ?top3=1 are kept)`);
    return reply
      .type('application/octet-stream')
      .header('x-width', String(r.width))
      .header('x-height', String(r.height))
      .header('x-layout', `per pixel, row-major: ${TOP3_BYTES} bytes = 3 class indices, then their probabilities × 255`)
      .send(Buffer.from(table.buffer, table.byteOffset, table.byteLength));
  });

  app.post('/api/stages', async (request: FastifyRequest<{ Querystring: Record<string, string> }>) => {
    const deepest = [...models].reverse().find((m) => m.kind === 'fcn8') ?? [...models].reverse().find((m) => m.kind === 'fcn16') ?? models.at(-1)!;
    const ids = request.query.model !== undefined ? pickModels(request.query.model) : [deepest.id];
    if (ids.length !== 1) throw new HttpError(400, `?model= names one model for the stages`);
    admit();
    const rgb = await decodeUpload(await uploadOf(request), limits);
    const s = await inference.stages({ data: rgb.data, width: rgb.width, height: rgb.height }, ids[0]!);
    const m = models[ids[0]!]!;
    return {
      model: { id: m.id, kind: m.kind, title: m.title, style: m.style },
      width: s.width,
      height: s.height,
      ms: Math.round(s.ms),
      steps: s.views.map((v) => ({
        name: v.name,
        stride: v.stride,
        coarse: { width: v.coarse.width, height: v.coarse.height, png: dataUrl(v.coarse.png) },
        upsampledPng: dataUrl(v.upsampled),
        shares: v.shares,
      })),
      final: { png: dataUrl(s.final.png), shares: s.final.shares },
    };
  });

  const knownRun = (name: string): RunRef => {
    const run = findRun(config.runRoots, name);
    if (!run) throw new HttpError(404, `no run named '${name}' (GET /api/runs lists them)`);
    return run;
  };

  app.get('/api/runs', async () => ({
    runs: findRuns(config.runRoots).map((r) => {
      const s = summarizeRun(r, tailOf(r));
      return { name: r.name, url: runUrl(r.name), status: s.status, updated: s.updated, stages: s.config.stages.map((x) => x.model), epochs: s.epochs.length, totalEpochs: s.current.totalEpochs };
    }).sort((a, b) => (b.updated ?? '').localeCompare(a.updated ?? '')),
  }));

  app.get('/api/runs/:name', async (request: FastifyRequest<{ Params: { name: string } }>) => {
    const run = knownRun(request.params.name);
    return summarizeRun(run, tailOf(run));
  });

  app.get('/api/runs/:name/files/:folder/:file', async (request: FastifyRequest<{ Params: { name: string; folder: string; file: string } }>, reply) => {
    const run = knownRun(request.params.name);
    const f = runFile(run, request.params.folder, request.params.file);
    if (!f) throw new HttpError(404, `run '${run.name}' has no file '${request.params.folder}/${request.params.file}' (only the images in samples/ and plots/ are served)`);
    return reply.sendFile(f.file, f.root, { dotfiles: 'deny', cacheControl: false });
  });

  // Server-sent events: the run's summary again whenever its files change.
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...streams]) stop();
  });
  app.get('/api/runs/:name/events', (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
    const run = knownRun(request.params.name);
    const tail = new LogTail(path.join(run.dir, 'log.jsonl'));
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    let lastKey = '';
    const push = () => {
      try {
        const s = summarizeRun(run, tail);
        const key = `${tail.records.length}|${s.status}|${s.samples.length}|${s.plots.length}|${s.final ? 1 : 0}`;
        if (key === lastKey) return;
        lastKey = key;
        res.write(`event: summary\ndata: ${JSON.stringify(s)}\n\n`);
      } catch (e) {
        res.write(`event: problem\ndata: ${JSON.stringify({ error: (e as Error).message })}\n\n`);
      }
    };
    const timer = setInterval(push, config.pollMs ?? 500);
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    const stop = () => {
      clearInterval(timer);
      clearInterval(ping);
      streams.delete(stop);
      if (!res.writableEnded) res.end();
    };
    streams.add(stop);
    request.raw.on('close', stop);
    push();
  });

  return { app, inference, models };
}

