// Placeholder until the Keras .h5 reader lands.
import type { WeightSource } from './weight-source.js';

export async function readKerasH5(path: string): Promise<WeightSource> {
  throw new Error(`${path}: reading Keras .h5 files is not built yet`);
}
