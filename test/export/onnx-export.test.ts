// ONNX export: onnxruntime-node runs the exported file on plain RGB pixels and must give the
// engine's own fp32 logits (fed the engine's preprocessing) for every model, several sizes and
// batches; the weights in the file are checked against the Keras-layout checkpoint tensors; the
// CLI writes a file ORT loads with the documented names.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { FCN, type FcnKind, type FcnOptions } from '../../src/models/fcn.js';
import { toKerasLayout } from '../../src/models/weights-layout.js';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { toNetworkInput, type Means } from '../../src/data/transforms.js';
import { Rng } from '../../src/data/prng.js';
import { VOC_CLASS_NAMES } from '../../src/data/classes.js';
import { decodeModel } from '../support/onnx.js';
import { exportOnnx, writeOnnx, MAX_OPSET, ONNX_INPUT, ONNX_LABELS, ONNX_LOGITS } from '../../src/export/onnx-export.js';
import { tempDir } from '../data/helpers.js';
import { lines, runCli } from '../eval/fixtures.js';

const tmp = tempDir('onnx-export');
after(() => tmp.cleanup());
configureEngine({ threads: 2, precision: 'float32' });

/**
 * A narrow model with every weight random and non-zero: skip scores (zero in Keras-FCN's
 * initialisation) so the skips matter, biases so their layout is checked, and the upsampling
 * kernels (bilinear and diagonal otherwise) so a transposed or flipped kernel would show.
 */
function randomModel(kind: FcnKind, seed: number, extra: Partial<FcnOptions> = {}): FCN {
  const model = new FCN({ kind, width: 0.0625, ...extra });
  model.initialize(seed);
  const rng = new Rng(seed + 1000);
  for (const l of model.layers()) {
    const fanIn = l.kernel.dims[1]! * l.kernel.dims[2]! * l.kernel.dims[3]!;
    const randomize = (dims: number[], scale: number) => native.fromArray(dims, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rng.uniform(-scale, scale)));
    if (l === model.score4 || l === model.score3) l.kernel.assign(randomize(l.kernel.dims, Math.sqrt(3 / fanIn)));
    // Upsampling keeps its bilinear weights plus noise, so the logits stay image-like.
    if (l.transposed) {
      const bilinear = l.kernel.value.toArray() as Float32Array;
      l.kernel.assign(native.fromArray(l.kernel.dims, bilinear.map((v) => v + rng.uniform(-0.05, 0.05))));
    }
    if (l.bias) l.bias.assign(randomize(l.bias.dims, 0.1));
  }
  return model;
}

/** Deterministic RGB bytes, HWC, with structure at several scales. */
function rgbImage(height: number, width: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const out = new Uint8Array(height * width * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) {
        const smooth = 128 + 100 * Math.sin((x * (c + 1)) / 17 + seed) * Math.cos(y / (11 + 5 * c));
        out[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(smooth + rng.uniform(-20, 20))));
      }
  return out;
}

/** The ONNX input: RGB planes as float, 0–255, no preprocessing. */
function rgbPlanes(images: Uint8Array[], height: number, width: number): Float32Array {
  const n = height * width;
  const out = new Float32Array(images.length * 3 * n);
  images.forEach((img, b) => {
    for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) out[(b * 3 + c) * n + i] = img[i * 3 + c]!;
  });
  return out;
}

/** The engine's fp32 logits, input preprocessed the engine's way (toNetworkInput). */
function engineLogits(model: FCN, images: Uint8Array[], height: number, width: number, means: Means): Float32Array {
  const planes = images.map((image) => toNetworkInput({ id: 'x', width, height, image, label: new Uint8Array(height * width) } as never, means).image);
  const batch = new Float32Array(planes.length * planes[0]!.length);
  planes.forEach((p, i) => batch.set(p, i * p.length));
  const x = native.fromArray([images.length, 3, height, width], batch);
  try {
    const y = model.predictLogits(x, 'float32');
    try {
      assert.deepEqual(y.dims, [images.length, model.numClasses, height, width]);
      return y.toArray() as Float32Array;
    } finally {
      y.dispose();
    }
  } finally {
    x.dispose();
  }
}

interface Comparison {
  maxAbs: number;
  maxDiff: number;
  labelAgreement: number;
}

/** Runs `bytes` in ORT and compares with the engine on the given sizes and batches. */
async function compareWithEngine(model: FCN, bytes: Uint8Array, cases: [height: number, width: number, batch: number][], means: Means): Promise<void> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2, interOpNumThreads: 1 });
  try {
    for (const [h, w, batch] of cases) {
      const what = `${model.kind} ${h}×${w} batch ${batch}`;
      const images = Array.from({ length: batch }, (_, b) => rgbImage(h, w, 7 * b + h));
      const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', rgbPlanes(images, h, w), [batch, 3, h, w]) });
      const logits = out[ONNX_LOGITS]!, labels = out[ONNX_LABELS]!;
      assert.deepEqual(logits.dims, [batch, model.numClasses, h, w], what);
      assert.deepEqual(labels.dims, [batch, h, w], what);
      assert.equal(labels.type, 'int64', what);
      const got = logits.data as Float32Array;
      const want = engineLogits(model, images, h, w, means);
      const c = compare(got, want, labels.data as BigInt64Array, model.numClasses, h * w);
      assert.ok(c.maxAbs > 1, `${what}: logits are not trivially small (max ${c.maxAbs})`);
      assert.ok(c.maxDiff <= 1e-4 * c.maxAbs, `${what}: max |ORT − engine| ${c.maxDiff} > 1e-4 × max |logit| ${c.maxAbs}`);
      assert.ok(c.labelAgreement >= 0.999, `${what}: ORT labels agree with the engine's arg-max on only ${(100 * c.labelAgreement).toFixed(2)}% of pixels`);
    }
  } finally {
    await session.release();
  }
}

/**
 * Differences between ORT's and the engine's logits, and checks ORT's labels are the arg-max
 * of ORT's own logits (exactly) — their agreement with the engine's arg-max is returned.
 */
function compare(got: Float32Array, want: Float32Array, labels: BigInt64Array, classes: number, pixels: number): Comparison {
  assert.equal(got.length, want.length);
  let maxAbs = 0, maxDiff = 0;
  for (let i = 0; i < want.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(want[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(got[i]! - want[i]!));
  }
  const argmax = (data: Float32Array, b: number, p: number) => {
    let best = 0;
    for (let k = 1; k < classes; k++) if (data[(b * classes + k) * pixels + p]! > data[(b * classes + best) * pixels + p]!) best = k;
    return best;
  };
  let agree = 0;
  const batch = labels.length / pixels;
  for (let b = 0; b < batch; b++)
    for (let p = 0; p < pixels; p++) {
      const label = Number(labels[b * pixels + p]);
      assert.equal(label, argmax(got, b, p), `labels[${b}, pixel ${p}] is not the arg-max of the logits`);
      if (label === argmax(want, b, p)) agree++;
    }
  return { maxAbs, maxDiff, labelAgreement: agree / labels.length };
}

// 375×500 is a VOC image's size; 45×67 is far from a multiple of 32 on both sides.
const SIZES: [number, number, number][] = [[375, 500, 1], [45, 67, 2], [64, 96, 1]];

for (const kind of ['fcn32', 'fcn16', 'fcn8'] as const) {
  test(`keras ${kind}: ORT on the exported file gives the engine's fp32 logits (sizes ${SIZES.map(([h, w, b]) => `${h}×${w}×${b}`).join(', ')})`, async () => {
    const model = randomModel(kind, 3);
    try {
      await compareWithEngine(model, exportOnnx(model), SIZES, 'keras');
    } finally {
      model.dispose();
    }
  });
}

// The paper's Caffe network: padding 100, ceil pools, crops at the model's offsets.
for (const [kind, skipScales] of [['fcn32', null], ['fcn16', null], ['fcn8', null], ['fcn8', [0.01, 0.0001]]] as const) {
  const label = `caffe ${kind}${skipScales ? ' at once (skip scales 0.01, 0.0001)' : ''}`;
  test(`${label}: ORT on the exported file gives the engine's fp32 logits`, async () => {
    const model = randomModel(kind, 5, { style: 'caffe', skipScales });
    try {
      await compareWithEngine(model, exportOnnx(model), [[375, 500, 1], [45, 67, 2]], 'caffe');
      const meta = metadata(exportOnnx(model));
      assert.equal(meta.style, 'caffe');
      assert.deepEqual(JSON.parse(meta.means!), [104.00698793, 116.66876762, 122.67891434]);
      if (skipScales) assert.equal(meta.skip_scales, '0.01,0.0001');
    } finally {
      model.dispose();
    }
  });
}

function metadata(bytes: Uint8Array): Record<string, string> {
  const props = (decodeModel(bytes).metadataProps ?? []) as { key: string; value: string }[];
  return Object.fromEntries(props.map((p) => [p.key, p.value]));
}

test('the file: dynamic batch/height/width, the newest opset runs too, metadata, weights in ONNX layouts, the streamed writer', async () => {
  const model = randomModel('fcn8', 11);
  try {
    const bytes = exportOnnx(model, { opset: MAX_OPSET });
    const decoded = decodeModel(bytes) as { opsetImport: { version: number }[]; graph: { initializer: { name: string; dims: number[]; dataType: number; rawData?: number[] }[] } };
    assert.deepEqual(decoded.opsetImport.map((o) => o.version), [MAX_OPSET]);
    await compareWithEngine(model, bytes, [[33, 31, 1]], 'keras');

    const session = await ort.InferenceSession.create(bytes);
    try {
      assert.deepEqual(session.inputNames, [ONNX_INPUT]);
      assert.deepEqual(session.outputNames, [ONNX_LOGITS, ONNX_LABELS]);
      const shapes = [...session.inputMetadata, ...session.outputMetadata].map((m) => (m.isTensor ? [m.name, m.type, m.shape] : [m.name]));
      assert.deepEqual(shapes, [
        [ONNX_INPUT, 'float32', ['batch', 3, 'height', 'width']],
        [ONNX_LOGITS, 'float32', ['batch', 21, 'height', 'width']],
        [ONNX_LABELS, 'int64', ['batch', 'height', 'width']],
      ]);
    } finally {
      await session.release();
    }

    const meta = metadata(bytes);
    assert.equal(meta.model, 'fcn8');
    assert.equal(meta.style, 'keras');
    assert.equal(meta.width, '0.0625');
    assert.equal(meta.classes, '21');
    assert.deepEqual(JSON.parse(meta.class_names!), VOC_CLASS_NAMES);
    assert.deepEqual(JSON.parse(meta.means!), [103.939, 116.779, 123.68]);

    // Weights against the checkpoint's Keras layouts, permuted here independently of the
    // exporter: Conv W (out, in, kh, kw) from (kh, kw, in, out); ConvTranspose W (in, out, kh, kw)
    // from (kh, kw, out, in); biases as they are.
    const initializers = new Map(decoded.graph.initializer.map((t) => [t.name, t]));
    for (const p of model.params()) {
      const t = initializers.get(p.name);
      assert.ok(t, `initializer ${p.name}`);
      assert.equal(t.dataType, 1, `${p.name} is float32`);
      const keras = toKerasLayout(p);
      const stored = new Float32Array(Uint8Array.from(t.rawData!).buffer);
      if (p.role === 'bias') {
        assert.deepEqual(t.dims, keras.shape);
        assert.deepEqual(stored, keras.data);
        continue;
      }
      const [kh, kw, a, b] = keras.shape as [number, number, number, number]; // a, b = in, out (conv) or out, in (transposed)
      assert.deepEqual(t.dims, [b, a, kh, kw], `${p.name} dims`);
      const expected = new Float32Array(stored.length);
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) for (let i = 0; i < a; i++) for (let o = 0; o < b; o++)
        expected[((o * a + i) * kh + y) * kw + x] = (keras.data as Float32Array)[((y * kw + x) * a + i) * b + o]!;
      assert.deepEqual(stored, expected, `${p.name} values`);
    }

    // The streamed writer produces the same bytes as the in-memory export.
    const file = path.join(tmp.dir, 'fcn8.onnx');
    writeOnnx(file, model, { opset: MAX_OPSET });
    assert.equal(Buffer.compare(readFileSync(file), bytes), 0, 'writeOnnx and exportOnnx give the same bytes');

    // Without labels: one output.
    const logitsOnly = await ort.InferenceSession.create(exportOnnx(model, { labels: false }));
    assert.deepEqual(logitsOnly.outputNames, [ONNX_LOGITS]);
    await logitsOnly.release();
    assert.throws(() => exportOnnx(model, { opset: 12 }), /opset must be an integer from 13/);
  } finally {
    model.dispose();
  }
});

test('fcn export onnx writes a file ORT runs, with the documented names; --help; bad arguments give one clear line', async () => {
  const weights = path.join(tmp.dir, 'w.safetensors'), out = path.join(tmp.dir, 'cli', 'model.onnx');
  const init = await runCli('init', '--model', 'fcn16', '--width', '0.0625', '--seed', '2', '--out', weights);
  assert.equal(init.code, 0, init.err);
  const r = await runCli('export', 'onnx', '--weights', weights, '--out', out, '--opset', '17');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /wrote .*model\.onnx: fcn16 \(keras style, width 0\.0625, 21 classes\), opset 17/);
  const session = await ort.InferenceSession.create(out);
  try {
    assert.deepEqual(session.inputNames, [ONNX_INPUT]);
    assert.deepEqual(session.outputNames, [ONNX_LOGITS, ONNX_LABELS]);
    const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', rgbPlanes([rgbImage(40, 50, 1)], 40, 50), [1, 3, 40, 50]) });
    assert.deepEqual(result[ONNX_LOGITS]!.dims, [1, 21, 40, 50]);
  } finally {
    await session.release();
  }
  assert.equal(metadata(readFileSync(out)).model, 'fcn16');
  // Class names from a classes file go into the metadata.
  const names = Array.from({ length: 21 }, (_, k) => `thing${k}`);
  const classesFile = path.join(tmp.dir, 'classes.json');
  writeFileSync(classesFile, JSON.stringify({ classes: names.map((name) => ({ name })) }));
  const named = await runCli('export', 'onnx', '--weights', weights, '--out', out, '--classes', classesFile);
  assert.equal(named.code, 0, named.err);
  assert.deepEqual(JSON.parse(metadata(readFileSync(out)).class_names!), names);
  const shortFile = path.join(tmp.dir, 'three-classes.json');
  writeFileSync(shortFile, JSON.stringify({ classes: names.slice(0, 3).map((name) => ({ name })) }));

  const only = await runCli('export', 'onnx', '--weights', weights, '--out', out, '--logits-only');
  assert.equal(only.code, 0, only.err);
  const onlySession = await ort.InferenceSession.create(out);
  assert.deepEqual(onlySession.outputNames, [ONNX_LOGITS]);
  await onlySession.release();

  const help = await runCli('export', '--help');
  assert.equal(help.code, 0);
  for (const s of ['--weights', '--out', '--opset', '(default: 13)', 'Examples', '--logits-only', 'fcn export onnx --weights', ONNX_INPUT, ONNX_LOGITS, ONNX_LABELS]) assert.ok(help.out.includes(s), `help mentions ${s}:\n${help.out}`);

  const cases: [string[], RegExp][] = [
    [['export', 'onnx', '--weights', path.join(tmp.dir, 'none.safetensors'), '--out', out], /fcn export: --weights '.*none\.safetensors': no such file/],
    [['export', 'onnx', '--out', out], /fcn export: --weights is required/],
    [['export', 'onnx', '--weights', weights], /fcn export: --out is required/],
    [['export', 'onnx', '--weights', weights, '--out', out, '--opset', '9'], /fcn export: --opset must be an integer from 13 to \d+, got '9'/],
    [['export', 'tflite', '--weights', weights, '--out', out], /fcn export: unknown format 'tflite' \(expected onnx\)/],
    [['export', '--weights', weights, '--out', out], /fcn export: no format given/],
    [['export', 'onnx', '--weights', weights, '--out', out, '--classes', shortFile], /fcn export: --classes '.*three-classes\.json': names 3 classes, the model predicts 21/],
  ];
  for (const [args, pattern] of cases) {
    const bad = await runCli(...args);
    assert.notEqual(bad.code, 0, args.join(' '));
    assert.equal(lines(bad.err).length, 1, `${args.join(' ')}:\n${bad.err}`);
    assert.match(bad.err, pattern);
  }
});
