// `fcn serve` as a command: bad options fail at once in one line; with --weights it listens on
// 127.0.0.1 and prints the address; without, it shows the stage models of the latest finished
// `fcn demo` under --runs (its run listed on the Training page); Ctrl-C stops it cleanly.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import type { Browser } from 'playwright-core';
import path from 'node:path';
import { latestDemo } from '../../src/serve/demo-models.js';
import { main } from '../../src/cli/main.js';
import { tempDir, shapeModels, hasChromium, launchChromium, ARTIFACTS } from './fixtures.js';

const CLI = path.join(import.meta.dirname, '..', 'cli', 'run-cli.ts');
const tmp = tempDir('cli');
after(() => tmp.remove());


test('bad options fail at once, naming the option and what is expected', async () => {
  const cases: [string[], RegExp][] = [
    [['serve', '--port', 'http'], /^fcn serve: --port must be an integer from 0 to 65535/],
    [['serve', '--port', '70000'], /^fcn serve: --port must be an integer from 0 to 65535/],
    [['serve', '--queue', '-1'], /^fcn serve: --queue/],
    [['serve', '--max-pixels', '10'], /^fcn serve: --max-pixels must be an integer ≥ 1024/],
    [['serve', '--max-upload-mb', '0'], /^fcn serve: --max-upload-mb must be a number of megabytes/],
    [['serve', '--weights', path.join(tmp.dir, 'missing.safetensors')], /^fcn serve: --weights '.*missing\.safetensors': no such file/],
    [['serve', '--wieghts', 'x'], /^fcn serve: unknown option '--wieghts' \(did you mean --weights\?\)/],
  ];
  // In this process (main() is what bin/fcn.js runs): none of these gets as far as a server.
  const printed: string[] = [];
  const error = console.error;
  console.error = (...parts: unknown[]) => void printed.push(parts.join(' '));
  try {
    for (const [args, message] of cases) {
      printed.length = 0;
      assert.equal(await main(args), 2, `${args.join(' ')}: ${printed.join('\n')}`);
      assert.match(printed.join('\n'), message, args.join(' '));
    }
  } finally {
    console.error = error;
  }
});

/** Starts `fcn serve`, waits for its address line, and returns a stopper. */
async function serve(args: string[]): Promise<{ url: string; out: () => string; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--port', '0', '--threads', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = / at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearInterval(timer);
        clearTimeout(deadline);
        resolve(m[1]!);
      }
    }, 100);
    const deadline = setTimeout(() => {
      clearInterval(timer);
      child.kill('SIGKILL');
      reject(new Error(`fcn serve did not print its address in 60 s: ${out} ${err}`));
    }, 60_000);
    void exited.then((code) => {
      clearInterval(timer);
      clearTimeout(deadline);
      reject(new Error(`fcn serve exited (${code}): ${err}`));
    });
  });
  return {
    url,
    out: () => out,
    stop: async () => {
      child.kill('SIGINT');
      return Promise.race([exited, new Promise<null>((r) => setTimeout(() => { child.kill('SIGKILL'); r(null); }, 15_000))]);
    },
  };
}

test('with --weights: listens on 127.0.0.1, prints the address, answers, and stops on Ctrl-C', async () => {
  const files = shapeModels(tmp.dir);
  const s = await serve(['--weights', files.join(','), '--runs', tmp.dir]);
  try {
    assert.match(s.out(), /^fcn serve: loading 3 models from 3 files \(\w+, 1 threads\)…$/m);
    assert.match(s.out(), /^fcn serve: FCN-32s, FCN-16s, FCN-8s at http:\/\/127\.0\.0\.1:\d+ {2}\(Ctrl-C stops\)$/m);
    const health = (await (await fetch(s.url + '/api/health')).json()) as any;
    assert.equal(health.status, 'ok');
    assert.equal(health.queue.queueLimit, 8);
  } finally {
    assert.equal(await s.stop(), 0);
  }
  assert.match(s.out(), /fcn serve: stopping/);
});

test('without --weights: the latest finished fcn demo\'s stage models (one per kind, the last of each), its run on the Training page', async () => {
  const files = shapeModels(tmp.dir);
  const runsRoot = path.join(tmp.dir, 'runs');
  const demo = (name: string, stages: [number, string, string][], finished: boolean, age: number) => {
    const out = path.join(runsRoot, name);
    const checkpoints = path.join(out, 'run', 'checkpoints');
    mkdirSync(checkpoints, { recursive: true });
    writeFileSync(path.join(out, 'run', 'config.json'), JSON.stringify({ stages: stages.map(([, kind]) => ({ model: kind, epochs: 1, trainable: 'all' })) }));
    writeFileSync(path.join(out, 'run', 'log.jsonl'), JSON.stringify({ type: 'start', train: 8, val: 2 }) + '\n');
    for (const [i, kind, from] of stages) copyFileSync(from, path.join(checkpoints, `stage${i}-${kind}.safetensors`));
    if (finished) {
      writeFileSync(path.join(out, 'report.html'), '<html></html>');
      const t = Date.now() / 1000 - age;
      utimesSync(path.join(out, 'report.html'), t, t);
    }
  };
  // An older finished demo, the latest finished one, and a newer one that did not finish.
  demo('demo-old', [[1, 'fcn32', files[0]!]], true, 3600);
  demo('demo-new', [[1, 'fcn32', files[0]!], [2, 'fcn16', files[1]!], [3, 'fcn8', files[2]!], [4, 'fcn8', files[2]!], [5, 'fcn8', files[2]!]], true, 60);
  demo('demo-unfinished', [[1, 'fcn32', files[0]!]], false, 0);
  const picked = latestDemo(runsRoot)!;
  assert.deepEqual(picked.map((w) => path.relative(runsRoot, w)), ['demo-new/run/checkpoints/stage1-fcn32.safetensors', 'demo-new/run/checkpoints/stage2-fcn16.safetensors', 'demo-new/run/checkpoints/stage5-fcn8.safetensors']);

  const s = await serve(['--runs', runsRoot]);
  try {
    assert.match(s.out(), /loading 3 models from .*demo-new\/run\/checkpoints/);
    const models = (await (await fetch(s.url + '/api/models')).json()) as any;
    assert.deepEqual(models.models.map((m: any) => [m.title, m.source]), [['FCN-32s', 'stage1-fcn32.safetensors'], ['FCN-16s', 'stage2-fcn16.safetensors'], ['FCN-8s', 'stage5-fcn8.safetensors']]);
    const runs = (await (await fetch(s.url + '/api/runs')).json()) as any;
    assert.deepEqual(runs.runs.map((r: any) => r.name).sort(), ['demo-new/run', 'demo-old/run', 'demo-unfinished/run']);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

test('without a finished demo: answers at once while the demo trains, the page follows that training, then switches to Segment with its models', async () => {
  const runsRoot = path.join(tmp.dir, 'runs-fresh');
  mkdirSync(runsRoot);
  const spawned = performance.now();
  const s = await serve(['--runs', runsRoot, '--demo-count', '12']);
  let browser: Browser | undefined;
  try {
    const page = await fetch(s.url + '/');
    const firstAnswer = performance.now();
    assert.equal(page.status, 200);
    const early = (await (await fetch(s.url + '/api/models')).json()) as any;
    // The first answer came before the models were ready: none loaded, the demo training.
    assert.deepEqual(early.models, []);
    assert.equal(early.preparing.state, 'training');
    assert.match(early.preparing.run, /^demo-[\dT-]+\/run$/);
    console.log(`# the start page answered ${((firstAnswer - spawned) / 1000).toFixed(2)} s after launch (load ${os.loadavg()[0]!.toFixed(1)})`);
    const segmenting = (await fetch(s.url + '/api/segment', { method: 'POST', body: new Uint8Array(8) }));
    assert.equal(segmenting.status, 503);
    assert.match(((await segmenting.json()) as any).error, /no model is loaded yet/);

    if (hasChromium) {
      browser = await launchChromium();
      const view = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await view.goto(s.url + '/');
      await view.waitForSelector('body[data-ready=preparing]');
      assert.equal(await view.isVisible('#page-training'), true, 'the Training view is shown while the demo trains');
      // The banner follows the run: its epoch, then the time left once a step was timed.
      await view.waitForFunction(() => /Epoch \d+ of 15 .*left/.test(document.getElementById('prep-detail')!.textContent ?? ''), null, { timeout: 600_000 });
      await view.screenshot({ path: path.join(ARTIFACTS, 'preparing-1280x900.png') });
      await view.waitForSelector('body[data-ready=true]', { timeout: 900_000 });
      assert.equal(await view.isVisible('#page-segment'), true, 'Segment once the models are ready');
      assert.equal(await view.isVisible('#prep-banner'), false);
    }
    for (let i = 0; i < 900; i++) {
      const m = (await (await fetch(s.url + '/api/models')).json()) as any;
      if (m.models.length === 3 && m.preparing === null) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const ready = (await (await fetch(s.url + '/api/models')).json()) as any;
    assert.deepEqual(ready.models.map((m: any) => m.title), ['FCN-32s', 'FCN-16s', 'FCN-8s']);
    assert.ok(ready.models.every((m: any) => m.trainedOn.startsWith("the demo's synthetic scenes") && m.valMeanIoU > 0), JSON.stringify(ready.models.map((m: any) => [m.trainedOn, m.valMeanIoU])));
    assert.equal(ready.demoOnly, true);
    const answer = await fetch(s.url + '/api/segment', { method: 'POST', body: new Uint8Array(await (await fetch(s.url + '/examples/scene-1.png')).arrayBuffer()) });
    assert.equal(answer.status, 200);
  } finally {
    await browser?.close();
    assert.equal(await s.stop(), 0);
  }
});
