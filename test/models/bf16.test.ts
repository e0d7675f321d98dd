// bfloat16 at model level, in magnitude: gradients against float32 within a stated relative
// L2 error, a bf16 training run and its resume, bf16 tiled inference against bf16 whole-image
// inference, and `--precision bfloat16` / FCN_PRECISION=bfloat16 on the command line. Where
// oneDNN's ISA runs no bf16 (an AVX2 CPU, or ONEDNN_MAX_CPU_ISA=AVX2) each test asserts the
// clear refusal instead of skipping.
//
// What bf16's 8-bit significand implies: a value stored in bf16 keeps 8 significant bits (7
// stored and the implicit one), so rounding it costs up to 2^-9 ≈ 0.2% of it. oneDNN's bf16
// convolutions take bf16 activations, weights and output gradients and sum their products in
// float32, so each term is ~0.2% off, and those errors pass through ~20 layers. A weight's
// gradient is a sum over every pixel of the batch whose terms largely cancel, which turns 0.2%
// per term into 10–30% of the sum: float32 itself, given only the bf16-rounded weights, moves
// the gradients about as much (measured below, and the bf16 error is held to that floor). The
// loss, a mean without such cancellation, moves by 0.1–1.1%.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { native } from '../../src/engine/binding.js';
import { bf16Available, configureEngine } from '../../src/engine/config.js';
import { FCN, type FcnKind, type FcnStyle } from '../../src/models/fcn.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { segment, segmentImage, type InferenceOptions } from '../../src/infer/inference.js';
import { synthesizeDataset, SYNTH_CLASS_NAMES } from '../../src/data/synth.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { readNpy } from '../support/npy.js';
import { readJsonl } from '../support/jsonl.js';
import { train, type TrainOutcome } from '../../src/train/trainer.js';
import type { TrainConfig } from '../../src/train/config.js';
import { assertBf16Refused } from '../prereq.js';
import { repoRoot, tempDir } from '../data/helpers.js';
import { smallTrainConfig } from '../train/fixtures.js';
import { gradientsOf, randomSkipScores, relativeL2, roundWeightsToBf16, scaleAlong, sceneBatch, scenePicture, type Gradients } from './bf16-helpers.js';

/** Whether oneDNN's effective ISA runs bf16 here; where it does not, the tests check the refusal. */
const BF16 = bf16Available();
const REFUSAL = /bfloat16 needs a CPU with AVX-512/;
const REFUSAL_NOTE = `oneDNN's ISA ${native.info().isa} runs no bf16: checked the refusal instead`;

const tmp = tempDir('bf16');
const data = path.join(tmp.dir, 'synth');
before(async () => {
  configureEngine({ threads: 2, precision: 'float32' });
  // 12 scenes: 9 or 10 training images, 3 batches of 4 per epoch.
  await synthesizeDataset({ out: data, count: 12, seed: 5, size: 64 });
});
after(() => tmp.cleanup());

// The stated bounds of the gradient test. Measured on an AMD Zen 5 (avx512_bf16, and the same
// with oneDNN's emulated bf16 under ONEDNN_MAX_CPU_ISA=AVX512_CORE), for this model and batch:
// worst per-parameter relative L2 error 0.226 (block2_conv1.bias, whose float32 floor is
// 0.150), at most 2.2× a parameter's floor, scales 0.952–1.026, loss 0.25% apart; over eight
// other seeds, batches, sizes and widths of initialised models: errors ≤ 0.32, ≤ 2.7× the floor,
// scales 0.86–1.17, loss ≤ 1.1%. (After 10 float32 training steps, loss ~1, more cancels: errors
// reach 0.39 beside a floor of 0.41, scales 0.80–1.07; the bounds are for this model.) A gradient
// off by a factor of 1.5 (or 0.6, 2, 0) fails at least one bound.
const GRADIENT_ERROR_BOUND = 0.45;
const FLOOR_FACTOR = 3, FLOOR_SLACK = 0.03;
const SCALE_RANGE = [0.8, 1.25] as const;
const LOSS_BOUND = 0.02;

/** What is wrong with a bf16 gradient, given float32's and the float32 floor, per parameter; [] when nothing. */
function gradientFaults(f32: Gradients, bf16: Map<string, Float64Array>, floor: Gradients): string[] {
  const faults: string[] = [];
  for (const [name, a] of f32.byName) {
    const b = bf16.get(name)!;
    const error = relativeL2(a, b), below = relativeL2(a, floor.byName.get(name)!), scale = scaleAlong(a, b);
    if (!(error <= GRADIENT_ERROR_BOUND)) faults.push(`${name}: relative error ${error.toFixed(3)} over ${GRADIENT_ERROR_BOUND}`);
    if (!(error <= FLOOR_FACTOR * below + FLOOR_SLACK)) faults.push(`${name}: relative error ${error.toFixed(3)} over ${FLOOR_FACTOR}× the floor ${below.toFixed(3)} + ${FLOOR_SLACK}`);
    if (!(scale >= SCALE_RANGE[0] && scale <= SCALE_RANGE[1])) faults.push(`${name}: scale ${scale.toFixed(3)} outside [${SCALE_RANGE.join(', ')}]`);
  }
  return faults;
}

test('bf16 gradients of every parameter against float32 on the same weights and batch: relative L2 error, scale and loss within the stated bounds', { timeout: 300_000 }, (t) => {
  const { x, y } = sceneBatch(11, 2, 64);
  const model = new FCN({ kind: 'fcn8', width: 0.125, dropout: 0, numClasses: SYNTH_CLASS_NAMES.length });
  try {
    model.initialize(2);
    randomSkipScores(model, 9, 0.3);
    if (!BF16) {
      assertBf16Refused(() => gradientsOf(model, x, y, 'bfloat16'));
      t.diagnostic(REFUSAL_NOTE);
      return;
    }
    const f32 = gradientsOf(model, x, y, 'float32');
    const bf16 = gradientsOf(model, x, y, 'bfloat16');
    // The floor: float32 throughout, on the weights rounded to bf16 (the least bf16 changes).
    roundWeightsToBf16(model);
    const floor = gradientsOf(model, x, y, 'float32');

    const lossError = Math.abs(bf16.loss - f32.loss) / f32.loss;
    let worst = { error: 0, name: '', floor: 0 }, scales = [Infinity, -Infinity];
    for (const [name, a] of f32.byName) {
      const error = relativeL2(a, bf16.byName.get(name)!), s = scaleAlong(a, bf16.byName.get(name)!);
      if (error > worst.error) worst = { error, name, floor: relativeL2(a, floor.byName.get(name)!) };
      scales = [Math.min(scales[0]!, s), Math.max(scales[1]!, s)];
    }
    t.diagnostic(`loss fp32 ${f32.loss.toFixed(4)}, bf16 ${bf16.loss.toFixed(4)} (relative ${lossError.toExponential(2)}); worst gradient error ${worst.error.toFixed(4)} (${worst.name}; float32 floor ${worst.floor.toFixed(4)}); scales ${scales.map((s) => s.toFixed(3)).join('–')}; ${f32.byName.size} parameters`);
    assert.equal(bf16.byName.size, f32.byName.size, 'every parameter has a bf16 gradient');
    assert.ok(lossError <= LOSS_BOUND, `loss ${bf16.loss} vs ${f32.loss}: relative ${lossError}`);
    assert.deepEqual(gradientFaults(f32, bf16.byName, floor), []);

    // The bounds tell a wrong magnitude apart: every parameter's gradient scaled by these fails.
    for (const factor of [0, 0.6, 1.5, 2]) {
      const scaled = new Map([...bf16.byName].map(([name, g]) => [name, g.map((v) => v * factor)]));
      const faulty = new Set(gradientFaults(f32, scaled, floor).map((f) => f.split(':')[0]));
      assert.equal(faulty.size, f32.byName.size, `×${factor}: only ${faulty.size} of ${f32.byName.size} parameters fail`);
    }
  } finally {
    for (const tt of [x, y]) tt.dispose();
    model.dispose();
  }
});

/** The bf16 training run: FCN-8s, width 1/16, 64², batch 4, Adam at 1e-3, 3 epochs of 3 steps. */
function bf16Config(): TrainConfig {
  const c = smallTrainConfig(data, { size: 64, width: 0.0625, batchSize: 4, samples: 1, stages: [{ model: 'fcn8', epochs: 3, trainable: 'all' }] });
  c.precision = 'bfloat16';
  c.logEvery = 1;
  return c;
}

/** The largest difference of any tensor of two checkpoints, as a fraction of that tensor's largest value. */
function weightsDifference(a: string, b: string): { worst: number; name: string } {
  const wa = readSafetensors(a).tensors, wb = readSafetensors(b).tensors;
  assert.deepEqual([...wa.keys()].sort(), [...wb.keys()].sort());
  let worst = 0, worstName = '';
  for (const [name, t] of wa) {
    const p = t.data as Float32Array, q = wb.get(name)!.data as Float32Array;
    let d = 0, m = 1e-30;
    for (let i = 0; i < p.length; i++) {
      d = Math.max(d, Math.abs(p[i]! - q[i]!));
      m = Math.max(m, Math.abs(p[i]!));
    }
    if (d / m >= worst) [worst, worstName] = [d / m, name];
  }
  return { worst, name: worstName };
}

async function stepLosses(run: TrainOutcome): Promise<number[]> {
  const log = await readJsonl<{ type: string; loss: number }>(run.paths.log);
  return log.filter((l) => l.type === 'step').map((l) => l.loss);
}

test('bf16 training: the loss falls; stopped halfway, checkpointed and resumed, it ends where the straight run ends (within the thread-count floor)', { timeout: 600_000 }, async (t) => {
  if (!BF16) {
    await assert.rejects(train(bf16Config(), path.join(tmp.dir, 'refused'), { progress: null }), REFUSAL);
    t.diagnostic(REFUSAL_NOTE);
    return;
  }
  const straight = await train(bf16Config(), path.join(tmp.dir, 'straight'), { progress: null });
  assert.equal(straight.status, 'completed');
  const steps = straight.state.step;
  // The floor: the same run on 1 thread (oneDNN blocks and sums in another order).
  configureEngine({ threads: 1 });
  let oneThread: TrainOutcome;
  try {
    oneThread = await train(bf16Config(), path.join(tmp.dir, 'one-thread'), { progress: null });
  } finally {
    configureEngine({ threads: 2 });
  }
  // Stopped mid-epoch: the checkpoint holds the optimiser's state and the place in the data.
  const dir = path.join(tmp.dir, 'resumed'), half = Math.floor(steps / 2);
  const stop = new AbortController();
  const first = await train(bf16Config(), dir, { progress: null, signal: stop.signal, onStep: (s) => s.step === half && stop.abort() });
  assert.equal(first.status, 'interrupted');
  assert.equal(first.state.step, half);
  const resumed = await train(bf16Config(), dir, { progress: null, resume: true });
  assert.equal(resumed.status, 'completed');
  assert.equal(resumed.state.step, steps);

  const floor = weightsDifference(straight.paths.last, oneThread.paths.last);
  const diff = weightsDifference(straight.paths.last, resumed.paths.last);
  // At least 1e-6 (~17 units of float32 rounding) for a CPU where the threads change nothing.
  const tolerance = Math.max(10 * floor.worst, 1e-6);
  const [a, b, c] = [await stepLosses(straight), await stepLosses(resumed), await stepLosses(oneThread)];
  const lossFloor = Math.max(...a.map((v, i) => Math.abs(v - c[i]!) / v));
  const lossDiff = Math.max(...a.map((v, i) => Math.abs(v - b[i]!) / v));
  const epochs = straight.state.history.map((h) => h.train.loss);
  t.diagnostic(`${steps} steps, stopped at ${half}; epoch losses ${epochs.map((l) => l.toFixed(3)).join(' → ')}; weights: resumed differs by ${diff.worst.toExponential(2)}${diff.worst ? ` (${diff.name})` : ''}, 1 thread by ${floor.worst.toExponential(2)}${floor.worst ? ` (${floor.name})` : ''}; step losses: ${lossDiff.toExponential(2)} and ${lossFloor.toExponential(2)}`);
  assert.ok(diff.worst <= tolerance, `${diff.name} differs by ${diff.worst} of its largest value, over ${tolerance}`);
  assert.equal(b.length, steps, 'every step logged once across the stop');
  assert.ok(lossDiff <= Math.max(10 * lossFloor, 1e-6), `step losses differ by ${lossDiff} (floor ${lossFloor})`);
  // Master weights and optimiser state stay float32 in the checkpoint.
  for (const [name, tt] of readSafetensors(resumed.paths.last).tensors) assert.equal(tt.dtype, 'F32', name);
  assert.ok(epochs.at(-1)! < 0.5 * epochs[0]!, `the loss falls: ${epochs.join(' → ')}`);
});

// Tiled inference computes every pixel from the values the whole image uses, but another
// blocking sums in another order, and in bf16 that can flip an activation's rounding by one
// bf16 unit (2^-8 of it). The tolerance: half a bf16 unit of the largest logit (2^-9 of it), or
// 4× the whole image's own thread-count floor if larger. Measured on the Zen 5: tiled equal to
// whole to the bit, and the floor 0; bf16 is 1.0% of the largest logit from float32, so a
// tiled pass that ran float32 instead would fail.
const HALF_BF16_UNIT = 2 ** -9;
/** Labels may differ only at near ties; at most this share of pixels. */
const LABEL_AGREEMENT = 0.999;

function largestDifference(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

const largest = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

const tileCases: { kind: FcnKind; style: FcnStyle; body: InferenceOptions; stages: string }[] = [
  { kind: 'fcn8', style: 'keras', body: { tileSize: 384 }, stages: 'blocks 1-3 and 4-5 apart' },
  { kind: 'fcn8', style: 'caffe', body: { tileSize: 384, memoryBudget: 400_000 }, stages: 'all blocks in image tiles' },
];

for (const { kind, style, body, stages } of tileCases) {
  test(`bf16 ${kind} ${style}, ${stages}: tiled logits within half a bf16 unit of bf16 whole-image logits, labels agree on ≥ ${100 * LABEL_AGREEMENT}% of pixels`, { timeout: 300_000 }, (t) => {
    // Not a multiple of 32 either way, so the padding and caffe's ceil pooling meet the tiles.
    const rgb = scenePicture(3, 611, 457);
    const m = new FCN({ kind, width: 0.0625, style });
    try {
      m.initialize(5);
      randomSkipScores(m, 9, 0.3);
      if (!BF16) {
        assertBf16Refused(() => segmentImage(m, rgb, { precision: 'bfloat16', tiling: 'whole' }));
        assertBf16Refused(() => segmentImage(m, rgb, { precision: 'bfloat16', tiling: 'tiled', ...body }));
        t.diagnostic(REFUSAL_NOTE);
        return;
      }
      const whole = segmentImage(m, rgb, { precision: 'bfloat16', logits: true, tiling: 'whole' });
      const tiled = segmentImage(m, rgb, { precision: 'bfloat16', logits: true, tiling: 'tiled', ...body });
      const f32 = segmentImage(m, rgb, { precision: 'float32', logits: true, tiling: 'whole' });
      configureEngine({ threads: 1 });
      let oneThread;
      try {
        oneThread = segmentImage(m, rgb, { precision: 'bfloat16', logits: true, tiling: 'whole' });
      } finally {
        configureEngine({ threads: 2 });
      }
      const { tiles, headWindows, outputWindows } = tiled.plan;
      assert.ok(tiled.plan.tiled && tiles >= 4 && headWindows >= 2 && outputWindows >= 2, `several windows in every stage: ${JSON.stringify(tiled.plan)}`);
      const a = whole.logits!, b = tiled.logits!;
      const scale = largest(a), floor = largestDifference(a, oneThread.logits!);
      const tol = Math.max(HALF_BF16_UNIT * scale, 4 * floor);
      const diff = largestDifference(a, b), fromF32 = largestDifference(f32.logits!, a);
      const plane = rgb.width * rgb.height, K = m.numClasses;
      let differing = 0;
      for (let p = 0; p < plane; p++) {
        if (whole.labels[p] === tiled.labels[p]) continue;
        differing++;
        const scores = Array.from({ length: K }, (_, c) => a[c * plane + p]!).sort((u, v) => v - u);
        assert.ok(scores[0]! - scores[1]! <= 2 * tol, `pixel ${p}: labels ${whole.labels[p]} vs ${tiled.labels[p]} with a gap of ${scores[0]! - scores[1]!}`);
      }
      t.diagnostic(`largest logit ${scale.toFixed(1)}; tiled − whole ${(diff / scale).toExponential(2)} of it (thread floor ${(floor / scale).toExponential(2)}, tolerance ${(tol / scale).toExponential(2)}); bf16 − float32 ${(fromF32 / scale).toExponential(2)}; ${differing} of ${plane} labels differ; plan ${JSON.stringify(tiled.plan)}`);
      assert.ok(scale > 1, `logits of some size (${scale})`);
      assert.ok(new Set(whole.labels).size >= 2, 'the label map is not one class');
      assert.ok(fromF32 > tol, `bf16 differs from float32 by ${fromF32}, within the tolerance ${tol}: the comparison could not tell them apart`);
      assert.ok(diff <= tol, `tiled logits differ by ${diff}, over ${tol}`);
      assert.ok(1 - differing / plane >= LABEL_AGREEMENT, `${differing} of ${plane} labels differ`);
    } finally {
      m.dispose();
    }
  });
}

/** `fcn ...` in a process of its own (the precision is chosen once per process), FCN_PRECISION only as given. */
function runFcn(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const base = { ...process.env };
  delete base.FCN_PRECISION;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'cli', 'run-cli.ts'), ...args], { cwd: repoRoot, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (err += String(d)));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

test('--precision bfloat16 and FCN_PRECISION=bfloat16: fcn predict runs in bf16 (its logits are the API\'s bf16 ones, not float32\'s) and says so; fcn train records bfloat16 and keeps float32 weights', { timeout: 300_000 }, async (t) => {
  const weights = path.join(tmp.dir, 'cli.safetensors'), image = path.join(tmp.dir, 'scene.png');
  const model = new FCN({ kind: 'fcn8', width: 0.0625 });
  model.initialize(3);
  randomSkipScores(model, 4, 0.3);
  saveWeights(weights, model);
  model.dispose();
  const rgb = scenePicture(7, 150, 110);
  await sharp(Buffer.from(rgb.data), { raw: { width: rgb.width, height: rgb.height, channels: 3 } }).png().toFile(image);
  const predict = (name: string) => ['predict', '--weights', weights, '--image', image, '--labels', path.join(tmp.dir, `${name}.png`), '--logits', path.join(tmp.dir, `${name}.npy`), '--threads', '2'];
  const run = path.join(tmp.dir, 'cli-run');
  const trainArgs = ['train', '--data', data, '--size', '64', '--width', '0.0625', '--batch', '4', '--threads', '2', '--model', 'fcn32', '--epochs', '1', '--out', run, '--precision', 'bfloat16'];
  if (!BF16) {
    const refused: [string[], Record<string, string>][] = [[[...predict('flag'), '--precision', 'bfloat16'], {}], [predict('env'), { FCN_PRECISION: 'bfloat16' }], [trainArgs, {}]];
    for (const [args, env] of refused) {
      const r = await runFcn(args, env);
      assert.notEqual(r.code, 0, `${args.join(' ')} ran`);
      assert.match(r.err, REFUSAL);
    }
    t.diagnostic(REFUSAL_NOTE);
    return;
  }
  // The flag wins over the variable; the variable alone chooses too.
  const byFlag = await runFcn([...predict('flag'), '--precision', 'bfloat16'], { FCN_PRECISION: 'float32' });
  const byEnv = await runFcn(predict('env'), { FCN_PRECISION: 'bfloat16' });
  const loaded = await loadModel(weights);
  let bf16: Float32Array, f32: Float32Array;
  try {
    bf16 = (await segment(loaded, image, { precision: 'bfloat16', logits: true })).logits!;
    f32 = (await segment(loaded, image, { precision: 'float32', logits: true })).logits!;
  } finally {
    loaded.dispose();
  }
  const tol = HALF_BF16_UNIT * largest(bf16);
  for (const [name, r] of [['flag', byFlag], ['env', byEnv]] as const) {
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\(bfloat16, 2 threads\)/, `${name}: ${r.out}`);
    const logits = readNpy(path.join(tmp.dir, `${name}.npy`)).data as Float32Array;
    const d = largestDifference(bf16, logits), fromF32 = largestDifference(f32, logits);
    t.diagnostic(`${name}: CLI logits − API bf16 ${d.toExponential(2)}, − API float32 ${fromF32.toExponential(2)} (tolerance ${tol.toExponential(2)})`);
    assert.ok(d <= tol, `${name}: the command's logits differ from bf16's by ${d}`);
    assert.ok(fromF32 > tol, `${name}: the command's logits are float32's (within ${fromF32})`);
  }
  const info = await runFcn(['info'], { FCN_PRECISION: 'bfloat16' });
  assert.equal(info.code, 0, info.err);
  assert.match(info.out, /^precision bfloat16 \(FCN_PRECISION/m);

  const trained = await runFcn(trainArgs);
  assert.equal(trained.code, 0, trained.err);
  assert.equal(JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8')).precision, 'bfloat16', 'the run records its precision');
  for (const [name, tt] of readSafetensors(path.join(run, 'checkpoints', 'last.safetensors')).tensors) assert.equal(tt.dtype, 'F32', `${name}: master weights stay float32`);
});
