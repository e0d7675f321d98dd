// Smoke test of the benchmark peers at a tiny size: the ONNX export runs in onnxruntime and
// gives the same logits as the PyTorch reference, and both timers return sane numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportOnnx, ortForward, torchBench, torchPython } from '../../bench/peers.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { writeNpy } from '../../src/io/npy.js';
import { spawnSync } from 'node:child_process';
import { requires } from '../prereq.js';

const skip = requires(torchPython() !== null, 'python3 with torch not found (apt-get install python3-torch)');
const dir = mkdtempSync(join(tmpdir(), 'fcn-peers-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

test('ONNX export matches the PyTorch reference and both peers time it', { skip }, async () => {
  const [H, W] = [64, 96];
  const onnx = join(dir, 'f.onnx');
  exportOnnx({ model: 'fcn8', width: 0.0625, height: H, widthPx: W, out: onnx, seed: 3 });

  const x = Float32Array.from({ length: 3 * H * W }, (_, i) => Math.sin(i * 0.37) * 60);
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1 });
  assert.deepEqual(session.inputNames, ['input']);
  assert.deepEqual(session.outputNames, ['logits']);
  const got = (await session.run({ input: new ort.Tensor('float32', x, [1, 3, H, W]) }))['logits']!;
  assert.deepEqual(got.dims, [1, 21, H, W]);
  await session.release();

  // Same seed's weights through the reference's own forward (its export-onnx --seed and
  // random weights share one generator, so write them out via a tiny Python call).
  const py = torchPython()!;
  const wPath = join(dir, 'w.safetensors');
  const mk = spawnSync(py, ['-c', `import sys; sys.path.insert(0, sys.argv[1]); import torch_fcn as T; T.write_safetensors(sys.argv[2], T.random_weights(T.layer_specs('fcn8', 0.0625), 3))`, join(import.meta.dirname, '..', '..', 'scripts'), wPath], { encoding: 'utf8' });
  assert.equal(mk.status, 0, mk.stderr);
  const xPath = join(dir, 'x.npy');
  writeNpy(xPath, x, [1, 3, H, W]);
  const outPath = join(dir, 'ref.safetensors');
  const fw = spawnSync(py, [join(import.meta.dirname, '..', '..', 'scripts', 'torch_fcn.py'), 'forward', '--model', 'fcn8', '--width', '0.0625', '--weights', wPath, '--input', xPath, '--out', outPath], { encoding: 'utf8' });
  assert.equal(fw.status, 0, fw.stderr);
  const ref = readSafetensors(outPath).tensors.get('logits')!.data as Float32Array;
  const g = got.data as Float32Array;
  let maxAbs = 0, maxDiff = 0;
  for (let i = 0; i < ref.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(ref[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - g[i]!));
  }
  assert.ok(maxAbs > 0);
  assert.ok(maxDiff <= 1e-4 * maxAbs, `onnxruntime vs torch: max diff ${maxDiff} (max |logit| ${maxAbs})`);

  const o = await ortForward({ onnxPath: onnx, height: H, width: W, threads: 1, warmup: 1, reps: 3 });
  assert.equal(o.allMs.length, 3);
  assert.ok(o.ms > 0 && Number.isFinite(o.ms));
  const t = await torchBench({ mode: 'train', precision: 'fp32', model: 'fcn32', width: 0.0625, size: 64, threads: 1, warmup: 1, reps: 2 });
  assert.equal(t.allMs.length, 2);
  assert.ok(t.ms > 0 && Number.isFinite(t.ms));
});

test("PyTorch's int8 peer runs its quantized FCN-8s and stays near the float network", { skip }, async () => {
  const r = await torchBench({ mode: 'forward', precision: 'int8', model: 'fcn8', width: 0.25, size: 64, threads: 2, warmup: 1, reps: 2 });
  assert.equal(r.allMs.length, 2);
  assert.ok(r.ms > 0);
  assert.ok(r.quantizedEngine === 'fbgemm' || r.quantizedEngine === 'x86' || r.quantizedEngine === 'onednn', `engine ${r.quantizedEngine}`);
  // Per-channel int8 kernels and 8-bit activations calibrated on the input itself: a few
  // percent of the logits' norm (1.6% measured at full width, 128²); a wrong layer would be ~100%.
  assert.ok(r.int8RelErr !== undefined && r.int8RelErr > 0 && r.int8RelErr < 0.1, `int8 relative error ${r.int8RelErr}`);
});
