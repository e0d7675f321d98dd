import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors, type SafetensorsTensor } from '../../src/io/safetensors.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { findPython, runPython } from '../reference/python.js';
import { requires } from '../prereq.js';

const dir = mkdtempSync(join(tmpdir(), 'fcn-st-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

// A simple deterministic generator so failures reproduce.
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
}

function sample(): Map<string, SafetensorsTensor> {
  const r = lcg(7);
  const f32 = new Float32Array(2 * 3 * 5);
  const f32bits = new Uint32Array(f32.buffer);
  for (let i = 0; i < f32bits.length; i++) f32bits[i] = r();
  // Special values whose bits must survive: NaN with payload, -0, ±Inf, subnormal.
  f32bits[0] = 0x7fc00123;
  f32[1] = -0;
  f32[2] = Infinity;
  f32[3] = -Infinity;
  f32bits[4] = 0x00000001;
  const f64 = new Float64Array(7).map(() => (r() / 2 ** 32 - 0.5) * 1e300);
  const f16 = new Uint16Array(5).map(() => r() & 0xffff);
  const bf16 = new Uint16Array(6).map(() => r() & 0xffff);
  const u8 = new Uint8Array(3).map(() => r() & 0xff); // odd length: later tensors would misalign if ordered naively
  const i32 = new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, -1]);
  const i64 = new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n, 123456789012345678n]);
  return new Map<string, SafetensorsTensor>([
    ['w.f32', { dtype: 'F32', shape: [2, 3, 5], data: f32 }],
    ['a.u8', { dtype: 'U8', shape: [3], data: u8 }],
    ['b.f64', { dtype: 'F64', shape: [7], data: f64 }],
    ['c.f16', { dtype: 'F16', shape: [5, 1], data: f16 }],
    ['d.bf16', { dtype: 'BF16', shape: [2, 3], data: bf16 }],
    ['e.i32', { dtype: 'I32', shape: [2, 2], data: i32 }],
    ['f.i64', { dtype: 'I64', shape: [5], data: i64 }],
    ['g.empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
    ['h.scalar', { dtype: 'F32', shape: [], data: new Float32Array([3.5]) }],
  ]);
}

function bytesOf(t: SafetensorsTensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

test('round trip is bit-exact for every dtype, with metadata', () => {
  const tensors = sample();
  const path = join(dir, 'rt.safetensors');
  const meta = { format: 'pt', note: 'ünïcode ✓', empty: '' };
  writeSafetensors(path, tensors, meta);
  const back = readSafetensors(path);
  assert.deepEqual(back.metadata, meta);
  assert.deepEqual([...back.tensors.keys()], [...tensors.keys()].sort());
  for (const [name, t] of tensors) {
    const b = back.tensors.get(name)!;
    assert.equal(b.dtype, t.dtype, name);
    assert.deepEqual(b.shape, t.shape, name);
    assert.equal(b.data.constructor, t.data.constructor, name);
    assert.ok(bytesOf(b).equals(bytesOf(t)), `${name} bytes differ`);
  }
});

test('output is deterministic, 8-byte aligned, and read without copying', () => {
  const tensors = sample();
  const reversed = new Map([...tensors.entries()].reverse());
  const a = Buffer.concat(serializeSafetensors(tensors, { z: '1', a: '2' }));
  const b = Buffer.concat(serializeSafetensors(reversed, { a: '2', z: '1' }));
  assert.ok(a.equals(b), 'input order changed the bytes');
  const n = Number(a.readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0, 'data does not start on an 8-byte boundary');
  const header = JSON.parse(a.subarray(8, 8 + n).toString('utf8'));
  assert.deepEqual(Object.keys(header), ['__metadata__', ...[...tensors.keys()].sort()]);
  // Offsets are contiguous from 0 and cover the data exactly (what strict readers demand).
  const spans = Object.entries(header).filter(([k]) => k !== '__metadata__').map(([, v]) => (v as { data_offsets: [number, number] }).data_offsets).sort((x, y) => x[0] - y[0]);
  let pos = 0;
  for (const [s, e] of spans) {
    assert.equal(s, pos);
    pos = e;
  }
  assert.equal(pos, a.length - 8 - n);
  // Every tensor is aligned for its element size, so parsing makes views, not copies.
  const parsed = parseSafetensors(a);
  for (const [name, t] of parsed.tensors) {
    assert.equal(t.data.buffer, a.buffer, `${name} was copied`);
  }
});

test('misaligned tensors (legal in the format) are copied and read correctly', () => {
  // Hand-built file whose header length is 8k+3, so the F32 data starts misaligned.
  const vals = new Float32Array([1.5, -2.25, 3e-38, 7]);
  let json = JSON.stringify({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } });
  while ((8 + json.length) % 8 !== 3) json += ' ';
  const buf = Buffer.concat([Buffer.alloc(8), Buffer.from(json), Buffer.from(vals.buffer)]);
  buf.writeBigUInt64LE(BigInt(json.length), 0);
  const path = join(dir, 'mis.safetensors');
  writeFileSync(path, buf);
  const t = readSafetensors(path).tensors.get('x')!;
  assert.deepEqual([...t.data as Float32Array], [...vals]);
});

function fileWith(name: string, header: unknown, dataBytes: number, rawHeader?: string): string {
  const json = Buffer.from(rawHeader ?? JSON.stringify(header));
  const buf = Buffer.concat([Buffer.alloc(8), json, Buffer.alloc(dataBytes)]);
  buf.writeBigUInt64LE(BigInt(json.length), 0);
  const path = join(dir, name);
  writeFileSync(path, buf);
  return path;
}

test('bad files fail with a clear error naming the file', () => {
  const cases: [string, string, RegExp][] = [];
  const tiny = join(dir, 'tiny.safetensors');
  writeFileSync(tiny, Buffer.from([1, 2, 3]));
  cases.push(['tiny', tiny, /truncated file/]);
  const beyond = join(dir, 'beyond.safetensors');
  const bb = Buffer.alloc(20);
  bb.writeBigUInt64LE(1000n, 0);
  writeFileSync(beyond, bb);
  cases.push(['beyond', beyond, /header length 1000 is beyond the file size 20/]);
  cases.push(['json', fileWith('json.safetensors', null, 0, '{"a": [1, 2'), /not valid JSON/]);
  cases.push(['array', fileWith('array.safetensors', [1, 2], 0), /must be an object/]);
  cases.push(['dtype', fileWith('dtype.safetensors', { a: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16), /unknown dtype "F128"/]);
  cases.push(['shape', fileWith('shape.safetensors', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /shape must be/]);
  cases.push(['offsets', fileWith('off.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), /data_offsets must be/]);
  cases.push(['range', fileWith('range.safetensors', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 12), /beyond the 12 data bytes/]);
  cases.push(['reversed', fileWith('rev.safetensors', { a: { dtype: 'U8', shape: [0], data_offsets: [4, 2] } }, 4), /end before begin/]);
  cases.push(['size', fileWith('size.safetensors', { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, 16), /hold 12 bytes but shape \[2, 2\] × F32 needs 16/]);
  cases.push([
    'overlap',
    fileWith('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12),
    /'a' \[0, 8\] and 'b' \[4, 12\] overlap/,
  ]);
  cases.push(['meta', fileWith('meta.safetensors', { __metadata__: { k: 3 } }, 0), /__metadata__\.k must be a string/]);
  cases.push(['missing', join(dir, 'nope.safetensors'), /cannot read file \(ENOENT\)/]);
  for (const [label, path, re] of cases) {
    assert.throws(() => readSafetensors(path), (e: Error) => {
      assert.match(e.message, re, label);
      assert.ok(e.message.includes(path), `${label}: message does not name the file: ${e.message}`);
      return true;
    });
  }
});

test('writer rejects inconsistent tensors', () => {
  const p = join(dir, 'bad-write.safetensors');
  assert.throws(() => writeSafetensors(p, { a: { dtype: 'F32', shape: [2], data: new Float64Array(2) } }), /F32 needs a Float32Array/);
  assert.throws(() => writeSafetensors(p, { a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /3 elements but data has 2/);
  assert.throws(() => writeSafetensors(p, { a: { dtype: 'X' as 'F32', shape: [1], data: new Float32Array(1) } }), /unknown dtype/);
  assert.throws(() => writeSafetensors(p, { __metadata__: { dtype: 'U8', shape: [0], data: new Uint8Array(0) } }), /reserved/);
  assert.throws(() => writeSafetensors(p, {}, { k: 1 as unknown as string }), /must be a string/);
});

test('atomic writes leave no temporary files and fail cleanly', () => {
  const sub = mkdtempSync(join(dir, 'atomic-'));
  const p = join(sub, 'x.json');
  writeFileAtomic(p, '{"a":1}');
  writeFileAtomic(p, [Buffer.from('{"a"'), Buffer.from(':2}')]);
  assert.equal(readFileSync(p, 'utf8'), '{"a":2}');
  writeFileAtomic(p, new Uint8Array(Buffer.from('{"a":3}')));
  assert.equal(readFileSync(p, 'utf8'), '{"a":3}');
  assert.deepEqual(readdirSync(sub), ['x.json']);
  const bad = join(sub, 'no-such-dir', 'y.json');
  assert.throws(() => writeFileAtomic(bad, 'x'), (e: Error) => e.message.includes(bad) && /ENOENT/.test(e.message));
  // A chunk iterator that throws midway must leave the old file intact and no temp file behind.
  function* failing(): Generator<Uint8Array> {
    yield Buffer.from('partial');
    throw new Error('boom');
  }
  assert.throws(() => writeFileAtomic(p, failing()), /boom/);
  assert.equal(readFileSync(p, 'utf8'), '{"a":3}');
  assert.deepEqual(readdirSync(sub), ['x.json']);
});

// Python side, written by hand with json + struct + numpy (the safetensors package is not
// installed): a strict reader of our file, and a writer with a header length that is not a
// multiple of 8 (so our reader must copy misaligned tensors).
const PY = String.raw`
import json, struct, sys
import numpy as np
DT = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': '<u2', 'I64': '<i8', 'I32': '<i4', 'U8': '|u1'}
mode, path = sys.argv[1], sys.argv[2]
if mode == 'read':
    raw = open(path, 'rb').read()
    (n,) = struct.unpack('<Q', raw[:8])
    assert (8 + n) % 8 == 0, 'header not padded to 8'
    header = json.loads(raw[8:8 + n].decode('utf8'))
    data = raw[8 + n:]
    meta = header.pop('__metadata__', {})
    spans = sorted(tuple(v['data_offsets']) for v in header.values())
    pos = 0
    for s, e in spans:
        assert s == pos, 'hole or overlap'
        pos = e
    assert pos == len(data), 'data not fully covered'
    out = {'meta': meta, 't': {}}
    for k, v in header.items():
        s, e = v['data_offsets']
        a = np.frombuffer(data[s:e], dtype=DT[v['dtype']]).reshape(v['shape'])
        assert a.nbytes == e - s
        out['t'][k] = {'dtype': v['dtype'], 'shape': list(a.shape), 'hex': a.tobytes().hex()}
    print(json.dumps(out))
else:
    rng = np.random.default_rng(3)
    arrs = {
        'conv.kernel': ('F32', rng.standard_normal((3, 3, 2, 4)).astype('<f4')),
        'odd': ('U8', rng.integers(0, 256, 5).astype('|u1')),
        'half': ('F16', rng.standard_normal(3).astype('<f2')),
        'bf': ('BF16', rng.integers(0, 65536, 4).astype('<u2')),
        'big': ('I64', np.array([-2**63, 2**63 - 1, 5], dtype='<i8')),
        'dbl': ('F64', rng.standard_normal((2, 2)).astype('<f8')),
        'int': ('I32', np.array([-7, 2**31 - 1], dtype='<i4')),
    }
    header = {'__metadata__': {'who': 'numpy'}}
    blob = b''
    for k, (dt, a) in arrs.items():
        header[k] = {'dtype': dt, 'shape': list(a.shape), 'data_offsets': [len(blob), len(blob) + a.nbytes]}
        blob += a.tobytes()
    hj = json.dumps(header).encode('utf8')
    if (8 + len(hj)) % 8 == 0:
        hj += b' '
    open(path, 'wb').write(struct.pack('<Q', len(hj)) + hj + blob)
    print(json.dumps({k: {'dtype': dt, 'shape': list(a.shape), 'hex': a.tobytes().hex()} for k, (dt, a) in arrs.items()}))
`;

const py = findPython(['numpy']);

test('cross-check with a hand-written numpy reader and writer', { skip: requires(py !== null, 'python3 with numpy not found (apt-get install python3-numpy)') }, () => {
  if (!py) return;
  const ours = join(dir, 'ours.safetensors');
  const tensors = sample();
  writeSafetensors(ours, tensors, { source: 'fcn' });
  const seen = JSON.parse(runPython(py, PY, ['read', ours])) as { meta: Record<string, string>; t: Record<string, { dtype: string; shape: number[]; hex: string }> };
  assert.deepEqual(seen.meta, { source: 'fcn' });
  assert.equal(Object.keys(seen.t).length, tensors.size);
  for (const [name, tt] of tensors) {
    assert.equal(seen.t[name]!.dtype, tt.dtype);
    assert.deepEqual(seen.t[name]!.shape, tt.shape);
    assert.equal(seen.t[name]!.hex, bytesOf(tt).toString('hex'), name);
  }

  const theirs = join(dir, 'theirs.safetensors');
  const expected = JSON.parse(runPython(py, PY, ['write', theirs])) as Record<string, { dtype: string; shape: number[]; hex: string }>;
  const back = readSafetensors(theirs);
  assert.deepEqual(back.metadata, { who: 'numpy' });
  assert.equal(back.tensors.size, Object.keys(expected).length);
  for (const [name, e] of Object.entries(expected)) {
    const b = back.tensors.get(name)!;
    assert.equal(b.dtype, e.dtype);
    assert.deepEqual(b.shape, e.shape);
    assert.equal(bytesOf(b).toString('hex'), e.hex, name);
  }
});
