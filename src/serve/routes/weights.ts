// The paper's models a click away: the page asks for a known name (never an address), the
// server downloads it into the weights cache through the resumable downloader (as `fcn
// weights fetch` does), one download at a time, then loads it beside the models it has.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { KNOWN_WEIGHTS, cacheState, cachedPath, fetchWeights, weightsUrl } from '../../io/weights-cache.js';
import { HttpError } from '../errors.js';
import type { ServeContext } from '../context.js';

/** The names the page may ask for: the paper's three models. */
export const FETCHABLE = ['fcn32s', 'fcn16s', 'fcn8s'] as const;

export function weightRoutes(app: FastifyInstance, ctx: ServeContext): void {
  // The download in progress, or the last one.
  let current: { name: string; state: 'downloading' | 'loading' | 'done' | 'failed'; received: number; total: number | null; message: string | null } | null = null;
  const loaded = new Set<string>();

  app.get('/api/weights', async () => ({
    weights: FETCHABLE.map((name) => {
      const state = cacheState(name);
      const known = KNOWN_WEIGHTS[name];
      return {
        name,
        description: known.description,
        approxBytes: known.approxBytes,
        cache: state.state,
        loaded: loaded.has(name),
        // The offline route: this address, downloaded elsewhere, goes to this file.
        byHand: { url: weightsUrl(name), file: cachedPath(name) },
      };
    }),
    download: current,
  }));

  app.post('/api/weights/:name/fetch', async (request: FastifyRequest<{ Params: { name: string } }>, reply) => {
    const name = request.params.name;
    if (!(FETCHABLE as readonly string[]).includes(name)) throw new HttpError(400, `the page can fetch only ${FETCHABLE.join(', ')}, not '${name}'`);
    if (loaded.has(name)) throw new HttpError(409, `${name} is loaded already`);
    if (current && (current.state === 'downloading' || current.state === 'loading')) throw new HttpError(409, `${current.name} is being fetched: one download at a time`, { 'retry-after': '5' });
    const d: NonNullable<typeof current> = (current = { name, state: 'downloading', received: 0, total: KNOWN_WEIGHTS[name as 'fcn8s'].approxBytes, message: null });
    void (async () => {
      try {
        const fetched = await fetchWeights(name, { onProgress: (p) => Object.assign(d, { received: p.received, total: p.total ?? d.total }) });
        d.state = 'loading';
        d.received = fetched.bytes;
        // By its name: the card says what the paper's model knows, the worker finds the cached file.
        await ctx.addModels([name]);
        loaded.add(name);
        d.state = 'done';
      } catch (e) {
        d.state = 'failed';
        d.message = (e as Error).message;
      }
    })();
    return reply.code(202).send({ download: d });
  });
}
