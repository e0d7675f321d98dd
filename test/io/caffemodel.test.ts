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
import { native } from '../../src/engine/binding.js';
import { readCaffeModel } from '../../src/io/caffemodel.js';
import { writeNpy } from '../../src/io/npy.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { detectWeightFormat, readWeightSource } from '../../src/io/weight-source.js';
import type { WeightSource } from '../../src/io/weight-types.js';
import { loadModel } from '../../src/models/weights.js';
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
  let mismatches = 0;
  for (let o = 0; o < cout; o++)
    for (let c = 0; c < cin; c++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++) if (got[((y * kw + x) * cin + c) * cout + o] !== rows[((o * cin + c) * kh + y) * kw + x]) mismatches++;
  assert.equal(mismatches, 0, 'conv6 elements that are not fc6 reshaped as (out, C, 7, 7)');
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

test('blobs stored as double_data are refused, naming the file and the layer', { skip }, async () => {
  const { path } = fixtures().double;
  await assert.rejects(readCaffeModel(path), (e: Error) => e.message.startsWith(`${path}: layer '`) && /holds double values \(double_data\)/.test(e.message));
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

test("a file in Caffe's V0 form (weights nested in each layer) is refused with the way to convert it", async () => {
  // NetParameter { layers (2): V1LayerParameter { layer (1): V0LayerParameter { name (1): "conv1" } } }
  const v0 = Buffer.from([0x12, 0x09, 0x0a, 0x07, 0x0a, 0x05, ...Buffer.from('conv1')]);
  const path = join(dir, 'v0.caffemodel');
  writeFileSync(path, v0);
  await assert.rejects(readCaffeModel(path), (e: Error) => e.message.startsWith(`${path}: no layer holds weights`) && /upgrade_net_proto_binary/.test(e.message));
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

// ---------------------------------------------------------------------------------------------
// Logits parity: the model loadModel builds from a .caffemodel against the PyTorch reference
// (scripts/torch_fcn.py, Caffe style) run on the fixture's own safetensors arrays. A layout or
// naming mistake in the reader, or a wrong style or skip scale in its metadata, shows here.

const torchPython = findPython(['torch', 'numpy']);
const torchSkip = skip || requires(torchPython !== null, 'python3 with torch and numpy (Debian python3-torch) is not installed');
const TORCH_SCRIPT = join(repoRoot, 'scripts', 'torch_fcn.py');
const FWD_TOL = 1e-4; // max |ours − reference| ≤ FWD_TOL · max |reference|

function relativeDifference(ours: Float32Array, reference: ArrayLike<number>): number {
  assert.equal(ours.length, reference.length);
  let diff = 0, scale = 0;
  for (let i = 0; i < ours.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - reference[i]));
    scale = Math.max(scale, Math.abs(reference[i]));
  }
  return diff / Math.max(scale, 1e-12);
}

/** Preprocessed-looking input (BGR minus means): values spread over −120…130. */
function randomInput(h: number, w: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: 3 * h * w }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 250 - 120;
  });
}

// 500×375 is a Pascal VOC image's usual size; at 67×45 Caffe's ceil pooling rounds up. Each
// reference run starts PyTorch (seconds), so the large size is checked on two of the nets; the
// network's own geometry at every size is test/models/parity.test.ts's subject.
const PARITY_CASES: { net: string; form: 'V1' | 'V2'; sizes: [number, number][] }[] = [
  { net: 'fcn32', form: 'V2', sizes: [[375, 500], [45, 67]] },
  { net: 'fcn16', form: 'V1', sizes: [[45, 67]] },
  { net: 'fcn8', form: 'V2', sizes: [[45, 67]] },
  { net: 'fcn8-atonce', form: 'V2', sizes: [[375, 500], [45, 67]] },
];

for (const { net, form, sizes } of PARITY_CASES) {
  const sizeText = sizes.map(([h, w]) => `${w}×${h}`).join(', ');
  test(`${net} (${form}): loadModel(.caffemodel) logits match PyTorch's Caffe-style network at ${sizeText}`, { skip: torchSkip }, async () => {
    const f = fixture(net);
    const model = await loadModel(f.caffemodels[form]!);
    try {
      const atOnce = net === 'fcn8-atonce';
      assert.equal(model.style, 'caffe');
      assert.equal(model.kind, f.metadata.model);
      assert.equal(model.width, WIDTH);
      assert.deepEqual(model.skipScales, atOnce ? [0.01, 0.0001] : null);
      for (const [h, w] of sizes) {
        const images = randomInput(h, w, h * 1000 + w);
        const input = join(dir, `x-${net}-${h}x${w}.npy`), out = join(dir, `logits-${net}-${h}x${w}.safetensors`);
        writeNpy(input, images, [1, 3, h, w]);
        const args = [TORCH_SCRIPT, 'forward', '--model', f.metadata.model, '--width', String(WIDTH), '--style', 'caffe', '--weights', f.safetensors, '--input', input, '--out', out, '--dtype', 'float64'];
        if (atOnce) args.push('--skip-scales', '0.01,0.0001');
        const r = spawnSync(torchPython!, args, { encoding: 'utf8', timeout: 300_000 });
        if (r.status !== 0) throw new Error(`torch_fcn.py forward failed: ${r.stderr}`);
        const reference = readSafetensors(out).tensors.get('logits')!;
        const x = native.fromArray([1, 3, h, w], images);
        const logits = model.predictLogits(x);
        try {
          assert.deepEqual(logits.dims, reference.shape);
          const err = relativeDifference(logits.toArray() as Float32Array, reference.data as Float64Array);
          assert.ok(err <= FWD_TOL, `${net} ${h}×${w}: relative difference ${err.toExponential(2)} > ${FWD_TOL}`);
        } finally {
          logits.dispose();
          x.dispose();
        }
      }
    } finally {
      model.dispose();
    }
  });
}
