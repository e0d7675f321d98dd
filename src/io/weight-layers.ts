// The layers with weights of VGG16 and the FCNs as weight files name them: the project's
// names (Keras's VGG16 ones, `block1_conv1`…, and Keras-FCN's `conv6`, `score7`, `fcn8`…) and
// Caffe's (`conv1_1`, `fc6`, `score_fr`, `upscore8`…), with each layer's kernel, stride,
// outputs at full width and the layer it reads. The readers check files against this one
// table and the network's description (models/network.ts) is built on it: it sits on the
// readers' floor so that they need nothing above it.

export interface WeightLayer {
  /** The project's name: the layer's tensors are `<name>.kernel` and `<name>.bias`. */
  name: string;
  /** The name in the paper's Caffe models. */
  caffe: string;
  kernel: number;
  stride: number;
  /** Output channels at full width; 'classes' for the scorers and upsamplings. */
  outputs: number | 'classes';
  /** A transposed convolution (a bilinear upsampling of class scores, without bias). */
  transposed: boolean;
  /** The layer whose outputs it reads, through pooling; null: the image; 'classes': class scores. */
  reads: string | null;
}

/** Channels of a full-width layer scaled by the width multiplier. */
export function scaledChannels(channels: number, width: number): number {
  return Math.max(1, Math.round(channels * width));
}

const conv = (name: string, caffe: string, kernel: number, outputs: number | 'classes', reads: string | null): WeightLayer =>
  ({ name, caffe, kernel, stride: 1, outputs, transposed: false, reads });
const upsampling = (name: string, caffe: string, kernel: number, stride: number): WeightLayer =>
  ({ name, caffe, kernel, stride, outputs: 'classes', transposed: true, reads: 'classes' });

/** VGG16's thirteen 3×3 convolutions in five blocks of [channels, convolutions], each reading the one before. */
export const VGG16_BLOCKS: readonly (readonly WeightLayer[])[] = (() => {
  let reads: string | null = null;
  return ([[64, 2], [128, 2], [256, 3], [512, 3], [512, 3]] as const).map(([c, n], b) =>
    Array.from({ length: n }, (_, i) => {
      const l = conv(`block${b + 1}_conv${i + 1}`, `conv${b + 1}_${i + 1}`, 3, c, reads);
      reads = l.name;
      return l;
    }),
  );
})();
/** VGG16's fully connected fc6 and fc7 as convolutions (7×7 over block5_pool, then 1×1). */
export const VGG16_CLASSIFIER: readonly WeightLayer[] = [conv('conv6', 'fc6', 7, 4096, 'block5_conv3'), conv('conv7', 'fc7', 1, 4096, 'conv6')];
/** The class scores at 1/32. */
export const SCORE_LAYER = conv('score7', 'score_fr', 1, 'classes', 'conv7');
/** FCN-16s has the first skip, FCN-8s both: each doubles the coarser scores and scores a finer pool. */
export const SKIP_LAYERS: readonly { upsample: WeightLayer; score: WeightLayer }[] = [
  { upsample: upsampling('score7_upsample', 'upscore2', 4, 2), score: conv('score4', 'score_pool4', 1, 'classes', 'block4_conv3') },
  { upsample: upsampling('skip4_upsample', 'upscore_pool4', 4, 2), score: conv('score3', 'score_pool3', 1, 'classes', 'block3_conv3') },
];
/** Each network's final upsampling to the input's resolution, and the skips it has. */
export const FCN_OUTPUTS = {
  fcn32: { upsample: upsampling('fcn32', 'upscore', 64, 32), skips: 0 },
  fcn16: { upsample: upsampling('fcn16', 'upscore16', 32, 16), skips: 1 },
  fcn8: { upsample: upsampling('fcn8', 'upscore8', 16, 8), skips: 2 },
} as const;

/** The layers with weights of VGG16 (the backbone) or an FCN, input to output (the order of their tensors). */
export function weightLayers(network: 'vgg16' | keyof typeof FCN_OUTPUTS): WeightLayer[] {
  const body = [...VGG16_BLOCKS.flat(), ...VGG16_CLASSIFIER];
  if (network === 'vgg16') return body;
  const { upsample, skips } = FCN_OUTPUTS[network];
  return [...body, SCORE_LAYER, ...SKIP_LAYERS.slice(0, skips).flatMap((s) => [s.upsample, s.score]), upsample];
}

/** Every layer of the table by its project name. */
export const WEIGHT_LAYERS: ReadonlyMap<string, WeightLayer> = new Map(
  [...weightLayers('fcn8'), FCN_OUTPUTS.fcn32.upsample, FCN_OUTPUTS.fcn16.upsample].map((l) => [l.name, l]),
);
