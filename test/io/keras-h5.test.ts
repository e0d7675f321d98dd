// The Keras .h5 reader against files written independently by scripts/make_keras_h5.py
// (h5py + numpy, Keras's own layout), which also writes the tensors a correct reader must
// produce as safetensors in the project's naming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readKerasH5 } from '../../src/io/keras-h5.js';
import { readWeightSource } from '../../src/io/weight-source.js';
import type { WeightSource } from '../../src/io/weight-types.js';
import { readSafetensors, writeSafetensors, type SafetensorsFile } from '../../src/io/safetensors.js';
import { writeNpy } from '../../src/io/npy.js';
import { native } from '../../src/engine/binding.js';
import { loadMatchingSource, loadModel, openWeights } from '../../src/models/weights.js';
import { toKerasLayout } from '../../src/models/weights-layout.js';
import { FCN } from '../../src/models/fcn.js';
import { Rng } from '../../src/data/prng.js';
import { findPython, runPython } from '../reference/python.js';
import { requires } from '../prereq.js';

const python = findPython(['h5py', 'numpy']);
const skip = requires(python !== null, 'python3 with h5py and numpy (Debian python3-h5py) is not installed');
const torchPython = findPython(['h5py', 'numpy', 'torch']);
const skipTorch = requires(torchPython !== null, 'python3 with h5py, numpy and torch (Debian python3-h5py, python3-torch) is not installed');
const SCRIPTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts');
const WIDTH = 0.0625;

const dir = mkdtempSync(join(tmpdir(), 'fcn-keras-h5-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** Fixture name → make_keras_h5.py arguments (without --out/--safetensors). */
const FIXTURES: Record<string, string[]> = {
  fcn32: ['fcn', '--kind', 'fcn32', '--seed', '1'],
  fcn16: ['fcn', '--kind', 'fcn16', '--seed', '2', '--classes', '5', '--naming', 'keras1'],
  fcn8: ['fcn', '--kind', 'fcn8', '--seed', '3', '--naming', 'param'],
  'fcn8-saved-model': ['fcn', '--kind', 'fcn8', '--seed', '3', '--model-weights'],
  'fcn8-float64': ['fcn', '--kind', 'fcn8', '--seed', '3', '--defect', 'float64'],
  vgg16: ['vgg16', '--seed', '4', '--imagenet-classes', '37'],
  'vgg16-notop': ['vgg16', '--seed', '5', '--notop'],
  'bad-bias': ['fcn', '--kind', 'fcn32', '--defect', 'bad-bias:block2_conv1'],
  'no-bias': ['fcn', '--kind', 'fcn32', '--defect', 'no-bias:score7'],
  'rank3-kernel': ['fcn', '--kind', 'fcn32', '--defect', 'rank:conv7'],
  'int-kernel': ['fcn', '--kind', 'fcn32', '--defect', 'int:conv6'],
  'extra-layer': ['fcn', '--kind', 'fcn32', '--defect', 'extra:dense_1'],
  'no-layer-names': ['fcn', '--kind', 'fcn32', '--defect', 'no-layer-names'],
  nan: ['fcn', '--kind', 'fcn32', '--defect', 'nan:block3_conv2'],
  inf: ['vgg16', '--defect', 'inf:fc2'],
};

const h5 = (name: string) => join(dir, `${name}.h5`);
const expectedPath = (name: string) => join(dir, `${name}.safetensors`);

let made = false;
/** Writes every fixture in one Python process (h5py's import dominates each run). */
function makeFixtures(): void {
  if (made) return;
  const jobs = Object.entries(FIXTURES).map(([name, args]) => [...args, '--width', String(WIDTH), '--out', h5(name), '--safetensors', expectedPath(name)]);
  runPython(
    python!,
    'import json, sys; sys.path.insert(0, sys.argv[1]); import make_keras_h5 as m\nfor job in json.loads(sys.argv[2]): m.main(job)',
    [SCRIPTS, JSON.stringify(jobs)],
  );
  made = true;
}

function expected(name: string): SafetensorsFile {
  makeFixtures();
  return readSafetensors(expectedPath(name));
}

/** Every tensor of the source equals the expected file's, bit for bit, and nothing else is there. */
function assertSameTensors(source: WeightSource, want: SafetensorsFile): void {
  assert.deepEqual([...source.tensors.keys()].sort(), [...want.tensors.keys()].sort());
  for (const [name, entry] of source.tensors) {
    const t = want.tensors.get(name)!;
    assert.deepEqual(entry.shape, t.shape, `${name} shape`);
    const got = entry.read();
    assert.ok(got instanceof Float32Array, `${name} is float32`);
    assert.deepEqual(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), `${name} values`);
  }
}

for (const [kind, classes] of [
  ['fcn32', 21],
  ['fcn16', 5],
  ['fcn8', 21],
] as const) {
  test(`${kind}: every tensor as written, model metadata from the layers`, { skip }, async () => {
    const want = expected(kind);
    const source = await readKerasH5(h5(kind));
    assert.equal(source.format, 'keras-h5');
    assert.equal(source.path, h5(kind));
    assertSameTensors(source, want);
    assert.equal(source.metadata.model, kind);
    assert.equal(source.metadata.style, 'keras');
    assert.equal(source.metadata.width, String(WIDTH));
    assert.equal(source.metadata.classes, String(classes));
    assert.equal(source.metadata.format_source, 'keras-h5');
    assert.equal(source.metadata.backbone, undefined);
    assert.deepEqual(source.notes, []);
    // Transposed convolutions have no bias.
    for (const up of ['fcn32', 'fcn16', 'fcn8', 'score7_upsample', 'skip4_upsample']) assert.equal(source.tensors.has(`${up}.bias`), false);
  });
}

test('model.save() files: weights under model_weights read the same', { skip }, async () => {
  const source = await readKerasH5(h5('fcn8-saved-model'));
  assertSameTensors(source, expected('fcn8'));
  assert.equal(source.metadata.model, 'fcn8');
});

test('float64 datasets are converted to float32', { skip }, async () => {
  const source = await readKerasH5(h5('fcn8-float64'));
  // The fixture's values are float32 values stored as float64, so conversion is exact.
  assertSameTensors(source, expected('fcn8'));
});

test('reading in many small slices gives the same values (kernels, fc1 as conv6)', { skip }, async () => {
  for (const name of ['fcn8', 'vgg16', 'fcn8-float64']) {
    // 4 KB: conv6 (7, 7, 32, 256) is read 4 input channels at a time under a fixed (y, x),
    // fc1 (1568, 256) 4 rows at a time, score7 (1, 1, 256, 21) in 48 + … + 16 channels.
    const source = await readKerasH5(h5(name), 4096);
    assertSameTensors(source, expected(name === 'fcn8-float64' ? 'fcn8' : name));
  }
});

test('VGG16 ImageNet file: fc1 → conv6 (7, 7, C, F), fc2 → conv7, predictions left out', { skip }, async () => {
  const want = expected('vgg16');
  const source = await readKerasH5(h5('vgg16'));
  assertSameTensors(source, want); // numpy's row-major reshape of fc1 / fc2
  const [, , c, f] = source.tensors.get('conv6.kernel')!.shape;
  assert.deepEqual(source.tensors.get('conv6.kernel')!.shape, [7, 7, 32, 256]);
  assert.deepEqual(source.tensors.get('conv7.kernel')!.shape, [1, 1, 256, 256]);
  assert.deepEqual(source.tensors.get('conv6.bias')!.shape, [256]);
  assert.equal([...source.tensors.keys()].some((n) => n.startsWith('predictions') || n.startsWith('fc')), false);
  assert.equal(source.metadata.backbone, 'vgg16');
  assert.equal(source.metadata.model, undefined);
  assert.equal(source.metadata.width, String(WIDTH));
  assert.equal(source.metadata.keras_version, '1.2.2');
  assert.equal(source.notes.filter((n) => n.includes('predictions')).length, 1);
  assert.match(source.notes.find((n) => n.includes('predictions'))!, /256 → 37/);

  // Keras's Flatten orders fc1's rows as (y, x, channel) of block5_pool: check elements at
  // chosen positions against fc1 itself, read by h5py.
  const positions = [
    [0, 0, 0, 0],
    [0, 0, 1, 0],
    [0, 1, 0, 5],
    [1, 0, 0, 7],
    [6, 6, c - 1, f - 1],
    [3, 5, 17, 100],
  ];
  const fc1 = JSON.parse(
    runPython(
      python!,
      'import h5py, json, sys\nf = h5py.File(sys.argv[1], "r")\nd = f["fc1"][f["fc1"].attrs["weight_names"][0].decode()]\n' +
        'print(json.dumps([float(d[(y * 7 + x) * d.shape[0] // 49 + ch, o]) for y, x, ch, o in json.loads(sys.argv[2])]))',
      [h5('vgg16'), JSON.stringify(positions)],
    ),
  ) as number[];
  const conv6 = source.tensors.get('conv6.kernel')!.read();
  positions.forEach(([y, x, ch, o], i) => assert.equal(conv6[((y * 7 + x) * c + ch) * f + o], fc1[i], `conv6[${y}, ${x}, ${ch}, ${o}]`));
  assert.ok(new Set(fc1).size === fc1.length, 'the probed elements differ, so a wrong order would show');
});

test('VGG16 without its classifier (_notop): convolutions only, a note on conv6/conv7', { skip }, async () => {
  const source = await readKerasH5(h5('vgg16-notop'));
  assertSameTensors(source, expected('vgg16-notop'));
  assert.equal(source.tensors.size, 26); // 13 convolutions, kernel and bias
  assert.equal(source.metadata.backbone, 'vgg16');
  const notes = source.notes.filter((n) => /conv6/.test(n) && /conv7/.test(n) && /initiali[sz]ation/.test(n));
  assert.equal(notes.length, 1, `notes: ${JSON.stringify(source.notes)}`);
});

test('readWeightSource detects an .h5 by content and reads it with this reader', { skip }, async () => {
  makeFixtures();
  const renamed = join(dir, 'weights.bin');
  copyFileSync(h5('fcn32'), renamed);
  const source = await readWeightSource(renamed);
  assert.equal(source.format, 'keras-h5');
  assertSameTensors(source, expected('fcn32'));
});

test('a tensor can be read again after the source is closed (the file reopens)', { skip }, async () => {
  const source = await readKerasH5(h5('fcn16'));
  const entry = source.tensors.get('block4_conv2.kernel')!;
  const first = entry.read();
  source.close!();
  source.close!(); // closing twice is harmless
  assert.deepEqual(entry.read(), first);
});

/** Asserts that `run` fails with exactly one error whose message matches every pattern. */
async function assertFails(run: () => unknown, patterns: RegExp[]): Promise<void> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof Error, 'expected an error');
  for (const p of patterns) assert.match(error.message, p);
  // HDF5's own error stack stays out of the message.
  assert.doesNotMatch(error.message, /HDF5-DIAG|#00\d/);
}

const quoted = (path: string) => new RegExp(path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

test('bad files: one clear error naming the file (and the layer)', { skip }, async () => {
  makeFixtures();
  const truncated = join(dir, 'truncated.h5');
  writeFileSync(truncated, readFileSync(h5('fcn8')).subarray(0, 100_000));
  await assertFails(() => readKerasH5(truncated), [quoted(truncated), /truncated/]);

  const text = join(dir, 'notes.h5');
  writeFileSync(text, 'these are not weights\n');
  await assertFails(() => readKerasH5(text), [quoted(text), /not a readable HDF5 file/]);

  const missing = join(dir, 'absent.h5');
  await assertFails(() => readKerasH5(missing), [quoted(missing), /ENOENT/]);

  const cases: [string, RegExp][] = [
    ['bad-bias', /layer 'block2_conv1' bias has shape \[9\], expected \[8\]/],
    ['no-bias', /layer 'score7' has 1 weight .*expected 2 \(kernel, bias\)/],
    ['rank3-kernel', /layer 'conv7' kernel has shape \[1, 256, 256\]/],
    ['int-kernel', /layer 'conv6' kernel .*expected float32 or float64/],
    ['extra-layer', /layer 'dense_1' is not a layer of/],
    ['no-layer-names', /no 'layer_names' attribute/],
  ];
  for (const [name, pattern] of cases) await assertFails(() => readKerasH5(h5(name)), [quoted(h5(name)), pattern]);

  // A file that failed leaves the library usable.
  assertSameTensors(await readKerasH5(h5('fcn32')), expected('fcn32'));
});

test('NaN or infinite values are reported when the tensor is read', { skip }, async () => {
  const nan = await readKerasH5(h5('nan'));
  assert.doesNotThrow(() => nan.tensors.get('block3_conv1.kernel')!.read());
  await assertFails(() => nan.tensors.get('block3_conv2.kernel')!.read(), [quoted(h5('nan')), /layer 'block3_conv2' kernel has non-finite values/]);
  nan.close!();

  const inf = await readKerasH5(h5('inf'));
  await assertFails(() => inf.tensors.get('conv7.bias')!.read(), [quoted(h5('inf')), /layer 'fc2' \(conv7\) bias has non-finite values/]);
  inf.close!();
});

test('corrupted bytes in the file structure: a clean read or an error naming the file, never a crash', { skip }, async () => {
  makeFixtures();
  const original = readFileSync(h5('fcn8'));
  const damaged = join(dir, 'damaged.h5');
  let seed = 2024;
  const next = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
  let failures = 0;
  for (let k = 0; k < 30; k++) {
    const bytes = Buffer.from(original);
    // The superblock, group headers, attributes and symbol tables sit in the first few KB.
    const at = next() % 8000;
    for (let j = 0; j < 4; j++) bytes[at + j] = next() & 0xff;
    writeFileSync(damaged, bytes);
    try {
      const source = await readKerasH5(damaged);
      for (const entry of source.tensors.values()) entry.read();
    } catch (e) {
      failures++;
      assert.ok(e instanceof Error && e.message.startsWith(`${damaged}: `), `corruption at ${at}: ${String(e)}`);
      assert.doesNotMatch(e.message, /HDF5-DIAG/);
    }
  }
  assert.ok(failures > 0, 'some corruptions were detected');
  assertSameTensors(await readKerasH5(h5('fcn8')), expected('fcn8'));
});

/** max |a − b| / max |b|. */
function relativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / Math.max(scale, 1e-30);
}

/** PyTorch's logits (float64) of the seed network on the weights of a safetensors file. */
function torchLogits(weightsPath: string, kind: string, classes: number, image: Float32Array, h: number, w: number, tag: string): Float64Array {
  const inputPath = join(dir, `${tag}-x.npy`), outPath = join(dir, `${tag}-torch.safetensors`);
  writeNpy(inputPath, image, [1, 3, h, w]);
  const r = spawnSync(
    torchPython!,
    [join(SCRIPTS, 'torch_fcn.py'), 'forward', '--model', kind, '--width', String(WIDTH), '--classes', String(classes), '--weights', weightsPath, '--input', inputPath, '--out', outPath, '--dtype', 'float64'],
    { encoding: 'utf8', timeout: 300_000 },
  );
  assert.equal(r.status, 0, `torch_fcn.py forward failed: ${r.stderr}`);
  const reference = readSafetensors(outPath).tensors.get('logits')!;
  assert.deepEqual(reference.shape, [1, classes, h, w]);
  return reference.data as Float64Array;
}

for (const [kind, withTorch] of [
  ['fcn32', true],
  ['fcn16', true],
  ['fcn8', true],
] as const) {
  const title = `${kind} loaded from .h5: the same logits as from the equivalent safetensors${withTorch ? " and as PyTorch's" : ''}`;
  test(title, { skip: skip || (withTorch && skipTorch) }, async () => {
    makeFixtures();
    // 70×90: not a multiple of 32, so padding and cropping are on the path too.
    const [h, w] = [70, 90];
    const rng = new Rng(11);
    const image = Float32Array.from({ length: 3 * h * w }, () => rng.uniform(-120, 120));
    const fromH5 = await loadModel(h5(kind));
    const fromSafetensors = await loadModel(expectedPath(kind));
    const x = native.fromArray([1, 3, h, w], image);
    try {
      assert.equal(fromH5.kind, kind);
      assert.equal(fromH5.width, WIDTH);
      const logitsH5 = fromH5.predictLogits(x);
      const logitsSt = fromSafetensors.predictLogits(x);
      const ours = logitsH5.toArray() as Float32Array;
      assert.deepEqual(ours, logitsSt.toArray() as Float32Array);
      assert.deepEqual(logitsH5.dims, [1, fromH5.numClasses, h, w]);
      assert.ok(ours.some((v) => v !== ours[0]), 'the logits vary, so differing weights would show');
      logitsH5.dispose();
      logitsSt.dispose();
      if (!withTorch) return;

      // PyTorch's forward from the safetensors written beside the .h5 by the fixture script.
      const reference = torchLogits(expectedPath(kind), kind, fromH5.numClasses, image, h, w, kind);
      const err = relativeDifference(ours, reference);
      assert.ok(err <= 1e-4, `logits differ from PyTorch's: max |diff| = ${err.toExponential(2)} · max |ref|`);
    } finally {
      x.dispose();
      fromH5.dispose();
      fromSafetensors.dispose();
    }
  });
}

// Keras-FCN's first stage: FCN-32s whose VGG16 body (conv6/conv7 from fc1/fc2) comes from the
// ImageNet file and whose head (score7, fcn32) keeps its initialisation. PyTorch runs on the
// fixture script's own arrays for the body, so the name mapping and the fc1 reshape are
// checked independently of our reader.
test("a VGG16 .h5 as --init: FCN-32s logits match PyTorch's on the file's arrays plus the model's own head", { skip: skip || skipTorch }, async () => {
  makeFixtures();
  const model = new FCN({ kind: 'fcn32', width: WIDTH });
  const source = await openWeights(h5('vgg16'));
  try {
    model.initialize(9);
    const loaded = loadMatchingSource(model, source);
    assert.deepEqual([...loaded].sort(), model.layers().filter((l) => l.name.startsWith('block') || l.name === 'conv6' || l.name === 'conv7').map((l) => l.name).sort());
    const tensors = new Map(expected('vgg16').tensors);
    for (const name of ['score7.kernel', 'score7.bias', 'fcn32.kernel']) tensors.set(name, toKerasLayout(model.params().find((p) => p.name === name)!));
    const referenceWeights = join(dir, 'vgg16-init-reference.safetensors');
    writeSafetensors(referenceWeights, tensors);
    const [h, w] = [64, 83];
    const rng = new Rng(12);
    const image = Float32Array.from({ length: 3 * h * w }, () => rng.uniform(-120, 120));
    const x = native.fromArray([1, 3, h, w], image);
    const logits = model.predictLogits(x);
    const ours = logits.toArray() as Float32Array;
    logits.dispose();
    x.dispose();
    const err = relativeDifference(ours, torchLogits(referenceWeights, 'fcn32', 21, image, h, w, 'vgg16-init'));
    assert.ok(err <= 1e-4, `logits differ from PyTorch's: max |diff| = ${err.toExponential(2)} · max |ref|`);
  } finally {
    source.close?.();
    model.dispose();
  }
});
