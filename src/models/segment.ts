// Segmenting images with a trained model: preprocessing as the model's style wants (RGB →
// BGR minus the Keras or Caffe means), a forward pass at the image's own size, argmax to a label map.
import { native, type Precision } from '../engine/binding.js';
import { engineConfig } from '../engine/config.js';
import { readImageRgb, type RgbImage } from '../io/image.js';
import { toNetworkInput, type Means } from '../data/transforms.js';
import { VOC_CLASS_NAMES } from '../data/classes.js';
import type { FCN } from './fcn.js';

/** The model's class names: from its weights' metadata, else VOC's for 21 classes. */
export function modelClassNames(model: FCN): readonly string[] {
  if (model.classNames) return model.classNames;
  return model.numClasses === VOC_CLASS_NAMES.length ? VOC_CLASS_NAMES : Array.from({ length: model.numClasses }, (_, i) => `class${i}`);
}

export interface Segmentation {
  /** One class index per pixel, row-major height × width. */
  labels: Uint8Array;
  width: number;
  height: number;
  classes: readonly string[];
  /** Raw class scores before softmax, classes × height × width, when asked for. */
  logits?: Float32Array;
}

export interface SegmentOptions {
  precision?: Precision;
  means?: Means;
  classNames?: readonly string[];
  /** Also return the logits. */
  logits?: boolean;
}

/** Segments one image (a path or decoded RGB) with `model`. */
export async function segment(model: FCN, image: string | RgbImage, options: SegmentOptions = {}): Promise<Segmentation> {
  const rgb = typeof image === 'string' ? await readImageRgb(image) : image;
  const { width, height } = rgb;
  const input = toNetworkInput({ id: '', width, height, image: rgb.data, label: new Uint8Array(0) }, options.means ?? model.means);
  const x = native.fromArray([1, 3, height, width], input.image);
  try {
    const logits = model.predictLogits(x, options.precision ?? engineConfig().precision);
    try {
      const labelsT = native.argmax(logits);
      const labels = labelsT.toArray() as Uint8Array;
      labelsT.dispose();
      const classes = options.classNames ?? modelClassNames(model);
      return { labels, width, height, classes, ...(options.logits ? { logits: logits.toArray() as Float32Array } : {}) };
    } finally {
      logits.dispose();
    }
  } finally {
    x.dispose();
  }
}
