// The Caffe .caffemodel reader against fixtures written independently by
// scripts/make_caffemodel.py: Caffe's own schema compiled by protoc, random weights, and the
// same arrays in the project's names and Keras layouts (reshaped and transposed by numpy) as
// safetensors. Every tensor the reader returns must equal those arrays bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCaffeModel } from '../../src/io/caffemodel.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { detectWeightFormat, readWeightSource, type WeightSource } from '../../src/io/weight-source.js';
import { findPython } from '../reference/python.js';
import { requires } from '../prereq.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPT = join(repoRoot, 'scripts', 'make_caffemodel.py');
/** Caffe's schema, read in place by the fixture writer (never copied into the repository). */
const CAFFE_PROTO = process.env.FCN_CAFFE_PROTO ?? resolve(repoRoot, '..', 'shared', 'caffe', 'caffe.proto');
const WIDTH = 0.0625;

const python = findPython(['numpy', 'google.protobuf']);
const hasProtoc = spawnSync('protoc', ['--version'], { stdio: 'ignore' }).status === 0;
const skip =
  requires(python !== null, 'python3 with numpy and protobuf (Debian python3-numpy, python3-protobuf) is not installed') ||
  requires(hasProtoc, 'protoc (Debian protobuf-compiler) is not installed') ||
  requires(existsSync(CAFFE_PROTO), `Caffe's caffe.proto not found at ${CAFFE_PROTO} (set FCN_CAFFE_PROTO)`);

interface Fixture {
  net: string;
  metadata: Record<string, string>;
  caffemodels: Record<'V1' | 'V2', string | undefined>;
  safetensors: string;
}
interface Manifest {
  fixtures: Fixture[];
  bad: { defect: string; path: string; layer: string }[];
  double: { path: string; safetensors: string };
}

const dir = mkdtempSync(join(tmpdir(), 'fcn-caffemodel-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

let manifest: Manifest | null = null;
function fixtures(): Manifest {
  if (!manifest) {
    const r = spawnSync(python!, [SCRIPT, '--caffe-proto', CAFFE_PROTO, '--out', dir, '--width', String(WIDTH), '--seed', '3', '--bad'], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    if (r.status !== 0) throw new Error(`make_caffemodel.py failed (${r.status ?? r.signal}): ${r.stderr}`);
    manifest = JSON.parse(r.stdout) as Manifest;
  }
  return manifest;
}

function fixture(net: string): Fixture {
  const f = fixtures().fixtures.find((x) => x.net === net);
  if (!f) throw new Error(`no fixture '${net}'`);
  return f;
}

/** Every tensor of `source` equals the reference file's, same names, shapes and bits. */
function assertSameTensors(source: WeightSource, referencePath: string): void {
  const reference = readSafetensors(referencePath);
  assert.deepEqual([...source.tensors.keys()].sort(), [...reference.tensors.keys()].sort(), `${source.path}: tensor names`);
  for (const [name, entry] of source.tensors) {
    const want = reference.tensors.get(name)!;
    assert.deepEqual(entry.shape, want.shape, `${source.path}: ${name} shape`);
    const got = entry.read();
    assert.ok(got instanceof Float32Array, `${name} is float32`);
    assert.equal(got.length, want.data.length, `${name} length`);
    const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
    const b = new Uint32Array(want.data.buffer, want.data.byteOffset, want.data.length);
    const at = a.findIndex((v, i) => v !== b[i]);
    assert.equal(at, -1, `${source.path}: ${name} differs at ${at}: ${got[at]} vs ${(want.data as Float32Array)[at]}`);
  }
}

function assertMetadata(source: WeightSource, expected: Record<string, string>): void {
  assert.equal(source.format, 'caffemodel');
  assert.equal(source.metadata.style, 'caffe');
  assert.equal(Number(source.metadata.width), Number(expected.width), 'width');
  for (const key of ['model', 'backbone', 'classes', 'skip_scales']) assert.equal(source.metadata[key], expected[key], key);
}

const NETS = ['fcn32', 'fcn16', 'fcn8', 'fcn8-atonce', 'vgg16'];

for (const net of NETS) {
  for (const form of ['V2', 'V1'] as const) {
    // The at-once net's Scale layers have no V1 type: the writer makes it in the V2 form only.
    if (net === 'fcn8-atonce' && form === 'V1') continue;
    test(`${net} (${form} layer list): every tensor equals the reference arrays; metadata`, { skip }, async () => {
      const f = fixture(net);
      const path = f.caffemodels[form]!;
      assert.equal(detectWeightFormat(path), 'caffemodel');
      const source = await readWeightSource(path);
      assertMetadata(source, f.metadata);
      assertSameTensors(source, f.safetensors);
    });
  }
}

test('fcn8 at-once: the Scale layers become skip_scales, not tensors', { skip }, async () => {
  const source = await readCaffeModel(fixture('fcn8-atonce').caffemodels.V2!);
  assert.equal(source.metadata.skip_scales, '0.01,0.0001');
  assert.equal(source.metadata.model, 'fcn8');
  assert.ok(![...source.tensors.keys()].some((n) => n.includes('scale')), 'no tensor for a Scale layer');
  assert.ok(source.notes.some((n) => n.includes('0.01,0.0001')), 'a note says the skips are scaled');
  // The plain FCN-8s has no scales.
  assert.equal((await readCaffeModel(fixture('fcn8').caffemodels.V2!)).metadata.skip_scales, undefined);
});

test('vgg16: fc6/fc7 InnerProducts become conv6 7×7 / conv7 1×1; fc8 is left out with a note', { skip }, async () => {
  for (const form of ['V2', 'V1'] as const) {
    const path = fixture('vgg16').caffemodels[form]!;
    const source = await readCaffeModel(path);
    assert.equal(source.metadata.backbone, 'vgg16');
    assert.equal(source.metadata.model, undefined);
    assert.equal(source.metadata.classes, undefined);
    const c5 = Math.round(512 * WIDTH), fc = Math.round(4096 * WIDTH);
    assert.deepEqual(source.tensors.get('conv6.kernel')!.shape, [7, 7, c5, fc]);
    assert.deepEqual(source.tensors.get('conv7.kernel')!.shape, [1, 1, fc, fc]);
    assert.ok(![...source.tensors.keys()].some((n) => n.startsWith('fc8')));
    assert.ok(source.notes.some((n) => n.includes("'fc8'")), `${form}: a note names fc8`);
  }
  // The reshape itself, against Caffe's flattening order written out here rather than numpy's
  // reshape: fc6's weight row o holds its inputs in C, H, W order, so Keras [y, x, c, o] =
  // W[o, c·49 + y·7 + x], with W read from the file by Python's protobuf.
  const reference = readSafetensors(fixture('vgg16').safetensors).tensors.get('conv6.kernel')!;
  const [kh, kw, cin, cout] = reference.shape;
  const got = (await readCaffeModel(fixture('vgg16').caffemodels.V2!)).tensors.get('conv6.kernel')!.read();
  const rows = rawInnerProductRows(fixture('vgg16').caffemodels.V2!, 'fc6', cout, cin * kh * kw);
  for (const [o, c, y, x] of [[0, 0, 0, 0], [1, 2, 3, 4], [cout - 1, cin - 1, 6, 6], [17, 5, 0, 6]]) {
    const keras = ((y * kw + x) * cin + c) * cout + o;
    assert.equal(got[keras], rows[o * cin * kh * kw + c * kh * kw + y * kw + x], `conv6 [${y}, ${x}, ${c}, ${o}]`);
  }
});

/** fc6's weights in Caffe's own (out, in) order, read by Python's protobuf from the file. */
function rawInnerProductRows(path: string, layer: string, rows: number, cols: number): Float32Array {
  const code = `
import sys, os, subprocess, tempfile, importlib, numpy as np
proto, path, layer, out = sys.argv[1:5]
work = tempfile.mkdtemp()
d, name = os.path.split(os.path.abspath(proto))
subprocess.run(['protoc', '--proto_path=' + d, '--python_out=' + work, name], check=True)
sys.path.insert(0, work)
pb = importlib.import_module(name[:-6] + '_pb2')
net = pb.NetParameter()
net.ParseFromString(open(path, 'rb').read())
[l] = [l for l in net.layer if l.name == layer]
np.asarray(l.blobs[0].data, dtype='<f4').tofile(out)
`;
  const out = join(dir, `${layer}.raw`);
  const r = spawnSync(python!, ['-c', code, CAFFE_PROTO, path, layer, out], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  const bytes = readFileSync(out);
  const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  assert.equal(values.length, rows * cols);
  return values;
}

test('blobs stored as double_data read as the same float32 values', { skip }, async () => {
  const { path, safetensors } = fixtures().double;
  const source = await readCaffeModel(path);
  assertSameTensors(source, safetensors);
});

test('defective files: one error naming the file and the layer', { skip }, async () => {
  const bad = fixtures().bad;
  assert.deepEqual(bad.map((b) => b.defect).sort(), ['deconv-bias', 'missing-bias', 'nan', 'uneven-scale', 'unknown-layer', 'wrong-shape']);
  const expected: Record<string, RegExp> = {
    'deconv-bias': /has a bias/,
    'missing-bias': /has 1 blob, expected 2/,
    'wrong-shape': /shape \[21, 33, 1, 1\]/,
    'unknown-layer': /not a layer of Caffe's VGG16 or FCN/,
    'uneven-scale': /not constant/,
    nan: /non-finite/,
  };
  for (const { defect, path, layer } of bad) {
    const check = (e: unknown) => {
      const m = (e as Error).message;
      assert.ok(m.startsWith(`${path}: `), `${defect}: names the file: ${m}`);
      assert.ok(m.includes(`'${layer}'`), `${defect}: names layer ${layer}: ${m}`);
      assert.match(m, expected[defect], defect);
      return true;
    };
    if (defect === 'nan') {
      // The values are checked as each tensor is converted: reading the file succeeds.
      const source = await readCaffeModel(path);
      assert.throws(() => source.tensors.get('conv7.kernel')!.read(), check);
      assert.doesNotThrow(() => source.tensors.get('conv6.kernel')!.read());
    } else {
      await assert.rejects(readCaffeModel(path), check);
    }
  }
});

test('a truncated file: an error naming the file and the layer cut off', { skip }, async () => {
  for (const form of ['V2', 'V1'] as const) {
    const whole = readFileSync(fixture('fcn8').caffemodels[form]!);
    // The last layers are upscore8's 21×21×16×16 weights (~450 kB), then a Crop or nothing.
    const cut = join(dir, `cut-inside-upscore8.${form}.caffemodel`);
    writeFileSync(cut, whole.subarray(0, whole.length - 2000));
    await assert.rejects(readCaffeModel(cut), (e: Error) => {
      assert.ok(e.message.startsWith(`${cut}: truncated in layer 'upscore8'`), e.message);
      return true;
    });
    // Anywhere else: still one error, naming the file and a layer.
    const half = join(dir, `cut-half.${form}.caffemodel`);
    writeFileSync(half, whole.subarray(0, whole.length >> 1));
    await assert.rejects(readCaffeModel(half), (e: Error) => {
      assert.match(e.message, new RegExp(`^${half.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: truncated in layer '\\w+'`));
      return true;
    });
  }
});

test('not a NetParameter: random bytes, a safetensors file, an empty file', { skip }, async () => {
  let s = 12345;
  const random = Buffer.alloc(4096);
  for (let i = 0; i < random.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    random[i] = s >>> 24;
  }
  const files: [string, Buffer, RegExp][] = [
    ['random.caffemodel', random, /not a Caffe NetParameter/],
    ['weights.caffemodel', readFileSync(fixture('fcn32').safetensors), /not a Caffe NetParameter/],
    ['empty.caffemodel', Buffer.alloc(0), /holds no layers/],
  ];
  for (const [name, bytes, pattern] of files) {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    await assert.rejects(readCaffeModel(path), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}: `), e.message);
      assert.match(e.message, pattern);
      return true;
    });
  }
  await assert.rejects(readCaffeModel(join(dir, 'missing.caffemodel')), /missing\.caffemodel: cannot read file \(ENOENT\)/);
});
