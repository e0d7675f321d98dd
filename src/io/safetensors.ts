// The safetensors format: 8-byte little-endian header length N, N bytes of JSON header
// ({name: {dtype, shape, data_offsets: [begin, end]}, optional "__metadata__": {string: string}}),
// then the raw little-endian tensor data; offsets are relative to the end of the header.
// Weight files reach 550 MB, so reading makes typed-array views into the one file Buffer
// and copies a tensor only when its offset is not aligned for its element type.
import { writeFileAtomic } from './atomic.js';
import { assertLittleEndianHost, readInputSync, typedView, type ArrayViewCtor } from './read-file.js';

export type SafetensorsDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8'
  | 'BOOL';

/** The typed arrays of the dtypes (CTORS below): F16 and BF16 stay raw 16-bit patterns; BOOL is one byte each. */
export type SafetensorsArray = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | BigUint64Array | Uint32Array | Uint8Array;

export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: SafetensorsArray;
}

export interface SafetensorsFile {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

const CTORS: Record<SafetensorsDtype, ArrayViewCtor<SafetensorsArray>> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U64: BigUint64Array,
  U32: Uint32Array,
  U16: Uint16Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
} as Record<SafetensorsDtype, ArrayViewCtor<SafetensorsArray>>;

export const SAFETENSORS_DTYPES = Object.keys(CTORS) as SafetensorsDtype[];

/** Bytes per element of a dtype. */
export function dtypeSize(dtype: SafetensorsDtype): number {
  return CTORS[dtype].BYTES_PER_ELEMENT;
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(CTORS, s);
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

// Largest header the reference implementation accepts (100 MB); a larger length means a corrupt file.
const MAX_HEADER = 100_000_000;

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/** The header's tensors, sorted by name, and metadata, checked against the data's length. */
function parseHeader(json: string, dataLength: number, where: string): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    throw new Error(`${where}: header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new Error(`${where}: header JSON must be an object`);
  }
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new Error(`${where}: __metadata__ must be an object of strings`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new Error(`${where}: __metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const t = `${where}: tensor '${name}'`;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${t}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (!isDtype(dtype)) throw new Error(`${t}: unknown dtype ${JSON.stringify(dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')})`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`${t}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new Error(`${t}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new Error(`${t}: data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataLength) {
      throw new Error(`${t}: data_offsets [${begin}, ${end}] beyond the ${dataLength} data bytes (file truncated?)`);
    }
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * dtypeSize(dtype);
    if (end - begin !== expected) {
      throw new Error(`${t}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(', ')}] × ${dtype} needs ${expected}`);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }
  const byStart = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const cur = byStart[i]!;
    if (cur.begin < prev.end) {
      throw new Error(`${where}: tensors '${prev.name}' [${prev.begin}, ${prev.end}] and '${cur.name}' [${cur.begin}, ${cur.end}] overlap`);
    }
  }
  return { entries: entries.sort((a, b) => byName(a.name, b.name)), metadata };
}

/**
 * Parses a safetensors image held in memory. Tensors are views into `buf` where alignment
 * allows (so they share its memory), copies otherwise. `where` names the source in errors.
 */
export function parseSafetensors(buf: Uint8Array, where = 'safetensors'): SafetensorsFile {
  assertLittleEndianHost('safetensors');
  if (buf.byteLength < 8) throw new Error(`${where}: truncated file (${buf.byteLength} bytes, need at least 8 for the header length)`);
  const stated = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getBigUint64(0, true);
  if (stated > BigInt(buf.byteLength - 8)) throw new Error(`${where}: header length ${stated} is beyond the file size ${buf.byteLength} (truncated or not a safetensors file)`);
  const n = Number(stated);
  if (n > MAX_HEADER) throw new Error(`${where}: header length ${n} exceeds ${MAX_HEADER} bytes`);
  const json = Buffer.from(buf.buffer, buf.byteOffset + 8, n).toString('utf8');
  const dataStart = 8 + n;
  const dataLength = buf.byteLength - dataStart;
  const { entries, metadata } = parseHeader(json, dataLength, where);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const e of entries) {
    const data = typedView(CTORS[e.dtype], buf.subarray(dataStart + e.begin, dataStart + e.end));
    tensors.set(e.name, { dtype: e.dtype, shape: [...e.shape], data });
  }
  return { tensors, metadata };
}

/** Reads a safetensors file (one read into one Buffer; tensors are views into it where aligned). */
export function readSafetensors(path: string): SafetensorsFile {
  return parseSafetensors(readInputSync(path), path);
}

/** Tensors to write: a Map or a plain object of name → tensor. */
export type SafetensorsInput = Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>;

/**
 * Serialises tensors to the chunks of a safetensors file (header then one chunk per tensor,
 * each a view of the caller's array: nothing large is copied).
 * Deterministic: header keys sorted ("__metadata__" first), data ordered by element size
 * (largest first, as the reference implementation does, so every tensor stays aligned) then
 * by name, header padded with spaces so the data starts at a multiple of 8.
 */
export function serializeSafetensors(tensors: SafetensorsInput, metadata: Record<string, string> = {}, where = 'safetensors'): Uint8Array[] {
  assertLittleEndianHost('safetensors');
  const items = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const names = new Set<string>();
  for (const [name, t] of items) {
    if (name === '__metadata__') throw new Error(`${where}: '__metadata__' is reserved and cannot name a tensor`);
    if (names.has(name)) throw new Error(`${where}: duplicate tensor name '${name}'`);
    names.add(name);
    if (!isDtype(t.dtype)) throw new Error(`${where}: tensor '${name}': unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`${where}: tensor '${name}': shape must be non-negative integers, got ${JSON.stringify(t.shape)}`);
    }
    const Ctor = CTORS[t.dtype];
    // Catch e.g. a Float64Array labelled F32, which would otherwise write garbage silently.
    if (!(t.data instanceof (Ctor as unknown as typeof Uint8Array)) || t.data.BYTES_PER_ELEMENT !== Ctor.BYTES_PER_ELEMENT) {
      throw new Error(`${where}: tensor '${name}': dtype ${t.dtype} needs a ${Ctor.name}, got ${t.data?.constructor?.name}`);
    }
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== count) throw new Error(`${where}: tensor '${name}': shape [${t.shape.join(', ')}] has ${count} elements but data has ${t.data.length}`);
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new Error(`${where}: metadata '${k}' must be a string`);
  }
  const order = [...items].sort(([an, at], [bn, bt]) => dtypeSize(bt.dtype) - dtypeSize(at.dtype) || byName(an, bn));
  const offsets = new Map<string, [number, number]>();
  let pos = 0;
  for (const [name, t] of order) {
    offsets.set(name, [pos, pos + t.data.byteLength]);
    pos += t.data.byteLength;
  }
  const header: Record<string, unknown> = {};
  const metaKeys = Object.keys(metadata).sort(byName);
  if (metaKeys.length > 0) header['__metadata__'] = Object.fromEntries(metaKeys.map((k) => [k, metadata[k]]));
  for (const [name, t] of [...items].sort(([a], [b]) => byName(a, b))) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: offsets.get(name) };
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  const chunks: Uint8Array[] = [head];
  for (const [, t] of order) chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return chunks;
}

/** Writes a safetensors file atomically (see {@link serializeSafetensors} for the layout). */
export function writeSafetensors(path: string, tensors: SafetensorsInput, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata, path));
}

/** Convenience: an F32 tensor from numbers or a Float32Array. */
export function f32(shape: number[], data: Float32Array | ArrayLike<number>): SafetensorsTensor {
  return { dtype: 'F32', shape, data: data instanceof Float32Array ? data : Float32Array.from(data) };
}

