// Training runs: the list, one run's summary, its images, and its summary again as
// server-sent events whenever its files change (the Training page follows a run live).
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from '../errors.js';
import { LogTail, findRuns, runFile, summarizeRun, runUrl, type RunRef } from '../runs.js';
import type { ServeConfig } from '../context.js';

type Named = FastifyRequest<{ Params: { name: string } }>;

export function runRoutes(app: FastifyInstance, config: ServeConfig): void {
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
  const knownRun = (name: string): RunRef => {
    const run = findRuns(config.runRoots).find((r) => r.name === name);
    if (!run) throw new HttpError(404, `no run named '${name}' (GET /api/runs lists them)`);
    return run;
  };

  app.get('/api/runs', async () => ({
    runs: findRuns(config.runRoots).map((r) => {
      const s = summarizeRun(r, tailOf(r));
      return { name: r.name, url: runUrl(r.name), status: s.status, updated: s.updated, stages: s.config.stages.map((x) => x.model), epochs: s.epochs.length, totalEpochs: s.current.totalEpochs };
    }).sort((a, b) => (b.updated ?? '').localeCompare(a.updated ?? '')),
  }));

  app.get('/api/runs/:name', async (request: Named) => {
    const run = knownRun(request.params.name);
    return summarizeRun(run, tailOf(run));
  });

  app.get('/api/runs/:name/files/:folder/:file', async (request: FastifyRequest<{ Params: { name: string; folder: string; file: string } }>, reply) => {
    const run = knownRun(request.params.name);
    const f = runFile(run, request.params.folder, request.params.file);
    if (!f) throw new HttpError(404, `run '${run.name}' has no file '${request.params.folder}/${request.params.file}' (only the images in samples/ and plots/ are served)`);
    return reply.sendFile(f.file, f.root, { dotfiles: 'deny', cacheControl: false });
  });

  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...streams]) stop();
  });
  app.get('/api/runs/:name/events', (request: Named, reply: FastifyReply) => followRun(knownRun(request.params.name), request, reply, streams, config.pollMs ?? 500));
}

/** Server-sent events: the run's summary again whenever its files change, until the client leaves. */
function followRun(run: RunRef, request: FastifyRequest, reply: FastifyReply, streams: Set<() => void>, pollMs: number): void {
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
  const timer = setInterval(push, pollMs);
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
}
