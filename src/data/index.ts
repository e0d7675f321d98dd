// The data API: readers, splits, transforms, the loader, synthetic data, checks and downloads.
export * from './classes.js';
export * from './datasets.js';
export * from './labels.js';
export * from './mat.js';
export * from './splits.js';
export * from './transforms.js';
export { collate, DataLoader, type Batch, type LoaderOptions } from './loader.js';
export { Rng, mixSeed } from './prng.js';
export * from './synth.js';
export * from './check.js';
export * from './fetch.js';
export * from '../io/download.js';
