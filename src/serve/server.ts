// `fcn serve`'s web server: the page (static files from web/), the JSON API, the example
// pictures, and the training runs (their summaries, live events and images). Everything it
// serves comes from web/, from memory, or from a run found under the run roots; inference runs
// in a worker thread behind a bounded queue (job-queue.ts). Each group of routes has its module
// under routes/.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { HttpError, errorBody } from './errors.js';
import { JobQueue } from './job-queue.js';
import { tooLarge } from './uploads.js';
import { makeExamples } from './examples.js';
import type { PublicModel, ServeConfig, ServeContext } from './context.js';
import { installBodies } from './routes/bodies.js';
import { modelRoutes, publicModels } from './routes/models.js';
import { segmentRoutes } from './routes/segment.js';
import { runRoutes } from './routes/runs.js';
import { weightRoutes } from './routes/weights.js';

export type { PublicModel, ServeConfig } from './context.js';

export interface Served {
  app: FastifyInstance;
  jobs: JobQueue;
  models: PublicModel[];
  /** The routes' shared state: `preparing` and `addModels` for a server started before its models. */
  context: ServeContext;
}

const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');

/** Requests to other host names refused; every error answered as JSON with a message for a person. */
function installGuards(app: FastifyInstance, config: ServeConfig): void {
  if (config.loopbackOnly ?? true) {
    app.addHook('onRequest', async (request) => {
      const host = (request.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      if (!LOOPBACK_NAMES.has(host)) throw new HttpError(403, `this server answers requests to 127.0.0.1 or localhost only, not to '${host}' (fcn serve --host to listen elsewhere)`);
    });
  }
  // fastify's own error codes get ours.
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
}

export async function createServer(config: ServeConfig): Promise<Served> {
  const jobs = await JobQueue.start(config);
  // Drawn while the server starts listening: the routes wait for them.
  const examples = makeExamples();
  examples.catch(() => {});
  const app = Fastify({ logger: false, bodyLimit: config.maxUploadBytes, routerOptions: { maxParamLength: 1000 } });
  app.addHook('onClose', async () => jobs.close());
  installGuards(app, config);
  const uploadOf = await installBodies(app, config.maxUploadBytes);
  await app.register(fastifyStatic, { root: WEB_ROOT, prefix: '/', index: 'index.html', dotfiles: 'deny', cacheControl: false });

  const ctx: ServeContext = {
    config,
    jobs,
    models: publicModels(jobs.models, config.weights),
    preparing: null,
    uploadOf,
    async addModels(weights) {
      const added = publicModels(await jobs.load(weights), weights, ctx.models.length, ctx.models);
      ctx.models.push(...added);
      return added;
    },
  };
  modelRoutes(app, ctx, examples);
  segmentRoutes(app, ctx);
  runRoutes(app, config);
  weightRoutes(app, ctx);
  return { app, jobs, models: ctx.models, context: ctx };
}
