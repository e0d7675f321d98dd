// int8 inference of whole models: a model trained on the synthetic shapes keeps its
// validation mean IoU within 0.01 when quantized; the quantized file round-trips; the tiled
// path equals the whole-image one; random keras and caffe (at-once) networks stay close to
// float32; and the commands take --precision int8 and make int8 models.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { synthesizeDataset } from '../../src/data/synth.js';
import { openDataset } from '../../src/data/datasets.js';
import { configureEngine, cpuFeatures, int8SevenBitActivations } from '../../src/engine/config.js';
import { native, type Tensor } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';
import type { Conv2d } from '../../src/nn/layers.js';
import { activationLevels, dequantized, quantizedSigned, runtimeScale } from '../../src/nn/activation-scales.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { smallTrainConfig } from '../train/fixtures.js';
import { train } from '../../src/train/trainer.js';
import { evaluate } from '../../src/eval/evaluate.js';
import { calibrateOnImages, quantizeModel } from '../../src/quant/quantize.js';
import { saveQuantized } from '../../src/models/int8-weights.js';
import { segmentImage } from '../../src/infer/inference.js';
import { networkInput } from '../../src/data/transforms.js';
import { readImageRgb, type RgbImage } from '../../src/io/image.js';
import { tempDir } from '../data/helpers.js';
import { runCli as cli } from '../eval/fixtures.js';

/**
 * The float32 kernels the int8 ones stand for (real w = s[o]·q): after quantizing, the float
 * model computes with exactly the weights the int8 model holds, so a float32 run of a
 * quantized file and its int8 run differ only by the activations' rounding.
 */
function dequantizeKernel(q: Tensor, scales: Float32Array, roundToEven = false): Tensor {
  const data = q.toArray() as Int8Array;
  const per = data.length / scales.length;
  const even = (v: number) => 2 * (Math.abs(v / 2 - Math.trunc(v / 2)) === 0.5 ? 2 * Math.round(v / 4) : Math.round(v / 2));
  const w = Float32Array.from(data, (v, i) => (roundToEven ? even(v) : v) * scales[Math.floor(i / per)]!);
  return native.fromArray([...q.dims], w);
}

// With an int8 input (the first layer's image) and no VNNI, oneDNN adds 128 to x and halves the
// weights to avoid saturating, so the layer computes with its weights rounded to even
// (test/engine/int8.test.ts checks the exact sums).
const signedInputHalvesWeights = int8SevenBitActivations(cpuFeatures());

const runCli = async (argv: string[]) => {
  const r = await cli(...argv);
  return { code: r.code, stdout: r.out, stderr: r.err };
};

const tmp = tempDir('int8');
const data = path.join(tmp.dir, 'synth');
let trained = '';

before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  await synthesizeDataset({ out: data, count: 80, seed: 3, size: 128 });
  const c = smallTrainConfig(data, { size: 128, width: 0.125, batchSize: 8, samples: 0, stages: [{ model: 'fcn32', epochs: 10, trainable: 'all' }, { model: 'fcn8', epochs: 10, trainable: 'all' }] });
  const r = await train(c, path.join(tmp.dir, 'run'), { progress: null });
  assert.equal(r.status, 'completed');
  trained = r.stageWeights[1]!;
});
after(() => tmp.cleanup());

const images = async (split: string, n: number): Promise<RgbImage[]> => {
  const ds = await openDataset(data, { split });
  return Promise.all(ds.entries.slice(0, n).map((e) => readImageRgb(e.image)));
};
const inputOf = (model: FCN, rgb: RgbImage): Tensor => native.fromArray([1, 3, rgb.height, rgb.width], networkInput(rgb, model.means));

function logits(model: FCN, x: Tensor, precision: 'float32' | 'int8'): Float32Array {
  const y = model.predictLogits(x, precision);
  try {
    return y.toArray() as Float32Array;
  } finally {
    y.dispose();
  }
}

/** ‖a − b‖ / ‖b‖. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

async function quantizedCopy(file: string, calib: RgbImage[]): Promise<FCN> {
  const m = await loadModel(file);
  quantizeModel(m, calibrateOnImages(m, calib));
  return m;
}

test('a trained model keeps its validation mean IoU within 0.01 in int8 (calibrated on 16 training images)', { timeout: 300_000 }, async () => {
  const model = await quantizedCopy(trained, await images('train', 16));
  try {
    const val = await openDataset(data, { split: 'val' });
    const fp32 = await evaluate(model, val, { precision: 'float32' });
    const int8 = await evaluate(model, val, { precision: 'int8' });
    assert.ok(fp32.metrics.meanIoU > 0.3, `the float model learned the shapes (mean IoU ${fp32.metrics.meanIoU.toFixed(3)})`);
    assert.ok(Math.abs(int8.metrics.meanIoU - fp32.metrics.meanIoU) <= 0.01, `int8 mean IoU ${int8.metrics.meanIoU.toFixed(4)} vs float32 ${fp32.metrics.meanIoU.toFixed(4)}`);
    assert.ok(Math.abs(int8.metrics.pixelAccuracy - fp32.metrics.pixelAccuracy) <= 0.01, `pixel accuracy ${int8.metrics.pixelAccuracy} vs ${fp32.metrics.pixelAccuracy}`);
  } finally {
    model.dispose();
  }
});

test('the int8 file: I8 kernels with scales, loads as int8, runs the same; float32 runs its dequantized weights', { timeout: 120_000 }, async () => {
  const calib = await images('train', 4);
  const model = await quantizedCopy(trained, calib);
  const file = path.join(tmp.dir, 'q.safetensors'), floatFile = path.join(tmp.dir, 'f.safetensors');
  try {
    saveQuantized(file, model, { calibration: '{"method":"max"}' });
    saveWeights(floatFile, model);
    // Every kernel but the upsamplings is int8: a quarter of the bytes.
    assert.ok(statSync(file).size < 0.4 * statSync(floatFile).size, `int8 file ${statSync(file).size} B vs float ${statSync(floatFile).size} B`);
    const loaded = await loadModel(file);
    try {
      assert.ok(loaded.quantized);
      assert.equal(loaded.layers().filter((l) => l.quant?.kernel).length, 13 + 5, 'every convolution: 13 in VGG16, conv6, conv7, score7, score4, score3');
      assert.equal(loaded.layer('block1_conv1').quant?.signedInput, true, 'block1_conv1 reads the signed image');
      const [val] = await images('val', 1);
      const x = inputOf(model, val!);
      try {
        assert.deepEqual(logits(loaded, x, 'int8'), logits(model, x, 'int8'), 'int8 logits identical after the round trip');
        // float32 of the file = the float model with each kernel replaced by scale·q: close to the original.
        const e = relativeError(logits(loaded, x, 'float32'), logits(model, x, 'float32'));
        assert.ok(e < 0.02, `dequantized float32 vs float32: relative error ${e}`);
      } finally {
        x.dispose();
      }
    } finally {
      loaded.dispose();
    }
  } finally {
    model.dispose();
  }
});

test('block1_conv1 in int8 (the image quantized to int8) stays as close to float32 as its float32 form in files written before it had one, which still load', { timeout: 120_000 }, async (t) => {
  const model = await quantizedCopy(trained, await images('train', 4));
  const file = path.join(tmp.dir, 'float-first.safetensors');
  try {
    const [val] = await images('val', 1);
    const x = inputOf(model, val!);
    try {
      const first = model.layer('block1_conv1');
      const s8First = logits(model, x, 'int8');
      const fp32 = logits(model, x, 'float32');
      // The earlier form: block1_conv1's float kernel, only its output quantized.
      const { kernel: _, kernelScales: __, ...rest } = first.quant!;
      first.setQuant({ ...rest, kernel: null, kernelScales: null, inputScale: 1, signedInput: false });
      saveQuantized(file, model);
      const floatFirst = logits(model, x, 'int8');
      const loaded = await loadModel(file);
      try {
        assert.equal(loaded.layer('block1_conv1').quant?.kernel, null, 'the earlier file keeps block1_conv1 in float32');
        assert.equal(loaded.layers().filter((l) => l.quant?.kernel).length, 12 + 5);
        assert.deepEqual(logits(loaded, x, 'int8'), floatFirst, 'and runs as it did');
      } finally {
        loaded.dispose();
      }
      const eS8 = relativeError(s8First, fp32), eFloat = relativeError(floatFirst, fp32);
      t.diagnostic(`relative L2 from float32: int8 first layer ${eS8.toExponential(2)}, float32 first layer ${eFloat.toExponential(2)}; apart ${relativeError(s8First, floatFirst).toExponential(2)}`);
      // A wrong input scale, zero point or sign shows as O(1); the int8 image adds its own rounding.
      assert.ok(eS8 <= 1.5 * eFloat + 0.01, `int8 logits with the int8 first layer are ${eS8} from float32, with the float32 one ${eFloat}`);
      assert.ok(relativeError(s8First, floatFirst) <= 0.05, `the two first layers give logits ${relativeError(s8First, floatFirst)} apart`);
    } finally {
      x.dispose();
    }
  } finally {
    model.dispose();
  }
});

test('int8 in tiles equals int8 on the whole image', { timeout: 120_000 }, async () => {
  const model = await quantizedCopy(trained, await images('train', 4));
  try {
    const [rgb] = await images('val', 1);
    const whole = segmentImage(model, rgb!, { precision: 'int8', tiling: 'whole', logits: true });
    const tiled = segmentImage(model, rgb!, { precision: 'int8', tiling: 'tiled', tileSize: 64, logits: true });
    assert.ok(tiled.plan.tiled, 'ran in tiles');
    let worst = 0;
    for (let i = 0; i < whole.logits!.length; i++) worst = Math.max(worst, Math.abs(whole.logits![i]! - tiled.logits![i]!));
    assert.ok(worst < 1e-3, `largest logit difference ${worst}`);
    assert.deepEqual(tiled.labels, whole.labels);
  } finally {
    model.dispose();
  }
});

/** The float convolution the int8 one stands for: its kernel dequantized; input times factor. */
function definedConv(l: Conv2d, x: Tensor, factor: number): Tensor {
  const w = dequantizeKernel(l.quant!.kernel!, l.quant!.kernelScales!, l.quant!.signedInput === true && signedInputHalvesWeights);
  const xs = factor === 1 ? x : native.scale(x, factor);
  try {
    const p = l.padding;
    return native.convForward(xs, w, l.bias?.value ?? null, { stride: [l.stride, l.stride], padding: [p, p, p, p], relu: l.relu }).y;
  } finally {
    w.dispose();
    if (xs !== x) xs.dispose();
  }
}

for (const style of ['keras', 'caffe'] as const) {
  test(`a random ${style} FCN-8s${style === 'caffe' ? ' at once (skip factors folded into the int8 scales)' : ''}: every int8 layer computes its definition — the float convolution of its dequantized input and kernel, rounded to its output scale`, { timeout: 120_000 }, async () => {
    const model = new FCN({ kind: 'fcn8', width: 0.125, style, ...(style === 'caffe' ? { skipScales: [0.01, 0.0001] as [number, number] } : {}) });
    const held: Tensor[] = [];
    try {
      model.initialize(5);
      for (const l of [model.score4!, model.score3!]) {
        const n = l.kernel.dims.reduce((a, b) => a * b, 1);
        l.kernel.assign(native.fromArray(l.kernel.dims, Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 0.05)));
      }
      // Biases too (they join the int32 sums in accumulator units).
      for (const l of model.layers()) if (l.bias) l.bias.assign(native.fromArray(l.bias.dims, Float32Array.from({ length: l.bias.dims[0]! }, (_, i) => Math.cos(i * 2.3))));
      const pictures = await images('train', 2);
      quantizeModel(model, calibrateOnImages(model, pictures));
      const x = inputOf(model, (await images('val', 1))[0]!);
      held.push(x);
      const ctx = { training: false, precision: 'int8' as const, tape: null, seed: 0 };
      const check = (l: Conv2d, input: Tensor, factor = 1): Tensor => {
        const y = l.forward(input, ctx, factor);
        held.push(y);
        if (!l.quant?.kernel) return y;
        // block1_conv1's input is the image, rounded to its int8 scale first.
        const xq = l.quant.signedInput ? quantizedSigned(input, l.quant.inputScale) : input;
        const xin = dequantized(xq);
        if (xq !== input) xq.dispose();
        const ref = definedConv(l, xin, factor);
        const want = ref.toArray() as Float32Array;
        ref.dispose();
        if (xin !== input) xin.dispose();
        const yf = dequantized(y);
        const got = yf.toArray() as Float32Array;
        if (yf !== y) yf.dispose();
        const s = l.quant.outputScale === null ? null : runtimeScale(l.quant.outputScale);
        // uint8 outputs: the definition rounded to the output scale, within the levels this
        // CPU uses (ties and float sums may move a value by one step); float32 outputs (the
        // scores): the definition itself.
        const top = activationLevels();
        const expect = s === null ? want : Float32Array.from(want, (v) => Math.min(top, Math.max(0, Math.round(v / s))) * s);
        let off = 0, worst = 0;
        for (let i = 0; i < got.length; i++) {
          const d = Math.abs(got[i]! - expect[i]!);
          worst = Math.max(worst, d);
          if (d > (s === null ? 1e-3 * (1 + Math.abs(expect[i]!)) : 0.01 * s)) off++;
        }
        assert.ok(off <= got.length * 0.002 && (s === null || worst <= 1.01 * s), `${l.name}: ${off} of ${got.length} values off the definition (worst ${worst}, step ${s})`);
        return y;
      };
      let t = x;
      if (style === 'keras') held.push((t = native.cropPad(x, { height: Math.ceil(x.dims[2]! / 32) * 32, width: Math.ceil(x.dims[3]! / 32) * 32 })));
      const pools: Tensor[] = [];
      for (const block of model.blocks) {
        for (const c of block.convs) t = check(c, t);
        held.push((t = block.pool.forward(t, ctx)));
        pools.push(t);
      }
      for (const l of [model.conv6, model.conv7, model.score7]) t = check(l, t);
      check(model.score4!, pools[3]!, model.skipScales?.[0] ?? 1);
      check(model.score3!, pools[2]!, model.skipScales?.[1] ?? 1);
    } finally {
      for (const t of held) if (!t.disposed) t.dispose();
      model.dispose();
    }
  });
}

test('int8 needs a quantized model, and is for inference only', async () => {
  const model = new FCN({ kind: 'fcn32', width: 0.0625 });
  model.initialize(0);
  const x = native.zeros([1, 3, 32, 32]);
  try {
    assert.throws(() => model.predictLogits(x, 'int8'), /no int8 weights: make an int8 model with `fcn quantize/);
  } finally {
    x.dispose();
    model.dispose();
  }
  const t = await runCli(['train', '--data', data, '--precision', 'int8', '--epochs', '1']);
  assert.equal(t.code, 2, t.stderr);
  assert.match(t.stderr, /--precision must be float32, bfloat16 or auto, got 'int8' \(int8 is for inference with a model made by `fcn quantize`\)/);
  const p = await runCli(['predict', '--weights', trained, '--image', (await openDataset(data, { split: 'val' })).entries[0]!.image, '--precision', 'int8', '--labels', path.join(tmp.dir, 'x.png')]);
  assert.equal(p.code, 1, p.stderr);
  assert.match(p.stderr, /no int8 weights/);
});

test('fcn quantize writes an int8 model that fcn predict and fcn eval run with --precision int8', { timeout: 300_000 }, async () => {
  const help = await runCli(['quantize', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--calib/);
  const missing = await runCli(['quantize', '--weights', trained, '--out', path.join(tmp.dir, 'm.safetensors')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--calib is required/);
  const empty = await runCli(['quantize', '--weights', trained, '--calib', tmp.dir, '--out', path.join(tmp.dir, 'm.safetensors')]);
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /--calib: .*: no \.jpg, \.jpeg or \.png images in this folder/);

  const out = path.join(tmp.dir, 'cli-int8.safetensors');
  const q = await runCli(['quantize', '--weights', trained, '--calib', path.join(data, 'JPEGImages'), '--images', '8', '--out', out, '--threads', '2']);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stdout, /18 int8 convolutions/);
  const agree = Number(/agree on ([\d.]+)%/.exec(q.stdout)?.[1]);
  assert.ok(agree >= 98, `int8 and float32 agree on ${agree}% of the calibration pixels`);
  const image = (await openDataset(data, { split: 'val' })).entries[0]!.image;
  const labels = path.join(tmp.dir, 'int8-labels.png');
  const p = await runCli(['predict', '--weights', out, '--image', image, '--precision', 'int8', '--labels', labels]);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /int8/);
  assert.ok(existsSync(labels));
  // Converted, an int8 model becomes its float32 (dequantized) weights, loadable as float.
  const floatCopy = path.join(tmp.dir, 'dequantized.safetensors');
  const c = await runCli(['weights', 'convert', out, floatCopy]);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /an int8 model: .* holds its float32 \(dequantized\) weights/);
  const back = await loadModel(floatCopy);
  assert.equal(back.quantized, false);
  back.dispose();
  const e = await runCli(['eval', '--weights', out, '--data', data, '--split', 'val', '--precision', 'int8']);
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, /mean IoU/i);
});
