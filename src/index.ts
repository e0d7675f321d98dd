// The fcn package: models, engine configuration, data, training and evaluation.
export { native, configureEngine, engineConfig, Tape, disposeAll } from './engine/index.js';
export type { Tensor, DType, Precision, NativeInfo } from './engine/index.js';
export { FCN, FCN_KINDS, NUM_CLASSES, OUTPUT_STRIDE, scaledChannels, type FcnKind, type FcnOptions } from './models/fcn.js';
export { loadModel, saveWeights, loadWeightsInto } from './models/weights.js';
export { weightsToKeras, toKerasLayout } from './models/weights-layout.js';
export { segment, segmentImage, type Segmentation, type SegmentOptions } from './infer/inference.js';
export { Adam, Sgd, type Optimizer } from './train/optim.js';
export { trainStep, computeGradients } from './train/step.js';
export { ConfusionMatrix, formatMetricsTable, type Metrics } from './report/confusion.js';
export { evaluate, scorePredictions, evaluationToJson, type EvaluationResult, type EvaluateOptions, type ScoreOptions } from './eval/evaluate.js';
export { segmentFiles, collectImages, type SegmentFilesOptions, type SegmentedFile } from './infer/segment-files.js';
export * as data from './data/index.js';
