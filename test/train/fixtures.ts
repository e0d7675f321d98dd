// The small training configuration the training tests share: a narrow, dropout-free FCN on a
// synthetic dataset, one data worker, Adam at 1e-3; each test sets what it is about.
import { defaultConfig, type TrainConfig } from '../../src/train/config.js';

export interface SmallConfig {
  size: number;
  width: number;
  batchSize: number;
  samples: number;
  stages?: TrainConfig['stages'];
}

export function smallTrainConfig(data: string, o: SmallConfig): TrainConfig {
  const c = defaultConfig(data);
  c.data = { ...c.data, size: o.size, workers: 1 };
  c.model = { ...c.model, width: o.width, dropout: 0 };
  c.optimizer = { ...c.optimizer, lr: 1e-3 };
  c.batchSize = o.batchSize;
  c.samples = o.samples;
  if (o.stages) c.stages = o.stages;
  return c;
}
