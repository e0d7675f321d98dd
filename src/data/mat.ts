// MATLAB level-5 MAT-file reader (the format of SBD's cls/*.mat and inst/*.mat).
//
// Hand-written because no well-kept JavaScript package reads this format: the npm packages
// that exist are unmaintained and skip parts of it (compressed elements, structs, cells).
// The format is small and fully documented in MathWorks' "MAT-File Format" (matfile_format.pdf):
// a 128-byte header, then tagged data elements; miCOMPRESSED elements hold one zlib-deflated
// element (node:zlib inflates them).
// It decodes what SBD's files are read for: structs, cells, char and numeric arrays up to 32 bits.
// Every element carries its length, so other arrays (sparse, like SBD's Boundaries; complex;
// 64-bit integers; objects) are stepped over and left as `unsupported` values that say why.
// Big-endian files and MATLAB 7.3 (HDF5) files are refused with a clear message.
import { inflateSync } from 'node:zlib';
import { fcnErrorClass } from '../errors.js';
import { readInput } from '../io/read-file.js';

// Data types (miXXX) of tagged elements.
const miINT8 = 1, miUINT8 = 2, miINT16 = 3, miUINT16 = 4, miINT32 = 5, miUINT32 = 6,
  miSINGLE = 7, miDOUBLE = 9, miMATRIX = 14, miCOMPRESSED = 15, miUTF8 = 16, miUTF16 = 17;

// Array classes (mxXXX_CLASS) inside miMATRIX; 6-13 are the decoded numeric ones (NUMERIC_CLASSES).
const mxCELL = 1, mxSTRUCT = 2, mxCHAR = 4, mxDOUBLE = 6;

export type MatNumericClass = 'double' | 'single' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32';
export type MatTypedArray = Float64Array | Float32Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array;

/** A numeric or logical array. `data` is in MATLAB's column-major order; see `toRowMajor`. */
export interface MatNumeric {
  kind: 'numeric';
  class: MatNumericClass;
  logical: boolean;
  dims: number[];
  data: MatTypedArray;
}
export interface MatChar { kind: 'char'; dims: number[]; value: string }
export interface MatCell { kind: 'cell'; dims: number[]; items: MatValue[] }
export interface MatStruct {
  kind: 'struct';
  dims: number[];
  fieldNames: string[];
  /** One record per element, column-major. */
  elements: Record<string, MatValue>[];
}
/** An array the reader steps over without decoding; `reason` says what it is. */
export interface MatUnsupported { kind: 'unsupported'; dims: number[]; reason: string }
export type MatValue = MatNumeric | MatChar | MatCell | MatStruct | MatUnsupported;

export interface MatFile {
  header: string;
  variables: Record<string, MatValue>;
}

const MatError = fcnErrorClass('BAD_MAT_FILE');

/** Parses a MAT-file's bytes. `source` names the file in error messages. */
export function parseMat(bytes: Uint8Array, source = '<buffer>'): MatFile {
  try {
    return parseMatInner(bytes);
  } catch (e) {
    const problem = e instanceof MatError ? e.message : `malformed MAT-file (${(e as Error).message})`;
    throw new MatError(problem, { subject: source });
  }
}

/** Reads and parses a MAT-file. */
export async function readMat(path: string): Promise<MatFile> {
  return parseMat(await readInput(path), path);
}

function parseMatInner(bytes: Uint8Array): MatFile {
  const HDF5_SIG = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];
  const ascii = (a: number, b: number) => Buffer.from(bytes.subarray(a, Math.min(b, bytes.length))).toString('latin1');
  const header = ascii(0, 116).replace(/[\0 ]+$/, '');
  const isHdf5At = (off: number) => bytes.length >= off + 8 && HDF5_SIG.every((v, i) => bytes[off + i] === v);
  if (header.startsWith('MATLAB 7.3') || isHdf5At(512) || isHdf5At(0)) {
    throw new MatError('MATLAB 7.3 (HDF5) MAT-files are not supported; save it with -v7 (or scipy.io.savemat)');
  }
  if (!header.startsWith('MATLAB')) {
    throw new MatError('not a MATLAB level-5 MAT-file (no "MATLAB" header text; level-4 files are not supported)');
  }
  if (bytes.length < 128) throw new MatError(`too short for a MAT-file (${bytes.length} bytes, header needs 128)`);
  const endian = ascii(126, 128);
  if (endian === 'MI') throw new MatError('big-endian MAT-files are not supported; save it on a little-endian machine (or with scipy.io.savemat)');
  if (endian !== 'IM') throw new MatError(`bad endian indicator ${JSON.stringify(endian)} at byte 126`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint16(124, true);
  if (version !== 0x0100) throw new MatError(`unsupported MAT-file version 0x${version.toString(16)} (expected 0x0100)`);

  const variables: Record<string, MatValue> = {};
  let off = 128;
  while (off < bytes.length) {
    if (bytes.length - off < 8) {
      // Trailing padding bytes are harmless; anything else is a truncated tag.
      if (bytes.subarray(off).every((b) => b === 0)) break;
      throw new MatError(`truncated data element tag at byte ${off}`);
    }
    const el = readTag(bytes, dv, off);
    if (el.dataStart + el.nbytes > bytes.length) throw new MatError(`truncated: element at byte ${off} needs ${el.nbytes} bytes, file ends after ${bytes.length - el.dataStart}`);
    let matrixBytes: Uint8Array;
    if (el.type === miCOMPRESSED) {
      let inflated: Buffer;
      try {
        inflated = inflateSync(bytes.subarray(el.dataStart, el.dataStart + el.nbytes));
      } catch (e) {
        throw new MatError(`compressed element at byte ${off} does not inflate (${(e as Error).message})`);
      }
      const idv = new DataView(inflated.buffer, inflated.byteOffset, inflated.byteLength);
      const inner = readTag(inflated, idv, 0);
      if (inner.type !== miMATRIX) throw new MatError(`compressed element at byte ${off} holds type ${inner.type}, expected miMATRIX`);
      if (inner.dataStart + inner.nbytes > inflated.length) throw new MatError(`compressed element at byte ${off} is truncated`);
      matrixBytes = inflated.subarray(inner.dataStart, inner.dataStart + inner.nbytes);
    } else if (el.type === miMATRIX) {
      matrixBytes = bytes.subarray(el.dataStart, el.dataStart + el.nbytes);
    } else {
      throw new MatError(`unexpected top-level element of type ${el.type} at byte ${off}`);
    }
    const { name, value } = parseMatrix(matrixBytes, `variable at byte ${off}`);
    variables[name] = value;
    // Compressed elements are not padded; uncompressed ones end on an 8-byte boundary.
    off = el.type === miCOMPRESSED ? el.dataStart + el.nbytes : el.end;
  }
  return { header, variables };
}

interface Tag { type: number; nbytes: number; dataStart: number; end: number }

function readTag(bytes: Uint8Array, dv: DataView, off: number): Tag {
  // A small element's tag needs 4 bytes, a regular one 8 (checked below).
  if (off + 4 > bytes.length) throw new MatError(`truncated data element tag at byte ${off}`);
  const first = dv.getUint32(off, true);
  if (first >>> 16 !== 0) {
    // Small data element: 2 bytes size, 2 bytes type, up to 4 bytes data, in one 8-byte slot.
    const nbytes = first >>> 16;
    const type = first & 0xffff;
    if (nbytes > 4) throw new MatError(`bad small data element at byte ${off} (${nbytes} bytes)`);
    return { type, nbytes, dataStart: off + 4, end: off + 8 };
  }
  if (off + 8 > bytes.length) throw new MatError(`truncated data element tag at byte ${off}`);
  const nbytes = dv.getUint32(off + 4, true);
  return { type: first, nbytes, dataStart: off + 8, end: off + 8 + nbytes + ((8 - (nbytes % 8)) % 8) };
}

/** Reads the sub-elements of an miMATRIX body one after another. */
class Reader {
  private off = 0;
  private readonly dv: DataView;
  constructor(private readonly bytes: Uint8Array, private readonly where: string) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get done(): boolean {
    return this.off >= this.bytes.length;
  }
  next(what: string): { type: number; data: Uint8Array } {
    if (this.off >= this.bytes.length) throw new MatError(`${this.where}: missing ${what}`);
    const tag = readTag(this.bytes, this.dv, this.off);
    if (tag.dataStart + tag.nbytes > this.bytes.length) throw new MatError(`${this.where}: truncated ${what}`);
    const data = this.bytes.subarray(tag.dataStart, tag.dataStart + tag.nbytes);
    this.off = Math.min(tag.end, this.bytes.length);
    return { type: tag.type, data };
  }
}

type MatArrayCtor = { new (buffer: ArrayBuffer): MatTypedArray; from(values: ArrayLike<number>): MatTypedArray; BYTES_PER_ELEMENT: number };

/** The typed array of each numeric data type (miXXX). */
const MI_ARRAYS: Record<number, MatArrayCtor> = {
  [miINT8]: Int8Array, [miUINT8]: Uint8Array, [miINT16]: Int16Array, [miUINT16]: Uint16Array,
  [miINT32]: Int32Array, [miUINT32]: Uint32Array, [miSINGLE]: Float32Array, [miDOUBLE]: Float64Array,
};

/** Decodes a numeric element's payload into a typed array of its own storage type. */
function decodeNumeric(type: number, data: Uint8Array, where: string): MatTypedArray {
  const Ctor = MI_ARRAYS[type];
  if (Ctor === undefined) throw new MatError(`${where}: unexpected data type ${type} for numeric data`);
  const size = Ctor.BYTES_PER_ELEMENT;
  if (data.length % size !== 0) throw new MatError(`${where}: ${data.length} bytes is not a whole number of ${size}-byte values`);
  // Copy into a fresh buffer: a typed array must start at a multiple of its element size.
  return new Ctor(new Uint8Array(data).buffer);
}

/** The numeric array classes mxDOUBLE_CLASS (6) to mxUINT32_CLASS (13), in order: names and typed arrays. */
const NUMERIC_CLASSES: readonly [MatNumericClass, MatArrayCtor][] = [
  ['double', Float64Array], ['single', Float32Array], ['int8', Int8Array], ['uint8', Uint8Array],
  ['int16', Int16Array], ['uint16', Uint16Array], ['int32', Int32Array], ['uint32', Uint32Array],
];

/** The array classes stepped over undecoded, by mxXXX_CLASS number, for their `unsupported` reason. */
const UNDECODED_CLASSES: Record<number, string> = { 3: 'object', 5: 'sparse', 14: 'int64', 15: 'uint64' };

function decodeText(type: number, data: Uint8Array, where: string): string {
  if (type === miUTF8 || type === miINT8 || type === miUINT8) return Buffer.from(data).toString('utf8');
  // MATLAB itself stores char arrays as UTF-16 code units.
  if (type === miUTF16 || type === miUINT16 || type === miINT16) return Buffer.from(data).toString('utf16le');
  throw new MatError(`${where}: unexpected data type ${type} for text`);
}

/** What precedes an array's data: its class, flags, dimensions and name. */
interface MatrixHeader {
  cls: number;
  complex: boolean;
  logical: boolean;
  dims: number[];
  count: number;
  name: string;
  /** How errors name this array. */
  here: string;
}

function readMatrixHeader(r: Reader, where: string): MatrixHeader {
  const flagsEl = r.next('array flags');
  if (flagsEl.type !== miUINT32 || flagsEl.data.length < 8) throw new MatError(`${where}: bad array flags subelement`);
  const flags = new DataView(flagsEl.data.buffer, flagsEl.data.byteOffset, 8).getUint32(0, true);
  const dimsEl = r.next('dimensions');
  const dims = Array.from(decodeNumeric(dimsEl.type, dimsEl.data, `${where} dimensions`));
  if (dims.length < 2 || dims.some((d) => !Number.isInteger(d) || d < 0)) throw new MatError(`${where}: bad dimensions [${dims.join(', ')}]`);
  const nameEl = r.next('array name');
  const name = decodeText(nameEl.type === 0 ? miINT8 : nameEl.type, nameEl.data, where);
  return {
    cls: flags & 0xff, complex: (flags & 0x0800) !== 0, logical: (flags & 0x0200) !== 0,
    dims, count: dims.reduce((a, b) => a * b, 1), name, here: name ? `variable "${name}"` : where,
  };
}

function parseMatrix(body: Uint8Array, where: string): { name: string; value: MatValue } {
  if (body.length === 0) {
    // An empty miMATRIX element stands for an empty array (e.g. an empty struct field).
    return { name: '', value: { kind: 'numeric', class: 'double', logical: false, dims: [0, 0], data: new Float64Array(0) } };
  }
  const r = new Reader(body, where);
  const h = readMatrixHeader(r, where);
  const { cls, dims, count, name, here } = h;
  const numeric = NUMERIC_CLASSES[cls - mxDOUBLE];
  if (numeric && !h.complex) {
    const real = r.next('real part');
    const data = decodeNumeric(real.type, real.data, here);
    if (data.length !== count) throw new MatError(`${here}: has ${data.length} values, dimensions [${dims.join('×')}] need ${count}`);
    // MATLAB may store data in a smaller type than the array's class (e.g. a double array as miUINT8).
    const [className, Ctor] = numeric;
    return { name, value: { kind: 'numeric', class: className, logical: h.logical, dims, data: data instanceof Ctor ? data : Ctor.from(data) } };
  }
  switch (cls) {
    case mxCHAR: {
      const el = r.done ? { type: miUTF8, data: new Uint8Array(0) } : r.next('characters');
      return { name, value: { kind: 'char', dims, value: decodeText(el.type, el.data, here) } };
    }
    case mxCELL: {
      const items: MatValue[] = [];
      for (let i = 0; i < count; i++) {
        const el = r.next(`cell ${i + 1} of ${count}`);
        if (el.type !== miMATRIX) throw new MatError(`${here}: cell ${i + 1} is type ${el.type}, expected miMATRIX`);
        items.push(parseMatrix(el.data, `${here}{${i + 1}}`).value);
      }
      return { name, value: { kind: 'cell', dims, items } };
    }
    case mxSTRUCT:
      return { name, value: parseStruct(r, h) };
    default: {
      const what = numeric ? 'complex' : (UNDECODED_CLASSES[cls] ?? `class ${cls} (function handle or opaque object)`);
      return { name, value: { kind: 'unsupported', dims, reason: `${what} arrays are not decoded` } };
    }
  }
}

function parseStruct(r: Reader, { dims, count, here }: MatrixHeader): MatStruct {
  const lenEl = r.next('field name length');
  const fieldLen = decodeNumeric(lenEl.type, lenEl.data, here)[0] ?? 0;
  const namesEl = r.next('field names');
  const fieldNames: string[] = [];
  if (fieldLen > 0) {
    if (namesEl.data.length % fieldLen !== 0) throw new MatError(`${here}: field names block of ${namesEl.data.length} bytes is not a multiple of ${fieldLen}`);
    for (let o = 0; o < namesEl.data.length; o += fieldLen) {
      const raw = namesEl.data.subarray(o, o + fieldLen);
      const z = raw.indexOf(0);
      fieldNames.push(Buffer.from(z >= 0 ? raw.subarray(0, z) : raw).toString('utf8'));
    }
  }
  const elements: Record<string, MatValue>[] = [];
  for (let i = 0; i < count; i++) {
    const rec: Record<string, MatValue> = {};
    for (const f of fieldNames) {
      const el = r.next(`field "${f}" of element ${i + 1}`);
      if (el.type !== miMATRIX) throw new MatError(`${here}: field "${f}" is type ${el.type}, expected miMATRIX`);
      rec[f] = parseMatrix(el.data, `${here}.${f}`).value;
    }
    elements.push(rec);
  }
  return { kind: 'struct', dims, fieldNames, elements };
}

/** Copies a 2-D column-major array into row-major order (rows × cols). */
export function toRowMajor<T extends MatTypedArray>(a: T, rows: number, cols: number): T {
  const Ctor = a.constructor as new (n: number) => T;
  const out = new Ctor(rows * cols);
  for (let c = 0; c < cols; c++) {
    const base = c * rows;
    for (let y = 0; y < rows; y++) out[y * cols + c] = a[base + y]!;
  }
  return out;
}

export interface LabelMap { data: Uint8Array; width: number; height: number }

/**
 * Reads an SBD class-segmentation file (`cls/<id>.mat`): struct `GTcls` (or `GTinst`) with
 * field `Segmentation`, an H×W integer map. Returns it row-major as bytes.
 */
export function sbdLabelFromMat(mat: MatFile, source: string, structName = 'GTcls'): LabelMap {
  const names = Object.keys(mat.variables);
  const v = mat.variables[structName] ?? (structName === 'GTcls' ? mat.variables['GTinst'] : undefined);
  if (!v) throw new Error(`${source}: no variable "${structName}" (variables: ${names.join(', ') || 'none'})`);
  if (v.kind !== 'struct' || v.elements.length < 1) throw new Error(`${source}: "${structName}" is a ${v.kind}, expected a struct`);
  const seg = v.elements[0]!['Segmentation'];
  if (!seg) throw new Error(`${source}: struct "${structName}" has no field "Segmentation" (fields: ${v.fieldNames.join(', ')})`);
  if (seg.kind !== 'numeric' || seg.dims.length !== 2) {
    const why = seg.kind === 'unsupported' ? ` (${seg.reason})` : '';
    throw new Error(`${source}: "${structName}.Segmentation" is not a 2-D numeric array${why}`);
  }
  const [h, w] = seg.dims as [number, number];
  if (h === 0 || w === 0) throw new Error(`${source}: "${structName}.Segmentation" is empty (${h}×${w})`);
  const bad = seg.data.findIndex((val: number) => !(val >= 0 && val <= 255 && Number.isInteger(val)));
  if (bad >= 0) {
    const where = `row ${(bad % h) + 1}, column ${Math.floor(bad / h) + 1}`;
    throw new Error(`${source}: "${structName}.Segmentation" holds ${seg.data[bad]} at ${where}; labels must be integers 0-255`);
  }
  return { data: Uint8Array.from(toRowMajor(seg.data, h, w)), width: w, height: h };
}

/** Reads `cls/<id>.mat` from SBD into a row-major label map. */
export async function readSbdLabel(path: string): Promise<LabelMap> {
  return sbdLabelFromMat(await readMat(path), path);
}
