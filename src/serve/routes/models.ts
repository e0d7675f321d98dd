// The models the page shows, the server's health, and the example pictures.
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { modelTitle } from '../../infer/segment-files.js';
import { HttpError } from '../errors.js';
import type { Example } from '../examples.js';
import type { ModelInfo } from '../protocol.js';
import type { PublicModel, ServeContext } from '../context.js';
import { modelCard } from '../model-cards.js';
import { SYNTH_CLASS_NAMES } from '../../data/synth.js';

/**
 * The models as the page sees them, numbered from `firstId`: the paper's name of each, with
 * the file's stem where two share a kind (among `others` too).
 */
export function publicModels(infos: ModelInfo[], weights: string[], firstId = 0, others: PublicModel[] = []): PublicModel[] {
  const base = infos.map((m) => modelTitle(m.kind));
  const shared = (t: string) => base.filter((u) => u === t).length + others.filter((o) => modelTitle(o.kind) === t).length > 1;
  return infos.map((m, i) => ({
    id: firstId + i,
    kind: m.kind,
    title: shared(base[i]!) ? `${base[i]} (${path.basename(weights[i]!, path.extname(weights[i]!))})` : base[i]!,
    width: m.width,
    style: m.style,
    source: path.basename(weights[i]!),
    classes: m.classNames.map((name, index) => ({ index, name, color: m.classColors[index]! })),
    ...modelCard(weights[i]!, m.classNames),
  }));
}

export function modelRoutes(app: FastifyInstance, ctx: ServeContext, drawn: Promise<Example[]>): void {
  const started = Date.now();
  const { config } = ctx;
  const uptimeSeconds = () => Math.round((Date.now() - started) / 1000);
  app.get('/api/health', async () => ({ status: 'ok', uptimeSeconds: uptimeSeconds(), models: ctx.models.length, queue: ctx.jobs.stats(), rssMb: Math.round(process.memoryUsage().rss / 2 ** 20) }));

  app.get('/api/models', async () => ({
    models: ctx.models,
    limits: { maxUploadBytes: config.maxUploadBytes, maxPixels: config.maxPixels, queue: config.queueLimit },
    precision: config.precision,
    preparing: ctx.preparing,
    // Only models of the demo's synthetic shapes: the page offers the paper's (which know VOC's classes).
    demoOnly: ctx.models.length > 0 && ctx.models.every((m) => m.classes.map((c) => c.name).join() === SYNTH_CLASS_NAMES.join()),
  }));

  app.get('/api/examples', async () => ({ examples: (await drawn).map((e) => ({ name: e.name, url: `/examples/${e.name}`, width: e.width, height: e.height })) }));
  app.get('/examples/:name', async (request: FastifyRequest<{ Params: { name: string } }>, reply) => {
    const examples = await drawn;
    const e = examples.find((x) => x.name === request.params.name);
    if (!e) throw new HttpError(404, `no example '${request.params.name}' (examples: ${examples.map((x) => x.name).join(', ')})`);
    return reply.type('image/png').send(e.png);
  });
}
