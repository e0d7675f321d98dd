// Winograd's algorithm for float32 inference, chosen per layer: the whole network's logits with
// every allowed layer (3×3, stride 1) on Winograd stay within 1e-4 of the direct algorithm's,
// relative to the largest logit. oneDNN 2.x has Winograd for AVX-512 only: elsewhere (an AVX2
// CPU, or ONEDNN_MAX_CPU_ISA=AVX2) forcing it must be refused with the clear message, and the
// measuring mode must fall back to the direct algorithm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '../../src/engine/binding.js';
import { configureEngine, cpuFeatures } from '../../src/engine/config.js';
import { kernelChoiceFile, kernelChoices, setKernelChoice, type KernelChoiceMode } from '../../src/engine/kernel-choice.js';
import { FCN } from '../../src/models/fcn.js';
import { Adam } from '../../src/train/optim.js';
import { computeGradients } from '../../src/train/step.js';

configureEngine({ threads: 2, precision: 'float32' });
const winogradHere = cpuFeatures().avx512;

// FCN-8s logits for a fixed input, with every kernel choice made by `mode`.
function logits(mode: KernelChoiceMode, width = 0.125, seed = 3, height = 96, imageWidth = 96): Float32Array {
  setKernelChoice(mode);
  const model = new FCN({ kind: 'fcn8', width });
  model.initialize(seed);
  const x = native.fromArray([1, 3, height, imageWidth], Float32Array.from({ length: 3 * height * imageWidth }, (_, i) => Math.sin(i * 0.37) * 60));
  try {
    const y = model.predictLogits(x, 'float32');
    try {
      return y.toArray() as Float32Array;
    } finally {
      y.dispose();
    }
  } finally {
    setKernelChoice('off');
    x.dispose();
    model.dispose();
  }
}

const disposeEach = (...things: { dispose(): void }[]) => {
  for (const t of things) t.dispose();
};

// Within 1e-4 of the largest logit, and not equal: the algorithms round differently, so an
// exact match would mean the other algorithm was not used.
function assertCloseButNotEqual(got: Float32Array, direct: Float32Array, what: string): void {
  let diff = 0, top = 0;
  for (let i = 0; i < direct.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - direct[i]!));
    top = Math.max(top, Math.abs(direct[i]!));
  }
  assert.ok(top > 0, 'the logits are not all zero');
  assert.ok(diff > 0, `${what} gave the direct algorithm's exact logits: was it used?`);
  assert.ok(diff <= 1e-4 * top, `max |${what} − direct| ${diff} > 1e-4 × ${top}`);
}

test(winogradHere
  ? `FCN-8s logits with Winograd's algorithm (ISA ${cpuFeatures().isa}) are within 1e-4 of the direct algorithm's`
  : `forcing Winograd's algorithm is refused on ISA ${cpuFeatures().isa} (no AVX-512)`, () => {
  const direct = logits('off');
  if (!winogradHere) {
    assert.throws(() => logits('winograd'), /Winograd convolution is not available on this CPU/);
    return;
  }
  assertCloseButNotEqual(logits('winograd'), direct, 'Winograd');
});

test('FCN-8s logits with every 3×3 and 7×7 convolution on the engine\'s own Winograd (winograd-gemm) are within 1e-4 of the direct kernel\'s', () => {
  assertCloseButNotEqual(logits('winograd-gemm', 0.25, 5, 100, 84), logits('off', 0.25, 5, 100, 84), 'winograd-gemm');
});

test('measured kernel choices are kept on disk per CPU and listed; a refused candidate is never chosen', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'fcn-kernels-'));
  const saved = process.env.FCN_HOME;
  process.env.FCN_HOME = home;
  try {
    const direct = logits('off');
    const measured = logits('measure');
    const file = kernelChoiceFile();
    assert.ok(file.startsWith(home) && existsSync(file), `choices written to ${file}`);
    const onDisk = JSON.parse(readFileSync(file, 'utf8')) as { cpu: string; choices: { key: string; choice: string; times: Record<string, number> }[] };
    const fwd = onDisk.choices.filter((c) => c.key.startsWith('fwd f32'));
    assert.ok(fwd.length > 0, 'the 3×3 layers were measured');
    // Upsamplings (keys with T) choose between the transposed kernel and the phase convolution.
    for (const c of fwd) {
      const allowed = c.key.includes(' T ') ? ['direct', 'subpixel'] : winogradHere ? ['direct', 'winograd', 'winograd-gemm'] : ['direct', 'winograd-gemm'];
      assert.ok(allowed.includes(c.choice), `${c.key}: ${c.choice}`);
    }
    assert.ok(fwd.some((c) => c.key.includes(' T ') && Number.isFinite(c.times['subpixel'])), 'the upsamplings were measured with the phase convolution too');
    assert.ok(kernelChoices().length >= fwd.length);
    let diff = 0, top = 0;
    for (let i = 0; i < direct.length; i++) {
      diff = Math.max(diff, Math.abs(measured[i]! - direct[i]!));
      top = Math.max(top, Math.abs(direct[i]!));
    }
    assert.ok(diff <= 1e-4 * top, `max |measured − direct| ${diff} > 1e-4 × ${top}`);
  } finally {
    if (saved === undefined) delete process.env.FCN_HOME;
    else process.env.FCN_HOME = saved;
    setKernelChoice('off');
    rmSync(home, { recursive: true, force: true });
  }
});

test('an update after Winograd inference reaches every later pass (its copies go stale, not rewritten)', () => {
  setKernelChoice('off');
  const model = new FCN({ kind: 'fcn8', width: 0.125 });
  model.initialize(4);
  const x = native.fromArray([1, 3, 64, 64], Float32Array.from({ length: 3 * 64 * 64 }, (_, i) => Math.cos(i * 0.11) * 60));
  const labels = native.fromArray([1, 64, 64], Uint8Array.from({ length: 64 * 64 }, (_, i) => (i >> 7) % 21));
  const opt = new Adam({ lr: 1e-3 });
  const twin = new FCN({ kind: 'fcn8', width: 0.125 });
  try {
    computeGradients(model, x, labels, { precision: 'float32' });
    // Between the gradients and the update, an inference on Winograd's algorithm: its packed
    // copies are in a transformed layout the update cannot write.
    setKernelChoice('winograd');
    if (winogradHere) model.predictLogits(x, 'float32').dispose();
    setKernelChoice('off');
    opt.step(model.params());
    // The same weights in a model that never held a packed copy.
    model.params().forEach((p, i) => twin.params()[i]!.assign(native.reorder(p.value)));
    const [a, b] = [model, twin].map((m) => {
      const y = m.predictLogits(x, 'float32');
      const v = y.toArray() as Float32Array;
      y.dispose();
      return v;
    });
    assert.deepEqual(a, b);
  } finally {
    setKernelChoice('off');
    disposeEach(x, labels, opt, model, twin);
  }
});

// Training on Winograd's algorithm (the forward and, on AVX-512, the input gradient): after an
// Adam step the transformed weights go stale and are made anew, so the next step's gradients
// are those of the updated weights, within rounding of the direct kernels' on a copy of them.
// With lr 1e-2 every weight moves ~1e-2: gradients of stale weights would be far outside 1e-3.
for (const mode of (winogradHere ? ['winograd', 'winograd-gemm'] : ['winograd-gemm']) as KernelChoiceMode[])
  test(`training on ${mode}: after an update, the gradients are the updated weights' (within 1e-3 of the direct kernels')`, () => {
    const model = new FCN({ kind: 'fcn8', width: 0.125 });
    const twin = new FCN({ kind: 'fcn8', width: 0.125 });
    model.initialize(6);
    const x = native.fromArray([1, 3, 64, 64], Float32Array.from({ length: 3 * 64 * 64 }, (_, i) => Math.sin(i * 0.23) * 60));
    const labels = native.fromArray([1, 64, 64], Uint8Array.from({ length: 64 * 64 }, (_, i) => (i >> 6) % 21));
    const opt = new Adam({ lr: 1e-2 });
    // (Frozen parameters, the bilinear upsamplings, have none.)
    const grads = (m: FCN) => m.params().map((p) => (p.grad ? Float32Array.from(p.grad.toArray() as Float32Array) : null));
    try {
      setKernelChoice(mode);
      computeGradients(model, x, labels, { precision: 'float32' });
      opt.step(model.params());
      computeGradients(model, x, labels, { precision: 'float32' });
      const got = grads(model);
      setKernelChoice('off');
      model.params().forEach((p, i) => twin.params()[i]!.assign(native.reorder(p.value)));
      computeGradients(twin, x, labels, { precision: 'float32' });
      const want = grads(twin);
      let differs = false;
      want.forEach((w, k) => {
        if (!w) return;
        let diff = 0, top = 0;
        for (let i = 0; i < w.length; i++) {
          diff = Math.max(diff, Math.abs(got[k]![i]! - w[i]!));
          top = Math.max(top, Math.abs(w[i]!));
        }
        differs ||= diff > 0;
        assert.ok(diff <= 1e-3 * top, `${model.params()[k]!.name}: max |${mode} − direct| ${diff} > 1e-3 × ${top}`);
      });
      assert.ok(differs, `${mode} gave the direct kernels' exact gradients: was it used?`);
    } finally {
      setKernelChoice('off');
      disposeEach(x, labels, opt, model, twin);
    }
  });
