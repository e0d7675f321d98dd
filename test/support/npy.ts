// The .npy reader the tests use to read what the CLI and PyTorch wrote (the product only writes
// .npy: src/io/npy.ts), and the in-memory encoder for the writer's own tests.
import { assertLittleEndianHost, readInputSync, typedView, type ArrayViewCtor } from '../../src/io/read-file.js';
import { MAGIC, checkShape, dtypeOf, npyHeader, type NpyData, type NpyDtype } from '../../src/io/npy.js';

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

type Ctor = ArrayViewCtor<NpyData>;

const DESCR: Record<string, { dtype: NpyDtype; ctor: Ctor }> = {
  '<f4': { dtype: 'float32', ctor: Float32Array as unknown as Ctor },
  '<f8': { dtype: 'float64', ctor: Float64Array as unknown as Ctor },
  '|u1': { dtype: 'uint8', ctor: Uint8Array as unknown as Ctor },
  '<u1': { dtype: 'uint8', ctor: Uint8Array as unknown as Ctor },
  '<i4': { dtype: 'int32', ctor: Int32Array as unknown as Ctor },
  '<i8': { dtype: 'int64', ctor: BigInt64Array as unknown as Ctor },
};

/**
 * The header's Python dict literal (str keys; str, bool and int-tuple values) read as JSON: strings
 * double-quoted, tuples as arrays, True/False lower-cased, trailing commas and Python 2's `L`
 * suffix dropped. NumPy writes nothing else there (np.lib.format writes it with repr).
 */
function parseHeaderDict(src: string, where: string): unknown {
  const json = src.replace(/'([^']*)'|"[^"]*"|[()]|True|False|(?<=\d)L\b|,(?=\s*[)}\]])/g, (m: string, quoted: string | undefined) => {
    if (quoted !== undefined) return JSON.stringify(quoted);
    return ({ '(': '[', ')': ']', True: 'true', False: 'false' } as Record<string, string>)[m] ?? (m[0] === '"' ? m : '');
  });
  try {
    return JSON.parse(json);
  } catch (e) {
    throw new Error(`${where}: bad .npy header (${(e as Error).message}): ${src.trim()}`);
  }
}

/** Parses a .npy image held in memory. The result views `buf` when the data is aligned, else copies. */
export function parseNpy(buf: Uint8Array, where = 'npy'): NpyArray {
  assertLittleEndianHost('npy');
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || !b.subarray(0, 6).equals(MAGIC)) throw new Error(`${where}: not a .npy file (bad magic)`);
  const major = b[6]!;
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = b.readUInt16LE(8);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (b.length < 12) throw new Error(`${where}: truncated .npy header`);
    headerLen = b.readUInt32LE(8);
    headerStart = 12;
  } else {
    throw new Error(`${where}: unsupported .npy version ${major}.${b[7]}`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > b.length) throw new Error(`${where}: truncated .npy header (header length ${headerLen}, file ${b.length} bytes)`);
  // v1/v2 headers are latin-1, v3 UTF-8; only ASCII matters for the fields we read.
  const text = b.subarray(headerStart, dataStart).toString(major === 3 ? 'utf8' : 'latin1');
  const header = parseHeaderDict(text, where);
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new Error(`${where}: .npy header is not a dict`);
  const { descr, fortran_order: fortran, shape } = header as Record<string, unknown>;
  if (typeof descr !== 'string') throw new Error(`${where}: unsupported dtype ${JSON.stringify(descr)} (structured arrays are not supported)`);
  if (descr[0] === '>') throw new Error(`${where}: big-endian dtype '${descr}' is not supported (save with '<' byte order)`);
  const info = DESCR[descr] ?? (descr === '=f4' || descr === '=f8' || descr === '=i4' || descr === '=i8' ? DESCR[`<${descr.slice(1)}`] : undefined);
  if (!info) throw new Error(`${where}: unsupported dtype '${descr}' (supported: ${Object.keys(DESCR).join(', ')})`);
  if (typeof fortran !== 'boolean') throw new Error(`${where}: .npy header lacks fortran_order`);
  if (fortran) throw new Error(`${where}: Fortran-order arrays are not supported (save a C-contiguous array, e.g. np.ascontiguousarray)`);
  if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${where}: bad shape in .npy header: ${JSON.stringify(shape)}`);
  }
  const dims = shape as number[];
  const count = dims.reduce((a, d) => a * d, 1);
  const bytes = count * info.ctor.BYTES_PER_ELEMENT;
  const have = b.length - dataStart;
  if (have < bytes) throw new Error(`${where}: truncated .npy data (shape (${dims.join(', ')}) ${descr} needs ${bytes} bytes, file has ${have})`);
  if (have > bytes) throw new Error(`${where}: ${have - bytes} unexpected bytes after the .npy data`);
  return { dtype: info.dtype, shape: [...dims], data: typedView(info.ctor, b.subarray(dataStart, dataStart + bytes)) };
}

/** Reads a .npy file. */
export function readNpy(path: string): NpyArray {
  return parseNpy(readInputSync(path), path);
}

/** Encodes an array (C order; dtype from the typed array) to .npy bytes. */
export function encodeNpy(data: NpyData, shape: number[]): Buffer {
  assertLittleEndianHost('npy');
  checkShape(data, shape, 'npy');
  const header = npyHeader(dtypeOf(data), shape);
  return Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

