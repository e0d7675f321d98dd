// The engine: native tensors and ops, and the one place that configures threads.
export { native } from './binding.js';
export type { Tensor, DType, Precision, NativeInfo } from './binding.js';
export { Tape, disposeAll } from './tape.js';
export { configureEngine, engineConfig, cpuFeatures, autoPrecision } from './config.js';
export type { EngineConfig, EngineOptions, CpuFeatures, PrecisionChoice } from './config.js';
