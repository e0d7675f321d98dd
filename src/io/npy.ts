// NumPy .npy files, written (`fcn predict --logits`; the tests read them with test/support/npy.ts):
// magic "\x93NUMPY", version, header length (uint16 for v1, uint32 for v2/v3), a Python dict
// literal {'descr': ..., 'fortran_order': ..., 'shape': (...)}, then the data. Writing uses
// v1.0 with the header padded so the data starts at a multiple of 64, as NumPy does.
import { writeFileAtomic } from './atomic.js';
import { assertLittleEndianHost } from './read-file.js';

export type NpyDtype = 'float32' | 'float64' | 'uint8' | 'int32' | 'int64';

export type NpyData = Float32Array | Float64Array | Uint8Array | Int32Array | BigInt64Array;

const WRITE_DESCR: Record<Exclude<NpyDtype, 'int64'>, string> = { float32: '<f4', float64: '<f8', uint8: '|u1', int32: '<i4' };

export const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

export function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  throw new Error(`npy: unsupported array type ${(data as object)?.constructor?.name}`);
}

/** The .npy header bytes (v1.0, padded with spaces and a newline so the data starts at a multiple of 64). */
export function npyHeader(dtype: NpyDtype, shape: number[]): Buffer {
  const descr = dtype === 'int64' ? '<i8' : WRITE_DESCR[dtype];
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  const headerLen = total - 10;
  if (headerLen > 0xffff) throw new Error(`npy: shape (${shape.join(', ')}) makes a header too long for format v1.0`);
  const out = Buffer.alloc(total, 0x20);
  MAGIC.copy(out, 0);
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(headerLen, 8);
  out.write(dict, 10, 'latin1');
  out[total - 1] = 0x0a;
  return out;
}

export function checkShape(data: NpyData, shape: number[], where: string): void {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${where}: shape must be non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const count = shape.reduce((a, d) => a * d, 1);
  if (count !== data.length) throw new Error(`${where}: shape (${shape.join(', ')}) has ${count} elements but data has ${data.length}`);
}

/** Writes an array (C order; dtype from the typed array: float32, float64, uint8, int32, int64) atomically. */
export function writeNpy(path: string, data: NpyData, shape: number[]): void {
  assertLittleEndianHost('npy');
  checkShape(data, shape, path);
  const header = npyHeader(dtypeOf(data), shape);
  writeFileAtomic(path, [header, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)]);
}
