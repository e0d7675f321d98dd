// A bounded load test of fcn serve: 200 requests from 8 concurrent clients, valid pictures
// mixed with bad uploads. Nothing may fail but the intended 4xx (and 503s, which a queue as
// long as the clients are many never needs); every valid answer's label maps must be exactly
// `fcn predict`'s on the same picture. Latencies and memory are reported, not asserted
// (bench/serve.ts measures them for the bench).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decode } from 'fast-png';
import { loadModel } from '../../src/models/weights.js';
import { segment } from '../../src/infer/inference.js';
import { engineConfig } from '../../src/engine/config.js';
import type { FCN } from '../../src/models/fcn.js';
import { loadCases, loadTest, type LoadCase } from '../../bench/serve.js';
import { tempDir, vocModels, startServer, labelsOfDataUrl, type TestServer } from './fixtures.js';

const tmp = tempDir('load');
const MAX_UPLOAD = 1 * 2 ** 20;
let server: TestServer;
let weights: string[];
let cases: LoadCase[];

before(async () => {
  weights = vocModels(tmp.dir);
  server = await startServer({ weights, maxUploadBytes: MAX_UPLOAD, queueLimit: 8 });
  // VOC photos (when the shared sample is here) at 200 px wide, synthetic PNG and WebP scenes.
  cases = await loadCases({ maxUploadBytes: MAX_UPLOAD, vocWidth: 200 });
});

after(async () => {
  await server?.close();
  tmp.remove();
});

const vmHwmMb = () => Number(/^VmHWM:\s*(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) / 1024;

test('200 requests from 8 clients: only the intended 4xx, every valid answer is fcn predict\'s labels', async (t) => {
  const valid = [...new Map(cases.filter((c) => c.expect === 200).map((c) => [c.name, c])).values()];
  assert.ok(valid.length >= 2 && cases.some((c) => c.expect !== 200), 'a mix of valid and bad uploads');
  // The reference: segment() on each picture written to a file, as `fcn predict` reads it.
  const reference = new Map<string, Buffer[]>();
  const models: FCN[] = await Promise.all(weights.map((w) => loadModel(w)));
  try {
    for (const c of valid) {
      const file = path.join(tmp.dir, c.name);
      writeFileSync(file, c.body);
      reference.set(c.name, await Promise.all(models.map(async (m) => Buffer.from((await segment(m, file, { precision: engineConfig().precision })).labels))));
    }
  } finally {
    for (const m of models) m.dispose();
  }
  // And the command itself, once: its label PNG is the reference's FCN-8s map.
  const predicted = path.join(tmp.dir, 'predicted.png');
  const cli = spawnSync(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '..', 'cli', 'run-cli.ts'), 'predict', '--weights', weights[2]!, '--image', path.join(tmp.dir, valid[0]!.name), '--labels', predicted], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(cli.status, 0, cli.stderr);
  assert.ok(Buffer.from(decode(readFileSync(predicted)).data as Uint8Array).equals(reference.get(valid[0]!.name)![2]!), 'fcn predict\'s labels are the reference');

  const r = await loadTest(server.url, cases, { requests: 200, clients: 8, timeoutMs: 60_000 });
  assert.equal(r.answers.length, 200);
  assert.deepEqual(r.failures.map((f) => `${f.caseName}: ${f.status} ${JSON.stringify(f.json)}`), [], 'no answer but the intended ones');
  assert.equal(r.refused, 0, 'no 503: the queue holds as many pictures as there are clients');
  const statuses = new Map<string, Set<number>>();
  for (const a of r.answers) (statuses.get(a.caseName) ?? statuses.set(a.caseName, new Set()).get(a.caseName)!).add(a.status);
  for (const c of cases) assert.deepEqual([...statuses.get(c.name) ?? []], [c.expect], `${c.name}: always ${c.expect}`);
  let checked = 0;
  for (const a of r.answers) {
    const expected = reference.get(a.caseName);
    if (!expected) {
      assert.ok(typeof a.json.error === 'string' && a.json.error.length > 20, `${a.caseName}: a message (${a.json.error})`);
      continue;
    }
    assert.equal(a.json.models.length, 3);
    a.json.models.forEach((m: any, i: number) => {
      assert.ok(Buffer.from(labelsOfDataUrl(m.labelsPng).labels).equals(expected[i]!), `${a.caseName}: ${m.title}'s labels differ from fcn predict's`);
      checked++;
    });
  }
  assert.ok(checked >= 3 * 100, `${checked} label maps checked`);
  const h = (await (await fetch(server.url + '/api/health')).json()) as any;
  t.diagnostic(`${r.answers.filter((a) => a.status === 200).length} valid answers in ${r.seconds.toFixed(1)} s: p50 ${r.p50Ms.toFixed(0)} ms, p95 ${r.p95Ms.toFixed(0)} ms; test process peak RSS ${vmHwmMb().toFixed(0)} MB; worker jobs ${h.queue.completed}`);
});
