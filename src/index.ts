// The fcn package's public API, as the README documents it: models, loading and saving,
// segmentation, training, evaluation, ONNX export, int8 quantization and the engine's
// configuration. The native addon stays internal: its ops are the engine's business.
export { configureEngine, engineConfig, type EngineConfig, type EngineOptions, type InferencePrecision, type PrecisionChoice } from './engine/config.js';
export type { Tensor, DType, Precision } from './engine/binding.js';
export { FcnError } from './errors.js';
export { FCN, FCN_KINDS, NUM_CLASSES, OUTPUT_STRIDE, scaledChannels, type FcnKind, type FcnOptions } from './models/fcn.js';
export { loadModel, saveWeights, loadWeightsInto } from './models/weights.js';
export { segment, segmentImage, type Segmentation, type SegmentOptions } from './infer/inference.js';
export { segmentFiles, collectImages, type SegmentFilesOptions, type SegmentedFile } from './infer/segment-files.js';
export { exportOnnx, writeOnnx, type OnnxExportOptions } from './export/onnx-export.js';
export { calibrateOnImages, quantizeModel } from './quant/quantize.js';
export { ConfusionMatrix, formatMetricsTable, type Metrics } from './report/confusion.js';
export { evaluate, scorePredictions, evaluationToJson, type EvaluationResult, type EvaluateOptions, type ScoreOptions } from './eval/evaluate.js';
export { train, type TrainOptions, type TrainOutcome } from './train/trainer.js';
export { defaultConfig, applySchedule, validateConfig, type TrainConfig, type StageConfig, type Schedule } from './train/config.js';
export * as data from './data/index.js';
