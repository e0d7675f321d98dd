// Segmenting pictures: label maps of the chosen models (/api/segment), the top-3 tables kept
// for hovering (/api/results), and the score maps of each stage (/api/stages).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError } from '../errors.js';
import { decodeUpload } from '../uploads.js';
import { TOP3_BYTES } from '../answers.js';
import type { SegmentAnswer } from '../protocol.js';
import type { PublicModel, ServeContext } from '../context.js';

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

const dataUrl = (png: Uint8Array) => `data:image/png;base64,${Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64')}`;
const flag = (v: unknown) => v === '1' || v === 'true' || v === '';

/** The models a `?model=` names (ids, kinds or titles, comma-separated; all by default). */
function pickModels(models: PublicModel[], value: unknown): number[] {
  if (models.length === 0) throw new HttpError(503, 'no model is loaded yet: the models are still being prepared (GET /api/models says how far)', { 'retry-after': '10' });
  if (value === undefined || value === '' || value === 'all') return models.map((m) => m.id);
  const wanted = String(value).split(',').map((s) => s.trim()).filter(Boolean);
  const ids = wanted.map((w) => {
    const m = models.find((x) => String(x.id) === w || x.kind === w || x.title.toLowerCase() === w.toLowerCase());
    if (!m) throw new HttpError(400, `unknown model '${w}' (models: ${models.map((x) => `${x.id} = ${x.kind} (${x.title})`).join(', ')}, or 'all')`);
    return m.id;
  });
  return [...new Set(ids)];
}

export function segmentRoutes(app: FastifyInstance, ctx: ServeContext): void {
  const { jobs, uploadOf } = ctx;
  const limits = { maxBytes: ctx.config.maxUploadBytes, maxPixels: ctx.config.maxPixels };
  const results = new ResultCache();

  app.post('/api/segment', async (request: FastifyRequest<{ Querystring: Record<string, string> }>) => {
    const t0 = performance.now();
    const ids = pickModels(ctx.models, request.query.model);
    // Refused at once when the queue is full, before the upload is decoded.
    jobs.admit();
    const rgb = await decodeUpload(await uploadOf(request), limits);
    const t1 = performance.now();
    const answers = await jobs.segment({ data: rgb.data, width: rgb.width, height: rgb.height }, ids, flag(request.query.top3));
    const id = results.add(rgb.width, rgb.height, answers);
    return {
      id,
      width: rgb.width,
      height: rgb.height,
      type: rgb.type,
      models: answers.map((a) => ({
        id: a.model,
        kind: ctx.models[a.model]!.kind,
        title: ctx.models[a.model]!.title,
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
    const models = ctx.models;
    const deepest = [...models].reverse().find((m) => m.kind === 'fcn8') ?? [...models].reverse().find((m) => m.kind === 'fcn16') ?? models.at(-1);
    const ids = request.query.model !== undefined || !deepest ? pickModels(models, request.query.model) : [deepest.id];
    if (ids.length !== 1) throw new HttpError(400, `?model= names one model for the stages`);
    jobs.admit();
    const rgb = await decodeUpload(await uploadOf(request), limits);
    const s = await jobs.stages({ data: rgb.data, width: rgb.width, height: rgb.height }, ids[0]!);
    const m = models[ids[0]!]!;
    const steps = s.views.map((v) => ({ name: v.name, stride: v.stride, coarse: { width: v.coarse.width, height: v.coarse.height, png: dataUrl(v.coarse.png) }, upsampledPng: dataUrl(v.upsampled), shares: v.shares }));
    return { model: { id: m.id, kind: m.kind, title: m.title, style: m.style }, width: s.width, height: s.height, ms: Math.round(s.ms), steps, final: { png: dataUrl(s.final.png), shares: s.final.shares } };
  });
}
