// The project's own safetensors weights as a WeightSource: already in the common form.
import { readSafetensors, type SafetensorsFile } from './safetensors.js';
import type { WeightEntry, WeightSource } from './weight-source.js';

export function sourceFromSafetensors(file: SafetensorsFile, path: string): WeightSource {
  const tensors = new Map<string, WeightEntry>();
  for (const [name, t] of file.tensors) {
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
