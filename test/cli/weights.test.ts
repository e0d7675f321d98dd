import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { main } from '../../src/cli/main.js';
import { weightsCommand } from '../../src/cli/weights.js';
import { f32, readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { KNOWN_WEIGHTS_NAMES, cachedPath } from '../../src/io/weights-cache.js';
import { FCN } from '../../src/models/fcn.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { WEIGHTS_FORMAT, kerasShape } from '../../src/models/weights-layout.js';
import { captureOutput, sharedRoot, tempDir } from '../data/helpers.js';
import { requires } from '../prereq.js';
import { findPython, runPython } from '../reference/python.js';

const run = (...argv: string[]) => captureOutput(() => weightsCommand(argv));

const tmp = tempDir('cli-weights');
const home = join(tmp.dir, 'home');
const modelFile = join(tmp.dir, 'fcn8.safetensors');
/** Names and Keras shapes of the small model's parameters, in the model's order. */
let expected: { name: string; shape: number[] }[] = [];
let savedHome: string | undefined;

before(() => {
  // Every command here reads the cache through the environment, as a user's shell would set it.
  savedHome = process.env['FCN_HOME'];
  process.env['FCN_HOME'] = home;
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  try {
    model.initialize(0);
    saveWeights(modelFile, model);
    expected = model.params().map((p) => ({ name: p.name, shape: kerasShape(p) }));
  } finally {
    model.dispose();
  }
});
after(() => {
  if (savedHome === undefined) delete process.env['FCN_HOME'];
  else process.env['FCN_HOME'] = savedHome;
  tmp.cleanup();
});

describe('help and usage errors', () => {
  test('fcn weights --help lists the subcommands; each subcommand answers --help with options and an example', async () => {
    const top = await captureOutput(() => main(['weights', '--help']));
    assert.equal(top.code, 0);
    for (const sub of ['fetch', 'list', 'inspect', 'convert']) assert.match(top.out, new RegExp(`fcn weights ${sub}`));
    const wants: Record<string, RegExp[]> = {
      fetch: [/--force/, /--url URL/, /FCN_WEIGHTS_VGG16_NOTOP_URL/, /default: 3/],
      list: [/--json/, /\$FCN_HOME\/weights/],
      inspect: [/--json/, /skip scales/],
      convert: [/<out\.safetensors>/, /backbone/],
    };
    for (const [sub, patterns] of Object.entries(wants)) {
      const r = await run(sub, '--help');
      assert.equal(r.code, 0, sub);
      assert.equal(r.err, '');
      assert.match(r.out, new RegExp(`^fcn weights ${sub} `), sub);
      assert.match(r.out, /Examples?:\n {2}fcn weights /, sub);
      for (const p of patterns) assert.match(r.out, p, `${sub}: ${p}`);
    }
  });

  test('bad names, bad subcommands and bad arguments are usage errors naming the problem', async () => {
    let r = await run('fetch', 'vgg19');
    assert.equal(r.code, 2);
    assert.equal(r.err, `fcn weights fetch: unknown weights 'vgg19' (known: ${KNOWN_WEIGHTS_NAMES.join(', ')})\n`);
    r = await run('fetch', 'fcn8s', 'fcn16s', '--url', 'http://127.0.0.1:9/x');
    assert.equal(r.code, 2);
    assert.match(r.err, /--url gives one address, but 2 names were given/);
    r = await run('fetch');
    assert.equal(r.code, 2);
    r = await run('inspect', 'fcn4s');
    assert.equal(r.code, 1);
    assert.equal(r.err, `fcn weights inspect: fcn4s: no such file, and not a known weights name (known: ${KNOWN_WEIGHTS_NAMES.join(', ')})\n`);
    r = await run('inspect', 'fcn32s');
    assert.equal(r.code, 1);
    assert.match(r.err, /not downloaded yet; run: fcn weights fetch fcn32s\n.*put it at .*fcn32s-heavy-pascal\.caffemodel/);
    r = await run('convert', modelFile);
    assert.equal(r.code, 2);
    assert.match(r.err, /convert: expected an input .* and an output file/);
    r = await run('convert', modelFile, modelFile);
    assert.equal(r.code, 2);
    assert.match(r.err, /is the input file/);
    r = await run('prune');
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown subcommand 'prune' \(fetch, list, inspect, convert\)/);
    r = await run('list', '--bogus');
    assert.equal(r.code, 2);
    assert.match(r.err, /^fcn weights list: unknown option '--bogus'/i);
  });
});

describe('inspect and convert', () => {
  test('inspect: format, the network it implies, and every tensor with its shape', async () => {
    const r = await run('inspect', modelFile);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^format +safetensors$/m);
    assert.match(r.out, /^network +fcn8, style keras, width 0\.0625, classes 21$/m);
    assert.match(r.out, new RegExp(`^metadata  format = ${WEIGHTS_FORMAT}$`, 'm'));
    const listed = [...r.out.matchAll(/^ {2}(\S+) +\[([\d, ]+)\]$/gm)].map((m) => ({ name: m[1]!, shape: m[2]!.split(', ').map(Number) }));
    assert.deepEqual(new Set(listed.map((t) => JSON.stringify(t))), new Set(expected.map((t) => JSON.stringify(t))));
    assert.ok(listed.some((t) => t.name === 'block1_conv1.kernel' && t.shape.join() === '3,3,3,4'));
    assert.ok(listed.some((t) => t.name === 'fcn8.kernel' && t.shape.join() === '16,16,21,21'));
    const parameters = expected.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    assert.match(r.out, new RegExp(`^tensors +${expected.length}, ${parameters.toLocaleString('en-US')} parameters$`, 'm'));

    const j = await run('inspect', modelFile, '--json');
    assert.equal(j.code, 0, j.err);
    const json = JSON.parse(j.out);
    assert.equal(json.format, 'safetensors');
    assert.deepEqual(json.network, { model: 'fcn8', style: 'keras', width: '0.0625', classes: '21' });
    assert.equal(json.tensors.length, expected.length);
    assert.equal(json.parameters, parameters);
    assert.deepEqual(json.notes, []);
  });

  test('inspect takes a known name once its file is in the cache', async () => {
    const dest = cachedPath('fcn8s');
    mkdirSync(join(home, 'weights'), { recursive: true });
    copyFileSync(modelFile, dest);
    try {
      const r = await run('inspect', 'fcn8s');
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`^file +${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
      assert.match(r.out, /^network +fcn8,/m);
    } finally {
      // The cached "fcn8s" is a stand-in: leave the cache empty for the other tests.
      rmSync(dest);
    }
  });

  test('convert a model file: the output loads as the same model with the same tensors', async () => {
    const out = join(tmp.dir, 'converted', 'fcn8-copy.safetensors');
    const r = await run('convert', modelFile, out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^wrote .*fcn8-copy\.safetensors: fcn8, width 0\.0625, 21 classes \(from .*fcn8\.safetensors, safetensors\)\n$/);
    const a = readSafetensors(modelFile), b = readSafetensors(out);
    assert.deepEqual([...b.tensors.keys()].sort(), [...a.tensors.keys()].sort());
    for (const [name, t] of a.tensors) {
      assert.deepEqual(b.tensors.get(name)!.shape, t.shape, name);
      assert.deepEqual(b.tensors.get(name)!.data, t.data, name);
    }
    assert.equal(b.metadata['model'], 'fcn8');
    assert.equal(b.metadata['converted_from'], 'fcn8.safetensors');
    assert.equal(b.metadata['source_format'], 'safetensors');
    const model = await loadModel(out);
    try {
      assert.equal(model.kind, 'fcn8');
      assert.equal(model.width, 0.0625);
    } finally {
      model.dispose();
    }
  });

  test('convert a backbone-only file: its tensors as they are, with its metadata', async () => {
    const backbone = join(tmp.dir, 'vgg-part.safetensors');
    const kernel = f32([3, 3, 3, 4], Float32Array.from({ length: 108 }, (_, i) => i / 7));
    const bias = f32([4], [1, -2, 3, -4]);
    writeSafetensors(backbone, { 'block1_conv1.kernel': kernel, 'block1_conv1.bias': bias }, { backbone: 'vgg16', style: 'keras' });
    const insp = await run('inspect', backbone);
    assert.match(insp.out, /^network +none \(a vgg16 backbone\), style keras, width 0\.0625 \(from block1_conv1\), backbone vgg16$/m);
    const out = join(tmp.dir, 'vgg-out.safetensors');
    const r = await run('convert', backbone, out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote .*vgg-out\.safetensors: 2 tensors of a vgg16 backbone/);
    const written = readSafetensors(out);
    assert.deepEqual(written.tensors.get('block1_conv1.kernel')!.data, kernel.data);
    assert.deepEqual(written.tensors.get('block1_conv1.bias')!.data, bias.data);
    assert.equal(written.metadata['backbone'], 'vgg16');
    assert.equal(written.metadata['style'], 'keras');
    assert.equal(written.metadata['format'], WEIGHTS_FORMAT);
    assert.equal(written.metadata['model'], undefined);
  });
});

describe('fetch and list against a local server', { timeout: 30_000 }, () => {
  const payload = randomBytes(40_000);
  let server: http.Server;
  let url = '';
  let requests = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      if (++requests > 20 || req.url !== '/w.caffemodel') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-length': payload.length }).end(payload);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/w.caffemodel`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('list before: nothing cached, and the cache folder', async () => {
    const r = await run('list');
    assert.equal(r.code, 0, r.err);
    for (const name of KNOWN_WEIGHTS_NAMES) assert.match(r.out, new RegExp(`^${name} +~?[\\d.]+ MiB +no +\\S`, 'm'));
    assert.match(r.out, /^vgg16 +527\.8 MiB +no +Keras VGG16/m);
    assert.match(r.out, new RegExp(`^cache: ${join(home, 'weights')}$`, 'm'));
  });

  test('fetch: progress on stderr, the cached path on stdout; a second fetch keeps the file', async () => {
    const r = await run('fetch', 'fcn8s', '--url', url);
    assert.equal(r.code, 0, r.err);
    const dest = cachedPath('fcn8s');
    assert.equal(r.out, `${dest}\n`);
    assert.match(r.err, new RegExp(`from ${url.replace(/[.?]/g, '\\$&')}`));
    assert.match(r.err, /^fcn8s: 100\.0%, 39\.1 KiB \/ 39\.1 KiB, .*, done$/m);
    assert.deepEqual(readFileSync(dest), payload);
    assert.ok(!existsSync(`${dest}.part`));
    const again = await run('fetch', 'fcn8s', '--url', url);
    assert.equal(again.code, 0);
    assert.match(again.err, /already cached/);
    assert.equal(requests, 1);

    const list = await run('list', '--json');
    const json = JSON.parse(list.out);
    const fcn8s = json.weights.find((w: { name: string }) => w.name === 'fcn8s');
    assert.equal(fcn8s.state, 'cached');
    assert.equal(fcn8s.bytesOnDisk, payload.length);
    assert.equal(fcn8s.path, dest);
    assert.equal(fcn8s.url, 'http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel');
    assert.equal(json.cacheDir, join(home, 'weights'));
    const text = await run('list');
    assert.match(text.out, /^fcn8s +~\S+ MiB +yes +/m);
  });

  test('fetch: a server error fails with exit 1, the address and the status', async () => {
    const bad = url.replace('w.caffemodel', 'gone');
    const r = await run('fetch', 'fcn16s', '--url', bad, '--quiet');
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`^fcn weights fetch: ${bad.replace(/[.?]/g, '\\$&')}: download failed \\(HTTP 404 Not Found\\)`));
    assert.ok(!existsSync(cachedPath('fcn16s')));
  });
});

// Caffe files written independently of the reader by scripts/make_caffemodel.py (protoc
// compiles Caffe's own schema), which also writes the tensors a correct reader gives.
const caffeProto = join(sharedRoot, 'caffe', 'caffe.proto');
const caffePython = findPython(['google.protobuf', 'numpy']);
const hasProtoc = spawnSync('protoc', ['--version']).status === 0;
const caffeSkip = requires(caffePython !== null && hasProtoc && existsSync(caffeProto),
  `make_caffemodel.py needs python3 with protobuf and numpy, protoc and ${caffeProto}`);

describe('Caffe files', { skip: caffeSkip, timeout: 60_000 }, () => {
  const dir = join(tmp.dir, 'caffe');
  before(() => {
    const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'make_caffemodel.py');
    runPython(caffePython!, 'import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")',
      [script, '--caffe-proto', caffeProto, '--out', dir, '--nets', 'fcn8-atonce,vgg16', '--width', '0.0625']);
  });

  test("inspect an at-once FCN-8s .caffemodel: Caffe style, the skip scales, every tensor, the reader's notes", async () => {
    const file = join(dir, 'fcn8-atonce.v2.caffemodel');
    const r = await run('inspect', file, '--json');
    assert.equal(r.code, 0, r.err);
    const json = JSON.parse(r.out);
    assert.equal(json.format, 'caffemodel');
    assert.deepEqual(json.network, { model: 'fcn8', style: 'caffe', width: '0.0625', classes: '21', 'skip scales': '0.01,0.0001' });
    const want = readSafetensors(join(dir, 'fcn8-atonce.safetensors'));
    assert.deepEqual(
      Object.fromEntries(json.tensors.map((t: { name: string; shape: number[] }) => [t.name, t.shape])),
      Object.fromEntries([...want.tensors].map(([n, t]) => [n, t.shape])),
    );
    assert.ok(json.notes.some((n: string) => /0\.01/.test(n)), json.notes.join('\n'));
    const text = await run('inspect', file);
    assert.match(text.out, /^format +caffemodel$/m);
    assert.match(text.out, /^network +fcn8, style caffe, width 0\.0625, classes 21, skip scales 0\.01,0\.0001$/m);
    assert.match(text.out, /^notes\n {2}\S/m);
  });

  test('convert a Caffe VGG16 (V1 layers): the reader\'s tensors, written as they are, with the backbone metadata', async () => {
    const out = join(tmp.dir, 'vgg16-caffe.safetensors');
    const r = await run('convert', join(dir, 'vgg16.v1.caffemodel'), out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /fc8/, 'the note about the left-out ImageNet classifier reaches the user');
    const want = readSafetensors(join(dir, 'vgg16.safetensors'));
    const got = readSafetensors(out);
    assert.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort());
    for (const [name, t] of want.tensors) {
      assert.deepEqual(got.tensors.get(name)!.shape, t.shape, name);
      assert.deepEqual(got.tensors.get(name)!.data, t.data, name);
    }
    assert.equal(got.metadata['backbone'], 'vgg16');
    assert.equal(got.metadata['style'], 'caffe');
    assert.equal(got.metadata['source_format'], 'caffemodel');
    assert.equal(got.metadata['model'], undefined);
  });
});
