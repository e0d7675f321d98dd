// Tests of scripts/torch_fcn.py on its own (no engine involved): the properties checked here
// follow from the network's definition, so a bug in the reference cannot hide behind a matching
// bug in the engine it is later compared with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, writeSafetensors, type SafetensorsFile, type SafetensorsTensor } from '../../src/io/safetensors.js';
import { writeNpy } from '../../src/io/npy.js';
import { findPython } from './python.js';
import { requires } from '../prereq.js';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'torch_fcn.py');
const python = findPython(['torch', 'numpy']);
const skip = requires(python !== null, 'python3 with torch and numpy not found (apt-get install python3-torch)');
const dir = mkdtempSync(join(tmpdir(), 'fcn-torchref-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

type Model = 'fcn32' | 'fcn16' | 'fcn8';
interface Layer { name: string; kind: 'conv' | 'deconv'; k: number; cin: number; cout: number }
const C = 21;

// The architecture, written out again here from the project's definition.
function layers(model: Model, w: number): Layer[] {
  const s = (c: number) => Math.max(1, Math.round(c * w));
  const out: Layer[] = [];
  let cin = 3;
  const chans: number[] = [];
  for (const [b, n, c] of [[1, 2, 64], [2, 2, 128], [3, 3, 256], [4, 3, 512], [5, 3, 512]] as const) {
    for (let i = 1; i <= n; i++) {
      out.push({ name: `block${b}_conv${i}`, kind: 'conv', k: 3, cin, cout: s(c) });
      cin = s(c);
    }
    chans[b] = s(c);
  }
  out.push({ name: 'conv6', kind: 'conv', k: 7, cin: chans[5]!, cout: s(4096) });
  out.push({ name: 'conv7', kind: 'conv', k: 1, cin: s(4096), cout: s(4096) });
  out.push({ name: 'score7', kind: 'conv', k: 1, cin: s(4096), cout: C });
  const de = (name: string, k: number): Layer => ({ name, kind: 'deconv', k, cin: C, cout: C });
  if (model === 'fcn32') out.push(de('fcn32', 64));
  else {
    out.push(de('score7_upsample', 4), { name: 'score4', kind: 'conv', k: 1, cin: chans[4]!, cout: C });
    if (model === 'fcn16') out.push(de('fcn16', 32));
    else out.push(de('skip4_upsample', 4), { name: 'score3', kind: 'conv', k: 1, cin: chans[3]!, cout: C }, de('fcn8', 16));
  }
  return out;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()); // standard normal
}

/** Keras-layout bilinear kernel (k, k, out, in), class i → i only. */
function bilinear(k: number): Float32Array {
  const factor = Math.floor((k + 1) / 2);
  const centre = k % 2 === 1 ? factor - 1 : factor - 0.5;
  const w = new Float32Array(k * k * C * C);
  for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) {
    const v = (1 - Math.abs(y - centre) / factor) * (1 - Math.abs(x - centre) / factor);
    for (let i = 0; i < C; i++) w[((y * k + x) * C + i) * C + i] = v;
  }
  return w;
}

function randomWeights(model: Model, w: number, seed: number): Map<string, SafetensorsTensor> {
  const r = rng(seed);
  const out = new Map<string, SafetensorsTensor>();
  for (const l of layers(model, w)) {
    if (l.kind === 'deconv') {
      out.set(`${l.name}.kernel`, { dtype: 'F32', shape: [l.k, l.k, C, C], data: bilinear(l.k) });
      continue;
    }
    const std = Math.sqrt(2 / (l.k * l.k * l.cin));
    out.set(`${l.name}.kernel`, { dtype: 'F32', shape: [l.k, l.k, l.cin, l.cout], data: Float32Array.from({ length: l.k * l.k * l.cin * l.cout }, () => r() * std) });
    out.set(`${l.name}.bias`, { dtype: 'F32', shape: [l.cout], data: Float32Array.from({ length: l.cout }, () => r() * 0.1) });
  }
  return out;
}

let counter = 0;
function writeInputs(n: number, h: number, w: number, seed: number): { x: string; y: string } {
  const r = rng(seed);
  const x = join(dir, `x${++counter}.npy`);
  const y = join(dir, `y${counter}.npy`);
  writeNpy(x, Float32Array.from({ length: n * 3 * h * w }, () => r() * 40), [n, 3, h, w]);
  // Random classes, with a block of ignored pixels.
  const labels = Uint8Array.from({ length: n * h * w }, (_, i) => ((i % w) < 6 ? 255 : Math.floor(Math.abs(r()) * 7) % C));
  writeNpy(y, labels, [n, h, w]);
  return { x, y };
}

function saveWeights(ws: Map<string, SafetensorsTensor>): string {
  const p = join(dir, `w${++counter}.safetensors`);
  writeSafetensors(p, ws);
  return p;
}

function run(args: string[]): SafetensorsFile {
  const out = join(dir, `out${++counter}.safetensors`);
  const r = spawnSync(python!, [SCRIPT, ...args, '--out', out, '--threads', '2'], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`torch_fcn.py ${args[0]} failed: ${r.stderr}`);
  return readSafetensors(out);
}

const f64 = (f: SafetensorsFile, name: string): Float64Array | Float32Array => {
  const t = f.tensors.get(name);
  assert.ok(t, `missing ${name}`);
  return t.data as Float64Array | Float32Array;
};

const W = 0.0625;

test('logits are (N, 21, H, W) for sizes not divisible by 32', { skip }, () => {
  const { x } = writeInputs(2, 40, 56, 1);
  for (const model of ['fcn32', 'fcn16', 'fcn8'] as Model[]) {
    const out = run(['forward', '--model', model, '--width', String(W), '--weights', saveWeights(randomWeights(model, W, 2)), '--input', x]);
    const t = out.tensors.get('logits')!;
    assert.equal(t.dtype, 'F32');
    assert.deepEqual(t.shape, [2, C, 40, 56], model);
    assert.ok((t.data as Float32Array).every(Number.isFinite), `${model}: non-finite logits`);
    // Random weights must give logits that vary over space (not a constant or zero output).
    const d = t.data as Float32Array;
    assert.ok(Math.abs(d[0]! - d[40 * 56 - 1]!) > 0, `${model}: logits look constant`);
  }
});

test('a constant score map upsamples to that constant away from the borders', { skip }, () => {
  const H = 96, Wd = 128, margin = 32;
  const { x } = writeInputs(1, H, Wd, 3);
  const consts = Float32Array.from({ length: C }, (_, i) => (i - 10) * 0.37 + 0.05);
  for (const model of ['fcn32', 'fcn16', 'fcn8'] as Model[]) {
    const ws = randomWeights(model, W, 4);
    // score7 = per-class constant (zero kernel, bias c); skip scores contribute nothing.
    (ws.get('score7.kernel')!.data as Float32Array).fill(0);
    ws.set('score7.bias', { dtype: 'F32', shape: [C], data: consts });
    for (const s of ['score4', 'score3']) {
      if (ws.has(`${s}.kernel`)) {
        (ws.get(`${s}.kernel`)!.data as Float32Array).fill(0);
        (ws.get(`${s}.bias`)!.data as Float32Array).fill(0);
      }
    }
    const d = run(['forward', '--model', model, '--width', String(W), '--weights', saveWeights(ws), '--input', x]).tensors.get('logits')!.data as Float32Array;
    let checked = 0;
    for (let c = 0; c < C; c++) {
      const k = consts[c]!;
      for (let y = margin; y < H - margin; y++) for (let xx = margin; xx < Wd - margin; xx++) {
        const v = d[(c * H + y) * Wd + xx]!;
        assert.ok(Math.abs(v - k) <= 1e-5 * Math.abs(k) + 1e-6, `${model}: class ${c} at (${y}, ${xx}) is ${v}, expected ${k}`);
        checked++;
      }
      // At the corner the bilinear taps sum to less than 1 (Keras 'same' cropping): attenuated.
      const corner = d[c * H * Wd]!;
      assert.ok(Math.abs(corner) < 0.6 * Math.abs(k), `${model}: class ${c} corner ${corner} not attenuated from ${k}`);
    }
    assert.ok(checked > 0);
  }
});

/** Cross-entropy over non-ignored pixels, computed here from the logits. */
function crossEntropy(logits: Float64Array | Float32Array, labels: Uint8Array, n: number, h: number, w: number): { sum: number; count: number } {
  let sum = 0, count = 0;
  for (let b = 0; b < n; b++) for (let p = 0; p < h * w; p++) {
    const y = labels[b * h * w + p]!;
    if (y === 255) continue;
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, logits[(b * C + c) * h * w + p]!);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(logits[(b * C + c) * h * w + p]! - m);
    sum += m + Math.log(z) - logits[(b * C + y) * h * w + p]!;
    count++;
  }
  return { sum, count };
}

test('float64 step: loss matches the logits and gradients match finite differences', { skip }, () => {
  const model: Model = 'fcn16';
  const [N, H, Wd] = [1, 40, 56];
  const { x, y } = writeInputs(N, H, Wd, 5);
  const ws = randomWeights(model, W, 6);
  const wd = 0.01;
  const common = ['--model', model, '--width', String(W), '--input', x, '--labels', y, '--dtype', 'float64', '--optimizer', 'sgd', '--lr', '0', '--momentum', '0', '--weight-decay', String(wd)];
  const base = run(['step', ...common, '--weights', saveWeights(ws), '--reduction', 'mean']);
  assert.equal(base.tensors.get('loss')!.dtype, 'F64');
  const labels = new Uint8Array(N * H * Wd);
  {
    // Recreate the labels exactly as writeInputs made them (same generator, same seed).
    const r = rng(5);
    for (let i = 0; i < N * 3 * H * Wd; i++) r();
    for (let i = 0; i < labels.length; i++) labels[i] = (i % Wd) < 6 ? 255 : Math.floor(Math.abs(r()) * 7) % C;
  }
  const ce = crossEntropy(f64(base, 'logits'), labels, N, H, Wd);
  assert.equal(base.metadata['valid_pixels'], String(ce.count));
  const loss = f64(base, 'loss')[0]!;
  assert.ok(Math.abs(loss - ce.sum / ce.count) < 1e-9 * Math.abs(loss), `mean loss ${loss} vs ${ce.sum / ce.count}`);
  const sumRun = run(['step', ...common, '--weights', saveWeights(ws), '--reduction', 'sum']);
  assert.ok(Math.abs(f64(sumRun, 'loss')[0]! - ce.sum) < 1e-9 * ce.sum, 'sum reduction');
  // Sum gradients are count × mean gradients (before the regulariser, which does not scale).
  const gb = f64(base, 'grad.score4.bias'), gs = f64(sumRun, 'grad.score4.bias');
  for (let i = 0; i < gb.length; i++) assert.ok(Math.abs(gs[i]! - ce.count * gb[i]!) <= 1e-7 * Math.abs(gs[i]!) + 1e-9);

  // Finite differences through the deepest layer, a skip branch, and a bias; the weights are
  // perturbed in float32 storage, so use the exact perturbation that storage represents.
  for (const [name, decay] of [['block1_conv1.kernel', wd], ['score4.kernel', wd], ['conv6.bias', 0]] as const) {
    const g = f64(base, `grad.${name}`);
    let idx = 0;
    for (let i = 0; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[idx]!)) idx = i;
    const w0 = ws.get(name)!.data as Float32Array;
    const orig = w0[idx]!;
    const h = 1e-5 * Math.max(1e-2, Math.abs(orig));
    const losses: number[] = [];
    const steps: number[] = [];
    for (const sgn of [1, -1]) {
      const copy = new Map(ws);
      const data = Float32Array.from(w0);
      data[idx] = orig + sgn * h;
      steps.push(data[idx]! - orig);
      copy.set(name, { ...ws.get(name)!, data });
      losses.push(f64(run(['step', ...common, '--weights', saveWeights(copy), '--reduction', 'mean', '--trainable', 'score7']), 'loss')[0]!);
    }
    const fd = (losses[0]! - losses[1]!) / (steps[0]! - steps[1]!);
    const expected = fd + decay * orig;
    assert.ok(Math.abs(g[idx]! - expected) <= 1e-4 * Math.abs(expected) + 1e-8, `${name}[${idx}]: grad ${g[idx]} vs finite difference ${expected}`);
  }
});

function sameNames(f: SafetensorsFile, prefix: string, expected: string[]): void {
  const got = [...f.tensors.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)).sort();
  assert.deepEqual(got, [...expected].sort(), prefix);
}

test('Adam step follows the Keras formulas, with L2 on conv kernels only and state carried over', { skip }, () => {
  const model: Model = 'fcn8';
  const { x, y } = writeInputs(1, 40, 56, 7);
  const ws = randomWeights(model, W, 8);
  const [lr, l2, b1, b2, eps] = [1e-3, 1e-2, 0.9, 0.999, 1e-7];
  const common = ['--model', model, '--width', String(W), '--input', x, '--labels', y, '--optimizer', 'adam', '--lr', String(lr)];
  const s1 = run(['step', ...common, '--weights', saveWeights(ws), '--l2', String(l2)]);
  const s0 = run(['step', ...common, '--weights', saveWeights(ws), '--l2', '0']);
  // Default trainable set: every conv layer, transposed convs frozen.
  const trainable = layers(model, W).filter((l) => l.kind === 'conv').flatMap((l) => [`${l.name}.kernel`, `${l.name}.bias`]);
  sameNames(s1, 'grad.', trainable);
  sameNames(s1, 'updated.', trainable);
  assert.deepEqual([...(s1.tensors.get('t')!.data as BigInt64Array)], [1n]);
  let alpha = (lr * Math.sqrt(1 - b2)) / (1 - b1);
  for (const name of trainable) {
    const w = ws.get(name)!.data as Float32Array;
    const g1 = f64(s1, `grad.${name}`), g0 = f64(s0, `grad.${name}`), u = f64(s1, `updated.${name}`);
    const reg = name.endsWith('.kernel') ? 2 * l2 : 0;
    for (let i = 0; i < w.length; i += Math.max(1, Math.floor(w.length / 50))) {
      assert.ok(Math.abs(g1[i]! - g0[i]! - reg * w[i]!) <= 1e-5 * (Math.abs(g1[i]!) + Math.abs(reg * w[i]!)) + 1e-7, `${name}[${i}] L2 term`);
      const m = (1 - b1) * g1[i]!, v = (1 - b2) * g1[i]! ** 2;
      const want = w[i]! - (alpha * m) / (Math.sqrt(v) + eps);
      assert.ok(Math.abs(u[i]! - want) <= 1e-6 * Math.abs(want) + 1e-8, `${name}[${i}]: updated ${u[i]} vs ${want}`);
      assert.ok(Math.abs(f64(s1, `m.${name}`)[i]! - m) <= 1e-6 * Math.abs(m) + 1e-12);
    }
  }
  // Second step from the updated weights and the written state: t = 2, moments accumulate.
  const ws2 = new Map(ws);
  for (const name of trainable) ws2.set(name, { ...ws.get(name)!, data: Float32Array.from(f64(s1, `updated.${name}`)) });
  const statePath = join(dir, `state${++counter}.safetensors`);
  writeSafetensors(statePath, s1.tensors);
  const s2 = run(['step', ...common, '--weights', saveWeights(ws2), '--l2', String(l2), '--state', statePath]);
  assert.deepEqual([...(s2.tensors.get('t')!.data as BigInt64Array)], [2n]);
  alpha = (lr * Math.sqrt(1 - b2 ** 2)) / (1 - b1 ** 2);
  for (const name of ['block1_conv1.kernel', 'score3.bias', 'conv6.kernel']) {
    const w = ws2.get(name)!.data as Float32Array;
    const g = f64(s2, `grad.${name}`), u = f64(s2, `updated.${name}`);
    const m1 = f64(s1, `m.${name}`), v1 = f64(s1, `v.${name}`);
    for (let i = 0; i < w.length; i += Math.max(1, Math.floor(w.length / 50))) {
      const m = b1 * m1[i]! + (1 - b1) * g[i]!, v = b2 * v1[i]! + (1 - b2) * g[i]! ** 2;
      const want = w[i]! - (alpha * m) / (Math.sqrt(v) + eps);
      assert.ok(Math.abs(u[i]! - want) <= 1e-6 * Math.abs(want) + 1e-8, `step 2 ${name}[${i}]: ${u[i]} vs ${want}`);
    }
  }
});

test('SGD step follows Caffe (bias lr_mult 2, no bias decay, momentum) and --trainable selects layers', { skip }, () => {
  const model: Model = 'fcn32';
  const { x, y } = writeInputs(1, 40, 56, 9);
  const ws = randomWeights(model, W, 10);
  const [lr, mu, wd] = [1e-2, 0.9, 5e-4];
  const common = ['--model', model, '--width', String(W), '--input', x, '--labels', y, '--optimizer', 'sgd', '--lr', String(lr), '--momentum', String(mu), '--reduction', 'sum', '--trainable', 'score7,conv7,fcn32'];
  const names = ['score7.kernel', 'score7.bias', 'conv7.kernel', 'conv7.bias', 'fcn32.kernel'];
  const s1 = run(['step', ...common, '--weights', saveWeights(ws), '--weight-decay', String(wd)]);
  const s0 = run(['step', ...common, '--weights', saveWeights(ws), '--weight-decay', '0']);
  sameNames(s1, 'grad.', names);
  sameNames(s1, 'velocity.', names);
  // Untouched momentum state: v = -lr·lr_mult·g.
  for (const name of names) {
    const w = ws.get(name)!.data as Float32Array;
    const g1 = f64(s1, `grad.${name}`), g0 = f64(s0, `grad.${name}`), u = f64(s1, `updated.${name}`);
    const isBias = name.endsWith('.bias');
    const [lrMult, decay] = isBias ? [2, 0] : [1, 1];
    let moved = 0;
    for (let i = 0; i < w.length; i += Math.max(1, Math.floor(w.length / 200))) {
      assert.ok(Math.abs(g1[i]! - g0[i]! - wd * decay * w[i]!) <= 1e-5 * (Math.abs(g1[i]!) + Math.abs(wd * w[i]!)) + 1e-7, `${name}[${i}] decay term`);
      const want = w[i]! - lr * lrMult * g1[i]!;
      assert.ok(Math.abs(u[i]! - want) <= 1e-6 * Math.abs(want) + 1e-7, `${name}[${i}]: ${u[i]} vs ${want}`);
      if (u[i] !== w[i]) moved++;
    }
    assert.ok(moved > 0, `${name} did not move`);
  }
  // With a velocity state: v = μ·v_prev − lr·lr_mult·g.
  const statePath = join(dir, `state${++counter}.safetensors`);
  writeSafetensors(statePath, s1.tensors);
  const s2 = run(['step', ...common, '--weights', saveWeights(ws), '--weight-decay', String(wd), '--state', statePath]);
  for (const name of names) {
    const w = ws.get(name)!.data as Float32Array;
    const g = f64(s2, `grad.${name}`), u = f64(s2, `updated.${name}`), v1 = f64(s1, `velocity.${name}`);
    const lrMult = name.endsWith('.bias') ? 2 : 1;
    for (let i = 0; i < w.length; i += Math.max(1, Math.floor(w.length / 200))) {
      const v = mu * v1[i]! - lr * lrMult * g[i]!;
      assert.ok(Math.abs(u[i]! - (w[i]! + v)) <= 1e-6 * Math.abs(w[i]! + v) + 1e-7, `momentum ${name}[${i}]`);
    }
  }
});

test('bad arguments fail with a message', { skip }, () => {
  const { x } = writeInputs(1, 32, 32, 11);
  const ws = randomWeights('fcn8', W, 12);
  ws.delete('score3.bias');
  const r = spawnSync(python!, [SCRIPT, 'forward', '--model', 'fcn8', '--width', String(W), '--weights', saveWeights(ws), '--input', x, '--out', join(dir, 'never.safetensors')], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /missing weights: score3\.bias/);
  const wrongWidth = spawnSync(python!, [SCRIPT, 'forward', '--model', 'fcn8', '--width', '0.125', '--weights', saveWeights(randomWeights('fcn8', W, 12)), '--input', x, '--out', join(dir, 'never.safetensors')], { encoding: 'utf8' });
  assert.match(wrongWidth.stderr, /block1_conv1\.kernel has shape \[3, 3, 3, 4\], expected \[3, 3, 3, 8\]/);
});
