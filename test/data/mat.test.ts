import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseMat, readMat, readSbdLabel, toRowMajor, type MatNumeric, type MatStruct } from '../../src/data/mat.js';
import { needShared, repoRoot, sbdRoot, tempDir } from './helpers.js';

const riderMat = join(sbdRoot, 'cls', 'rider.mat');

describe('MAT-file reader on the real SBD file', () => {
  test('rider.mat reads to a 333×500 map with classes {0, 13, 15}', { skip: needShared(riderMat) }, async () => {
    const l = await readSbdLabel(riderMat);
    assert.equal(l.height, 333);
    assert.equal(l.width, 500);
    assert.deepEqual([...new Set(l.data)].sort((a, b) => a - b), [0, 13, 15]);
  });
  test('rider.mat holds GTcls with its three fields, Boundaries a 20×1 cell of sparse maps stepped over', { skip: needShared(riderMat) }, async () => {
    const m = await readMat(riderMat);
    const g = m.variables['GTcls'] as MatStruct;
    assert.equal(g.kind, 'struct');
    assert.deepEqual([...g.fieldNames].sort(), ['Boundaries', 'CategoriesPresent', 'Segmentation']);
    const b = g.elements[0]!['Boundaries']!;
    assert.equal(b.kind, 'cell');
    if (b.kind !== 'cell') return;
    assert.deepEqual(b.dims, [20, 1]);
    assert.ok(b.items.every((it) => it.kind === 'unsupported' && /sparse/.test(it.reason) && it.dims[0] === 333 && it.dims[1] === 500));
    const cats = g.elements[0]!['CategoriesPresent'] as MatNumeric;
    assert.deepEqual([...cats.data].map(Number).sort((x, y) => x - y), [13, 15]);
  });
});

describe('MAT-file reader on scipy-written fixtures', () => {
  let dir = '';
  let cleanup = () => {};
  let expected: any;
  before(() => {
    ({ dir, cleanup } = tempDir('mat'));
    execFileSync('python3', [join(repoRoot, 'scripts', 'make_mat_fixtures.py'), dir], { stdio: 'pipe' });
    expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  });
  after(() => cleanup());

  for (const suffix of ['', '_z']) {
    const kind = suffix ? 'compressed' : 'uncompressed';
    test(`GTcls.Segmentation (${kind}) equals what numpy wrote`, async () => {
      const l = await readSbdLabel(join(dir, `gtcls${suffix}.mat`));
      assert.equal(l.height, expected.gtcls.height);
      assert.equal(l.width, expected.gtcls.width);
      assert.deepEqual(Array.from(l.data), expected.gtcls.segmentation.flat());
      const g = (await readMat(join(dir, `gtcls${suffix}.mat`))).variables['GTcls'] as MatStruct;
      const b = g.elements[0]!['Boundaries']!;
      assert.ok(b.kind === 'cell');
      assert.equal(b.items.length, expected.gtcls.boundary_nnz.length);
      assert.ok(b.items.every((s) => s.kind === 'unsupported' && s.reason === 'sparse arrays are not decoded'));
      assert.deepEqual(Array.from((g.elements[0]!['CategoriesPresent'] as MatNumeric).data, Number), expected.gtcls.categories);
    });

    test(`numeric classes, char, logical, cells, nested structs; complex stepped over (${kind})`, async () => {
      const v = (await readMat(join(dir, `mixed${suffix}.mat`))).variables;
      const e = expected.mixed;
      const rows = (name: string) => {
        const a = v[name] as MatNumeric;
        assert.equal(a.kind, 'numeric', name);
        const [r, c] = a.dims as [number, number];
        const rm = Array.from(toRowMajor(a.data, r, c) as ArrayLike<number>);
        return Array.from({ length: r }, (_, i) => rm.slice(i * c, (i + 1) * c));
      };
      assert.deepEqual(rows('d'), e.d);
      assert.equal((v['d'] as MatNumeric).class, 'double');
      assert.deepEqual(rows('small_ints_as_double'), e.small_ints_as_double);
      assert.ok((v['small_ints_as_double'] as MatNumeric).data instanceof Float64Array);
      assert.deepEqual(rows('i16'), e.i16);
      assert.equal((v['i16'] as MatNumeric).class, 'int16');
      assert.deepEqual(rows('u16'), e.u16);
      assert.deepEqual(rows('i32'), e.i32);
      const f32 = rows('f32').flat();
      e.f32.flat().forEach((x: number, i: number) => assert.ok(Math.abs(x - f32[i]!) < 1e-6));
      const cube = v['cube'] as MatNumeric;
      assert.deepEqual(cube.dims, e.cube_dims);
      assert.deepEqual(Array.from(cube.data as Uint8Array), e.cube_colmajor);
      const flag = v['flag'] as MatNumeric;
      assert.equal(flag.logical, true);
      assert.deepEqual(Array.from(flag.data as Uint8Array), e.flag);
      const z = v['z']!;
      assert.ok(z.kind === 'unsupported' && z.reason === 'complex arrays are not decoded');
      assert.deepEqual(z.dims, [1, 2]);
      const text = v['text']!;
      assert.ok(text.kind === 'char' && text.value === e.text);
      const cells = v['cells']!;
      assert.ok(cells.kind === 'cell');
      assert.deepEqual(cells.dims, [1, 3]);
      assert.deepEqual(cells.items.map((i) => i.kind), ['numeric', 'char', 'numeric']);
      const nested = v['nested'] as MatStruct;
      const inner = nested.elements[0]!['inner'] as MatStruct;
      assert.equal(((inner.elements[0]!['value'] as MatNumeric).data as Uint8Array)[0], 42);
      const nm = nested.elements[0]!['name']!;
      assert.ok(nm.kind === 'char' && nm.value === 'n');
    });
  }

  test('a struct without Segmentation names the file and the fields', async () => {
    const p = join(dir, 'nofield.mat');
    await assert.rejects(readSbdLabel(p), (e: Error) => e.message.startsWith(`${p}: `) && /no field "Segmentation"/.test(e.message) && /Other/.test(e.message));
  });
  test('a level-4 file is refused as not level 5', async () => {
    const p = join(dir, 'v4.mat');
    await assert.rejects(readMat(p), (e: Error) => e.message.startsWith(`${p}: `) && /not a MATLAB level-5/.test(e.message));
  });
  test('a big-endian file is refused as not supported', async () => {
    const p = join(dir, 'be.mat');
    const b = readFileSync(join(dir, 'gtcls.mat'));
    b.write('MI', 126, 'latin1');
    writeFileSync(p, b);
    await assert.rejects(readMat(p), (e: Error) => e.message.startsWith(`${p}: `) && /big-endian MAT-files are not supported/.test(e.message));
  });
  test('a MATLAB 7.3 (HDF5) file gets a clear "not supported" error', async () => {
    const p = join(dir, 'v73.mat');
    const b = Buffer.alloc(1024);
    b.write('MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .', 0, 'latin1');
    b.write('IM', 126, 'latin1');
    Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b, 512);
    writeFileSync(p, b);
    await assert.rejects(readSbdLabel(p), (e: Error) => e.message.startsWith(`${p}: `) && /7\.3 \(HDF5\).*not supported/.test(e.message));
  });
  test('truncated and corrupt files give errors naming the file', async () => {
    for (const name of ['gtcls.mat', 'gtcls_z.mat']) {
      const full = readFileSync(join(dir, name));
      const p = join(dir, `cut_${name}`);
      writeFileSync(p, full.subarray(0, Math.floor(full.length * 0.6)));
      await assert.rejects(readSbdLabel(p), (e: Error) => e.message.startsWith(`${p}: `) && /truncat|inflate|unexpected end/i.test(e.message), name);
    }
    const junk = join(dir, 'junk.mat');
    writeFileSync(junk, Buffer.from('this is not a mat file at all'));
    await assert.rejects(readSbdLabel(junk), (e: Error) => e.message.startsWith(`${junk}: `));
    await assert.rejects(readSbdLabel(join(dir, 'absent.mat')), /absent\.mat: cannot read file \(ENOENT\)/);
  });
  test('parseMat works on a buffer and reports the source name', () => {
    const bytes = readFileSync(join(dir, 'gtcls_z.mat'));
    const m = parseMat(bytes, 'mem');
    assert.ok(m.header.startsWith('MATLAB 5.0 MAT-file'));
    assert.throws(() => parseMat(bytes.subarray(0, 100), 'mem'), /^Error: mem: too short/);
  });
});
