// Placeholder until the Caffe .caffemodel reader lands.
import type { WeightSource } from './weight-source.js';

export async function readCaffeModel(path: string): Promise<WeightSource> {
  throw new Error(`${path}: reading Caffe .caffemodel files is not built yet`);
}
