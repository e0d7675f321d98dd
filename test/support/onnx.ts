// Reading back what the ONNX exporter wrote, for the export tests.
import { ModelProto } from '../../src/io/onnx.js';

/** Decodes an ONNX file's bytes (for inspecting exported models; int64 become numbers). */
export function decodeModel(bytes: Uint8Array): Record<string, unknown> {
  return ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, bytes: Array, defaults: false }) as Record<string, unknown>;
}
