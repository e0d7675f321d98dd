// Opens any weight file the project reads — the project's safetensors, Keras `.h5` (the
// seed's FCN models and Keras's VGG16 ImageNet files) and Caffe `.caffemodel` (the paper's FCN
// models and Caffe's VGG16) — by its content, never its extension, through the reader of its
// format. The common form every reader presents is described in weight-types.ts.
import { closeSync, readSync } from 'node:fs';
import { openInputSync } from './read-file.js';
import { readSafetensors, type SafetensorsFile } from './safetensors.js';
import type { WeightEntry, WeightFormat, WeightSource } from './weight-types.js';

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The format of a weight file from its first bytes; null when it is none of them. */
export function detectWeightFormat(path: string): WeightFormat | null {
  const fd = openInputSync(path);
  try {
    const head = Buffer.alloc(1024 + 8);
    const n = readSync(fd, head, 0, head.length, 0);
    // HDF5: the signature at offset 0, 512, 1024… (a user block may precede it).
    for (const at of [0, 512, 1024]) if (n >= at + 8 && head.subarray(at, at + 8).equals(HDF5_SIGNATURE)) return 'keras-h5';
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if (n >= 9 && head[8] === 0x7b /* { */ && head.readBigUInt64LE(0) < 100_000_000n) return 'safetensors';
    // A Caffe NetParameter starts with a field tag: name (1, string), layers (2, V1),
    // input (3), or layer (100, encoded as 0xa2 0x06); protobuf has no magic number, so the
    // Caffe reader confirms by decoding.
    if (n >= 1 && (head[0] === 0x0a || head[0] === 0x12 || head[0] === 0x1a || (head[0] === 0xa2 && head[1] === 0x06))) return 'caffemodel';
    return null;
  } finally {
    closeSync(fd);
  }
}

/** The project's own safetensors weights as a WeightSource: already in the common form. */
export function sourceFromSafetensors(file: SafetensorsFile, path: string): WeightSource {
  const tensors = new Map<string, WeightEntry>();
  for (const [name, t] of file.tensors) {
    // An int8 kernel of a quantized model (src/models/int8-weights.ts): Keras layout (kh, kw, in, out)
    // with one scale per output channel, the last axis.
    const scale = name.endsWith('.kernel') ? file.tensors.get(`${name}_scale`) : undefined;
    if (t.dtype === 'I8' && scale) {
      tensors.set(name, {
        shape: t.shape,
        readInt8: () => t.data as Int8Array,
        read: () => {
          const q = t.data as Int8Array, s = scale.data as Float32Array, out = t.shape.at(-1)!;
          if (scale.dtype !== 'F32' || s.length !== out) throw new Error(`${path}: tensor '${name}_scale' must be F32 with ${out} values (one per output channel)`);
          return Float32Array.from(q, (v, i) => v * s[i % out]!);
        },
      });
      continue;
    }
    tensors.set(name, {
      shape: t.shape,
      read: () => {
        if (t.dtype !== 'F32') throw new Error(`${path}: tensor '${name}' is ${t.dtype}, expected F32`);
        return t.data as Float32Array;
      },
    });
  }
  return { path, format: 'safetensors', metadata: { ...file.metadata }, tensors, notes: [] };
}

/**
 * Opens any weight file the project reads. The other readers load lazily, so a user of
 * safetensors alone never loads the HDF5 or protobuf code.
 */
export async function readWeightSource(path: string): Promise<WeightSource> {
  const format = detectWeightFormat(path);
  switch (format) {
    case 'safetensors':
      return sourceFromSafetensors(readSafetensors(path), path);
    case 'keras-h5':
      return (await import('./keras-h5.js')).readKerasH5(path);
    case 'caffemodel':
      return (await import('./caffemodel.js')).readCaffeModel(path);
    default:
      throw new Error(`${path}: not a weight file this project reads (expected safetensors, Keras .h5 or Caffe .caffemodel)`);
  }
}
