// An int8 model exported as QDQ ONNX: ONNX Runtime turns the Q/DQ pairs into its own int8
// kernels (QLinearConv in the graph it optimises) and its logits agree with the engine's int8
// pass within int8 rounding, as the float32 ones do with float32; the float32 form of the same
// model is still one flag away; a float model cannot be written as int8.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { FCN } from '../../src/models/fcn.js';
import { native } from '../../src/engine/binding.js';
import { configureEngine } from '../../src/engine/config.js';
import { Rng } from '../../src/data/prng.js';
import { networkInput } from '../../src/data/transforms.js';
import type { RgbImage } from '../../src/io/image.js';
import { decodeModel } from '../support/onnx.js';
import { calibrateOnImages, quantizeModel } from '../../src/quant/quantize.js';
import { saveQuantized } from '../../src/models/int8-weights.js';
import { exportOnnx, ONNX_INPUT, ONNX_LOGITS } from '../../src/export/onnx-export.js';
import { tempDir } from '../data/helpers.js';
import { runCli } from '../eval/fixtures.js';

const tmp = tempDir('onnx-qdq');
after(() => tmp.cleanup());
configureEngine({ threads: 2, precision: 'float32' });

const H = 96, W = 128;

/** Deterministic RGB with structure at several scales. */
function picture(seed: number): RgbImage {
  const rng = new Rng(seed);
  const data = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 3; c++)
        data[(y * W + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(128 + 100 * Math.sin((x * (c + 1)) / 17 + seed) * Math.cos(y / (11 + 5 * c)) + rng.uniform(-20, 20))));
  return { data, width: W, height: H };
}

/** A narrow FCN-8s with non-zero skip scores, calibrated on four pictures and quantized. */
function int8Model(): FCN {
  const model = new FCN({ kind: 'fcn8', width: 0.25 });
  model.initialize(1);
  const rng = new Rng(5);
  for (const l of [model.score4!, model.score3!]) {
    const n = l.kernel.dims.reduce((a, b) => a * b, 1);
    l.kernel.assign(native.fromArray(l.kernel.dims, Float32Array.from({ length: n }, () => rng.uniform(-0.05, 0.05))));
  }
  quantizeModel(model, calibrateOnImages(model, [0, 1, 2, 3].map(picture)));
  return model;
}

const relative = (a: Float32Array, b: Float32Array) => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) (num += (a[i]! - b[i]!) ** 2), (den += b[i]! ** 2);
  return Math.sqrt(num / den);
};

function ours(model: FCN, rgb: RgbImage, precision: 'float32' | 'int8'): Float32Array {
  const x = native.fromArray([1, 3, H, W], networkInput(rgb, model.means));
  const y = model.predictLogits(x, precision);
  try {
    return y.toArray() as Float32Array;
  } finally {
    x.dispose();
    y.dispose();
  }
}

/** ORT's logits for the file, and the op counts of the graph ORT optimised it into. */
async function runOrt(bytes: Uint8Array, rgb: RgbImage, name: string): Promise<{ logits: Float32Array; ops: Record<string, number> }> {
  const chw = new Float32Array(3 * H * W);
  for (let i = 0; i < H * W; i++) for (let c = 0; c < 3; c++) chw[c * H * W + i] = rgb.data[i * 3 + c]!;
  const optimized = path.join(tmp.dir, `${name}.optimized.onnx`);
  const session = await ort.InferenceSession.create(Buffer.from(bytes), { optimizedModelFilePath: optimized, intraOpNumThreads: 2, logSeverityLevel: 3 });
  try {
    const r = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', chw, [1, 3, H, W]) });
    const ops: Record<string, number> = {};
    for (const n of (decodeModel(readFileSync(optimized)) as { graph: { node: { opType: string }[] } }).graph.node) ops[n.opType] = (ops[n.opType] ?? 0) + 1;
    return { logits: Float32Array.from(r[ONNX_LOGITS]!.data as Float32Array), ops };
  } finally {
    await session.release();
  }
}

test('an int8 model as QDQ: ORT runs its body on QLinearConv and agrees with the engine\'s int8 logits', { timeout: 300_000 }, async (t) => {
  const model = int8Model();
  try {
    const bytes = exportOnnx(model);
    const file = decodeModel(bytes) as { graph: { node: { opType: string }[]; initializer: { name: string; dataType: number }[] }; metadataProps: { key: string; value: string }[] };
    const int8Kernels = file.graph.initializer.filter((i) => i.dataType === 3 && i.name.endsWith('_int8')).map((i) => i.name);
    const quantizedLayers = model.layers().filter((l) => l.quant?.kernel);
    assert.deepEqual(int8Kernels.sort(), quantizedLayers.map((l) => `${l.kernel.name}_int8`).sort(), 'every int8 kernel, and only those, as INT8');
    // block1_conv1 reads the signed image: an int8 zero point (the others uint8).
    const zeroType = (name: string) => file.graph.initializer.find((i) => i.name === name)?.dataType;
    assert.equal(zeroType('block1_conv1_input_qzero'), 3, 'block1_conv1 quantizes the image to int8');
    assert.equal(zeroType('block1_conv2_input_qzero'), 2, 'activations are uint8');
    assert.equal(file.metadataProps.find((p) => p.key === 'precision')?.value, 'int8');

    const rgb = picture(9);
    const { logits, ops } = await runOrt(bytes, rgb, 'qdq');
    // Every convolution with a quantized ReLU output is one of ORT's int8 kernels.
    const reluQuantized = quantizedLayers.filter((l) => l.quant!.outputScale !== null).length;
    assert.ok((ops.QLinearConv ?? 0) >= reluQuantized, `ORT made ${ops.QLinearConv ?? 0} QLinearConv of ${reluQuantized} quantized ReLU convolutions: ${JSON.stringify(ops)}`);
    const int8 = ours(model, rgb, 'int8'), fp32 = ours(model, rgb, 'float32');
    const vsOurs = relative(logits, int8), vsFloat = relative(logits, fp32), oursVsFloat = relative(int8, fp32);
    t.diagnostic(`relative L2: ORT int8 vs ours int8 ${vsOurs.toExponential(2)}, ORT int8 vs float32 ${vsFloat.toExponential(2)}, ours int8 vs float32 ${oursVsFloat.toExponential(2)}`);
    // Measured 7e-3 / 9.8e-3 / 9.5e-3: a wrong scale, bias or zero point shows as O(1).
    assert.ok(vsOurs <= 0.03, `ORT's int8 logits differ from ours by ${vsOurs}`);
    assert.ok(vsFloat <= 2 * oursVsFloat + 0.005, `ORT's int8 is further from float32 (${vsFloat}) than int8 rounding explains (${oursVsFloat})`);

    // 7-bit activations: still ORT's int8 kernels, still int8 rounding from float32 (coarser).
    const reduced = await runOrt(exportOnnx(model, { reduceRange: true }), rgb, 'qdq7');
    assert.ok((reduced.ops.QLinearConv ?? 0) >= reluQuantized);
    const reducedVsFloat = relative(reduced.logits, fp32);
    t.diagnostic(`7-bit: ORT int8 vs float32 ${reducedVsFloat.toExponential(2)}`);
    assert.ok(reducedVsFloat <= 4 * oursVsFloat + 0.01, `7-bit QDQ is ${reducedVsFloat} from float32`);

    // The float32 form: no Q/DQ, ORT's logits are the engine's float32 ones.
    const asFloat = exportOnnx(model, { int8: false });
    assert.ok(!(decodeModel(asFloat) as { graph: { node: { opType: string }[] } }).graph.node.some((n) => n.opType === 'QuantizeLinear'));
    const floatRun = await runOrt(asFloat, rgb, 'float');
    assert.ok(relative(floatRun.logits, fp32) <= 1e-4, 'the float32 form runs the dequantized weights');
  } finally {
    model.dispose();
  }
});

test('a float model cannot be written as int8; fcn export onnx writes an int8 file as QDQ and --float32 as float', { timeout: 300_000 }, async () => {
  const float = new FCN({ kind: 'fcn32', width: 0.0625 });
  float.initialize(0);
  assert.throws(() => exportOnnx(float, { int8: true }), /int8 needs an int8 model \(made by fcn quantize\)/);
  float.dispose();

  const model = int8Model();
  const weights = path.join(tmp.dir, 'int8.safetensors');
  saveQuantized(weights, model);
  model.dispose();
  const qdq = await runCli('export', 'onnx', '--weights', weights, '--out', path.join(tmp.dir, 'cli-qdq.onnx'));
  assert.equal(qdq.code, 0, qdq.err);
  assert.match(qdq.out, /int8 \(QDQ\)/);
  const ops = (decodeModel(readFileSync(path.join(tmp.dir, 'cli-qdq.onnx'))) as { graph: { node: { opType: string }[] } }).graph.node.map((n) => n.opType);
  assert.ok(ops.includes('QuantizeLinear') && ops.includes('DequantizeLinear'));
  const asFloat = await runCli('export', 'onnx', '--weights', weights, '--out', path.join(tmp.dir, 'cli-float.onnx'), '--float32');
  assert.equal(asFloat.code, 0, asFloat.err);
  assert.doesNotMatch(asFloat.out, /QDQ/);
  const bad = await runCli('export', 'onnx', '--weights', weights, '--out', path.join(tmp.dir, 'x.onnx'), '--float32', '--reduce-range');
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /--reduce-range applies to int8 models written as QDQ/);
});
