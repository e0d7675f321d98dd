// The project's own safetensors weights as a WeightSource: already in the common form.
import { readSafetensors, type SafetensorsFile } from './safetensors.js';
import type { WeightEntry, WeightSource } from './weight-types.js';

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

export function safetensorsSource(path: string): WeightSource {
  return sourceFromSafetensors(readSafetensors(path), path);
}
