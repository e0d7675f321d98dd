// Segmenting images with a model lives in src/infer/inference.ts (whole or tiled, one path
// for every command); these names stay here for the package's API and older imports.
export { modelClassNames, segment, segmentImage, type InferenceOptions, type InferencePlan, type Segmentation, type SegmentOptions } from '../infer/inference.js';
