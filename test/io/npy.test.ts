import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { npyHeader, writeNpy, type NpyData } from '../../src/io/npy.js';
import { encodeNpy, parseNpy, readNpy } from '../support/npy.js';
import { findPython, runPython } from '../reference/python.js';
import { requires } from '../prereq.js';

const dir = mkdtempSync(join(tmpdir(), 'fcn-npy-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function bytesOf(d: NpyData): Buffer {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

function samples(): [string, NpyData, number[]][] {
  const f32 = new Float32Array(21 * 5 * 6).map((_, i) => Math.sin(i) * 1e3);
  new Uint32Array(f32.buffer)[0] = 0x7fc00abc; // NaN payload must survive
  f32[1] = -0;
  return [
    ['f32', f32, [21, 5, 6]],
    ['f64', new Float64Array([Math.PI, -1e-310, Infinity, 2 ** 60]), [4]],
    ['u8', new Uint8Array([0, 1, 20, 255, 7, 9]), [2, 3]],
    ['i32', new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0]), [3, 1]],
    ['i64', new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n]), [2]],
    ['scalar', new Float32Array([2.5]), []],
    ['empty', new Float32Array(0), [0, 3]],
  ];
}

test('round trip is bit-exact and the header is NumPy v1.0 padded to 64', () => {
  for (const [name, data, shape] of samples()) {
    const path = join(dir, `${name}.npy`);
    writeNpy(path, data, shape);
    const raw = readFileSync(path);
    assert.equal(raw[6], 1);
    assert.equal(raw[7], 0);
    const dataStart = 10 + raw.readUInt16LE(8);
    assert.equal(dataStart % 64, 0, `${name}: data not 64-aligned`);
    assert.equal(raw[dataStart - 1], 0x0a, `${name}: header does not end with a newline`);
    assert.ok(raw.equals(encodeNpy(data, shape)));
    const back = readNpy(path);
    assert.deepEqual(back.shape, shape, name);
    assert.equal(back.data.constructor, data.constructor, name);
    assert.ok(bytesOf(back.data).equals(bytesOf(data)), `${name}: bytes differ`);
  }
});

test('writer rejects a shape that does not match the data', () => {
  assert.throws(() => writeNpy(join(dir, 'x.npy'), new Float32Array(5), [2, 3]), /\(2, 3\) has 6 elements but data has 5/);
  assert.throws(() => encodeNpy(new Float32Array(1), [-1]), /non-negative/);
  assert.throws(() => encodeNpy(new Int16Array(2) as unknown as Float32Array, [2]), /unsupported array type Int16Array/);
});

function rawNpy(header: string, data: Buffer, major = 1): Buffer {
  const h = Buffer.from(header, 'latin1');
  const pre = Buffer.alloc(major === 1 ? 10 : 12);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]).copy(pre);
  if (major === 1) pre.writeUInt16LE(h.length, 8);
  else pre.writeUInt32LE(h.length, 8);
  return Buffer.concat([pre, h, data]);
}

test('bad files fail with a clear error naming the file', () => {
  const good = encodeNpy(new Float32Array([1, 2, 3, 4]), [2, 2]);
  const cases: [string, Buffer, RegExp][] = [
    ['magic', Buffer.from('PK\x03\x04 not numpy at all'), /bad magic/],
    ['short', good.subarray(0, 5), /bad magic/],
    ['header', good.subarray(0, 40), /truncated .npy header/],
    ['data', good.subarray(0, good.length - 1), /truncated .npy data .* needs 16 bytes, file has 15/],
    ['trailing', Buffer.concat([good, Buffer.from([0])]), /1 unexpected bytes/],
    ['version', rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", Buffer.alloc(4), 4), /unsupported .npy version 4/],
    ['fortran', rawNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", Buffer.alloc(16)), /Fortran-order/],
    ['bigendian', rawNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", Buffer.alloc(8)), /big-endian dtype '>f4'/],
    ['complex', rawNpy("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", Buffer.alloc(16)), /unsupported dtype '<c8'/],
    ['structured', rawNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n", Buffer.alloc(8)), /structured/],
    ['syntax', rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) \n", Buffer.alloc(8)), /bad .npy header/],
    ['shape', rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n", Buffer.alloc(8)), /bad shape/],
  ];
  for (const [label, buf, re] of cases) {
    const path = join(dir, `bad-${label}.npy`);
    writeFileSync(path, buf);
    assert.throws(() => readNpy(path), (e: Error) => {
      assert.match(e.message, re, label);
      assert.ok(e.message.includes(path), `${label}: message does not name the file`);
      return true;
    });
  }
  assert.throws(() => readNpy(join(dir, 'missing.npy')), /cannot read file \(ENOENT\)/);
});

test('v2 headers and misaligned data are read', () => {
  const vals = new Float64Array([1.25, -3, 1e-300]);
  // Header length chosen so the data starts at an odd offset: the reader must copy.
  let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
  while ((12 + h.length + 1) % 8 !== 5) h += ' ';
  const a = parseNpy(rawNpy(h + '\n', Buffer.from(vals.buffer), 2));
  assert.deepEqual([...(a.data as Float64Array)], [...vals]);
  assert.equal(npyHeader('uint8', [3]).toString('latin1').includes("'shape': (3,)"), true);
});

// NumPy reads our files; we read NumPy's (v1, v2 and v3 headers, every supported dtype).
const PY = String.raw`
import json, sys
import numpy as np
mode, d = sys.argv[1], sys.argv[2]
if mode == 'load':
    out = {}
    for name in sys.argv[3:]:
        a = np.load(f'{d}/{name}.npy')
        out[name] = {'descr': a.dtype.str, 'shape': list(a.shape), 'c': bool(a.flags.c_contiguous), 'hex': a.tobytes().hex()}
    print(json.dumps(out))
else:
    from numpy.lib import format as fmt
    rng = np.random.default_rng(5)
    arrs = {
        'f4': rng.standard_normal((21, 3, 4)).astype('<f4'),
        'f8': rng.standard_normal((2, 3)),
        'u1': rng.integers(0, 256, (2, 5, 7)).astype(np.uint8),
        'i4': np.array([[-5, 2**31 - 1]], dtype='<i4'),
        'i8': np.array([-2**63, 3, 2**63 - 1], dtype='<i8'),
        'scalar': np.array(7.5, dtype='<f4'),
    }
    out = {}
    for name, a in arrs.items():
        np.save(f'{d}/np_{name}.npy', a)
        out['np_' + name] = {'shape': list(a.shape), 'hex': a.tobytes().hex()}
    for ver in [(2, 0), (3, 0)]:
        a = rng.standard_normal((3, 2)).astype('<f4')
        name = f'np_v{ver[0]}'
        with open(f'{d}/{name}.npy', 'wb') as f:
            fmt.write_array(f, a, version=ver)
        out[name] = {'shape': list(a.shape), 'hex': a.tobytes().hex()}
    np.save(f'{d}/np_fortran.npy', np.asfortranarray(rng.standard_normal((3, 4)).astype('<f4')))
    np.save(f'{d}/np_big.npy', np.arange(3, dtype='>f4'))
    print(json.dumps(out))
`;

const py = findPython(['numpy']);

test('cross-check with numpy.load and np.save', { skip: requires(py !== null, 'python3 with numpy not found (apt-get install python3-numpy)') }, () => {
  if (!py) return;
  const list = samples();
  for (const [name, data, shape] of list) writeNpy(join(dir, `${name}.npy`), data, shape);
  const seen = JSON.parse(runPython(py, PY, ['load', dir, ...list.map(([n]) => n)])) as Record<string, { descr: string; shape: number[]; c: boolean; hex: string }>;
  const descr: Record<string, string> = { f32: '<f4', f64: '<f8', u8: '|u1', i32: '<i4', i64: '<i8', scalar: '<f4', empty: '<f4' };
  for (const [name, data, shape] of list) {
    assert.equal(seen[name]!.descr, descr[name], name);
    assert.deepEqual(seen[name]!.shape, shape, name);
    assert.ok(seen[name]!.c, name);
    assert.equal(seen[name]!.hex, bytesOf(data).toString('hex'), name);
  }

  const expected = JSON.parse(runPython(py, PY, ['save', dir])) as Record<string, { shape: number[]; hex: string }>;
  for (const [name, e] of Object.entries(expected)) {
    const a = readNpy(join(dir, `${name}.npy`));
    assert.deepEqual(a.shape, e.shape, name);
    assert.equal(bytesOf(a.data).toString('hex'), e.hex, name);
  }
  assert.equal(readNpy(join(dir, 'np_u1.npy')).dtype, 'uint8');
  assert.equal(readNpy(join(dir, 'np_i8.npy')).dtype, 'int64');
  assert.throws(() => readNpy(join(dir, 'np_fortran.npy')), /Fortran-order/);
  assert.throws(() => readNpy(join(dir, 'np_big.npy')), /big-endian/);
});
