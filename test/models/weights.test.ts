import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { native } from '../../src/engine/binding.js';
import { FCN } from '../../src/models/fcn.js';
import { loadModel, saveWeights } from '../../src/models/weights.js';
import { weightsToKeras } from '../../src/models/weights-layout.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { bilinearPlane } from '../../src/nn/init.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'fcn-weights-'));

test('save → load round-trips every parameter bit-exactly, with the model in the metadata', async () => {
  const dir = tmp();
  try {
    const a = new FCN({ kind: 'fcn16', width: 0.0625 });
    a.initialize(5);
    saveWeights(path.join(dir, 'w.safetensors'), a);
    const file = readSafetensors(path.join(dir, 'w.safetensors'));
    assert.equal(file.metadata.model, 'fcn16');
    assert.equal(file.metadata.width, '0.0625');
    const b = await loadModel(path.join(dir, 'w.safetensors'));
    assert.equal(b.kind, 'fcn16');
    assert.equal(b.width, 0.0625);
    const pa = a.params(), pb = b.params();
    assert.equal(pa.length, pb.length);
    pa.forEach((p, i) => assert.deepEqual(pb[i].value.toArray(), p.value.toArray(), p.name));
    a.dispose();
    b.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('names and Keras layouts: conv kernels (kh, kw, in, out), transposed (kh, kw, out, in)', () => {
  const m = new FCN({ kind: 'fcn8', width: 0.0625 });
  m.initialize(1);
  const k = weightsToKeras(m);
  const names = [...k.keys()];
  for (const n of ['block1_conv1.kernel', 'block5_conv3.bias', 'conv6.kernel', 'conv7.kernel', 'score7.kernel', 'score4.kernel', 'score3.bias', 'score7_upsample.kernel', 'skip4_upsample.kernel', 'fcn8.kernel'])
    assert.ok(names.includes(n), `${n} missing`);
  assert.ok(!names.includes('fcn8.bias'), 'transposed convolutions have no bias');
  assert.deepEqual(k.get('block1_conv1.kernel')!.shape, [3, 3, 3, 4]);
  assert.deepEqual(k.get('conv6.kernel')!.shape, [7, 7, 32, 256]);
  assert.deepEqual(k.get('fcn8.kernel')!.shape, [16, 16, 21, 21]);
  // An engine kernel O,I,KH,KW with one marked element lands at [kh][kw][i][o] in Keras layout.
  const p = m.layer('block1_conv1').kernel;
  const values = new Float32Array(4 * 3 * 3 * 3);
  values[((2 * 3 + 1) * 3 + 0) * 3 + 2] = 7; // o=2, i=1, kh=0, kw=2
  p.assign(native.fromArray(p.dims, values));
  const keras = weightsToKeras(m).get('block1_conv1.kernel')!.data as Float32Array;
  assert.equal(keras[((0 * 3 + 2) * 3 + 1) * 4 + 2], 7);
  assert.equal(keras.reduce((s, v) => s + v, 0), 7);
  // The bilinear kernel sits on the class diagonal: Keras [kh][kw][c][c].
  const up = weightsToKeras(m).get('fcn8.kernel')!.data as Float32Array;
  const plane = bilinearPlane(16);
  assert.equal(up[((5 * 16 + 6) * 21 + 3) * 21 + 3], plane[5 * 16 + 6]);
  assert.equal(up[((5 * 16 + 6) * 21 + 3) * 21 + 4], 0);
  m.dispose();
});

test('native permute moves axes as asked and its inverse restores them; bad perms are refused', () => {
  const src = Float32Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i);
  const t = native.fromArray([2, 3, 4, 5], src);
  const k = native.permute(t, [2, 3, 1, 0]); // O,I,KH,KW → KH,KW,I,O
  assert.deepEqual(k.dims, [4, 5, 3, 2]);
  const kv = k.toArray() as Float32Array;
  // k[h][w][i][o] = t[o][i][h][w]
  for (const [o, i, h, w] of [[0, 0, 0, 0], [1, 2, 3, 4], [1, 0, 2, 1], [0, 2, 1, 3]])
    assert.equal(kv[((h * 5 + w) * 3 + i) * 2 + o], src[((o * 3 + i) * 4 + h) * 5 + w]);
  const back = native.permute(k, [3, 2, 0, 1]);
  assert.deepEqual(back.toArray(), src);
  assert.throws(() => native.permute(t, [0, 1, 1, 2]), /each of the tensor's 4 axes once/);
  assert.throws(() => native.permute(t, [0, 1, 2]), /each of the tensor's 4 axes once/);
  for (const x of [t, k, back]) x.dispose();
});

test('fromArray with a permutation equals permute of the plain copy (the kernel transposes and any other order)', () => {
  const dims = [3, 5, 70, 130]; // more than one 64-wide tile of the last axis
  const src = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i) * 100);
  const plain = native.fromArray(dims, src);
  for (const perm of [[3, 2, 0, 1], [2, 3, 0, 1], [1, 0, 3, 2], [0, 2, 3, 1]]) {
    const direct = native.fromArray(dims, src, perm), twoStep = native.permute(plain, perm);
    assert.deepEqual(direct.dims, perm.map((a) => dims[a]));
    assert.deepEqual(direct.toArray(), twoStep.toArray(), `perm ${perm}`);
    // One element by the definition: out[i0][i1][i2][i3] = src at the index whose axis perm[k] is i_k.
    const out = direct.toArray() as Float32Array, od = direct.dims;
    const at = [1, 2, 1, 2], srcIndex = [0, 0, 0, 0];
    perm.forEach((a, k) => (srcIndex[a] = at[k]));
    assert.equal(out[((at[0] * od[1] + at[1]) * od[2] + at[2]) * od[3] + at[3]], src[((srcIndex[0] * dims[1] + srcIndex[1]) * dims[2] + srcIndex[2]) * dims[3] + srcIndex[3]]);
    direct.dispose();
    twoStep.dispose();
  }
  assert.throws(() => native.fromArray(dims, src, [0, 0, 1, 2]), /each of the tensor's 4 axes once/);
  plain.dispose();
});

test('loading a file for another model names the first offending tensor and both shapes', async () => {
  const dir = tmp();
  try {
    const m = new FCN({ kind: 'fcn8', width: 0.0625 });
    m.initialize(2);
    const tensors = weightsToKeras(m);
    const file = path.join(dir, 'w.safetensors');
    // A wrong shape.
    const bad = new Map(tensors);
    bad.set('block2_conv1.kernel', { dtype: 'F32', shape: [3, 3, 4, 9], data: new Float32Array(3 * 3 * 4 * 9) });
    writeSafetensors(file, bad, { model: 'fcn8', width: '0.0625' });
    await assert.rejects(() => loadModel(file), /tensor 'block2_conv1.kernel' has shape \[3, 3, 4, 9\], the model expects \[3, 3, 4, 8\]/);
    // A missing tensor.
    const missing = new Map(tensors);
    missing.delete('score3.kernel');
    writeSafetensors(file, missing, { model: 'fcn8', width: '0.0625' });
    await assert.rejects(() => loadModel(file), /tensor 'score3.kernel' is missing/);
    // FCN-8s weights into FCN-32s: extra tensors.
    writeSafetensors(file, tensors, {});
    await assert.rejects(() => loadModel(file, { kind: 'fcn32', width: 0.0625 }), /'score4.kernel' is not a parameter of fcn32|is missing/);
    await assert.rejects(() => loadModel(file), /does not say which model/);
    await assert.rejects(() => loadModel(path.join(dir, 'nope.safetensors'), { kind: 'fcn8' }), /nope.safetensors: no such file/);
    m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('any input size: logits have the input size; a padded input gives the same logits as running on the padded image', () => {
  const m = new FCN({ kind: 'fcn8', width: 0.0625 });
  m.initialize(3);
  for (const [h, w] of [[33, 47], [64, 64], [95, 31]]) {
    const x = native.fromArray([1, 3, h, w], Float32Array.from({ length: 3 * h * w }, (_, i) => Math.sin(i * 0.37) * 60));
    const y = m.predictLogits(x);
    assert.deepEqual(y.dims, [1, 21, h, w]);
    // The same image zero-padded to 32-multiples by hand: its top-left crop must be identical.
    const hp = Math.ceil(h / 32) * 32, wp = Math.ceil(w / 32) * 32;
    const padded = native.cropPad(x, { height: hp, width: wp });
    const yp = m.predictLogits(padded);
    const crop = native.cropPad(yp, { height: h, width: w });
    assert.deepEqual(y.toArray(), crop.toArray());
    for (const t of [x, y, padded, yp, crop]) t.dispose();
  }
  m.dispose();
});

test('class names and colours travel in the metadata; a bad colour list names the file and the entry', async () => {
  const dir = tmp();
  try {
    const names = ['background', 'sky', 'grass'];
    const colors: [number, number, number][] = [[0, 0, 0], [40, 90, 230], [30, 200, 60]];
    const a = new FCN({ kind: 'fcn32', width: 0.0625, numClasses: 3, classNames: names, classColors: colors });
    a.initialize(1);
    const file = path.join(dir, 'w.safetensors');
    saveWeights(file, a);
    a.dispose();
    assert.equal(readSafetensors(file).metadata.class_colors, '["#000000","#285ae6","#1ec83c"]');
    const b = await loadModel(file);
    assert.deepEqual([b.classNames, b.classColors], [names, colors]);
    const { tensors, metadata } = readSafetensors(file);
    writeSafetensors(file, tensors, { ...metadata, class_colors: '["#000000","blue","#1ec83c"]' });
    await assert.rejects(loadModel(file), (e: Error) => e.message === `${file}: class_colors[1]: colour "blue" is not "#rrggbb"`);
    b.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
