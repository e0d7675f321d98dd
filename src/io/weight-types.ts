// The common form of a weight file, whatever its format (see weight-source.ts for the
// readers). Each reader presents the file with the project's layer names (`block1_conv1`,
// `conv6`, `score7`, `fcn8`…) and Keras layouts — convolution kernels (kh, kw, in, out),
// transposed-convolution kernels (kh, kw, out, in), biases (out), float32 — plus string
// metadata saying what network the file implies. Tensors are converted one at a time when
// asked for (`read`), so a 500 MB file is never held as several full copies.

export type WeightFormat = 'safetensors' | 'keras-h5' | 'caffemodel';

/** A tensor of a weight file, converted to the common form only when read. */
export interface WeightEntry {
  /** Keras-layout shape (see above). */
  shape: number[];
  /** The float32 values in that layout; each call may convert again, so call once. */
  read(): Float32Array;
  /**
   * For an int8 kernel of a quantized model (see src/models/int8-weights.ts): its int8 values in the
   * same layout. `read` gives the float32 values they stand for.
   */
  readInt8?(): Int8Array;
}

export interface WeightSource {
  path: string;
  format: WeightFormat;
  /**
   * What the file implies, as strings (the keys of the project's safetensors metadata):
   * `model` (fcn32|fcn16|fcn8; absent for a backbone), `backbone` ('vgg16' for an ImageNet
   * VGG16 file), `style` (keras|caffe), `width`, `classes`, `skip_scales` ("0.01,0.0001" for
   * Caffe's at-once FCN-8s), `class_names` (JSON array) when known, and anything else the
   * format records.
   */
  metadata: Record<string, string>;
  /** Tensors by `<layer>.kernel` / `<layer>.bias`, input to output. */
  tensors: Map<string, WeightEntry>;
  /** One line per thing the reader did that a user should know (e.g. layers left out). */
  notes: string[];
  /** Releases what the reader holds open (an HDF5 file) before every tensor has been read. */
  close?(): void;
}
