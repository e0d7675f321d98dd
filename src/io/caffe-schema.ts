// The part of Caffe's protobuf schema that a `.caffemodel` reader needs, written for this
// project with the field numbers of Caffe's own `caffe.proto` (messages NetParameter,
// LayerParameter, V1LayerParameter, BlobProto, BlobShape). Fields left out are skipped by the
// decoder.
//
// BlobProto's `data` and `double_data` are `repeated float|double [packed = true]` in Caffe.
// A packed repeated field is one length-delimited record, the same wire type as `bytes`, so
// declaring them `bytes` here makes the decoder hand back views into the file's buffer instead
// of JavaScript arrays of numbers: a 500 MB file is then held once, not several times.
import protobuf from 'protobufjs';

const CAFFE_SUBSET_PROTO = `
syntax = "proto2";
package caffe;

message BlobShape {
  repeated int64 dim = 1 [packed = true];
}

message BlobProto {
  optional BlobShape shape = 7;
  optional bytes data = 5;         // Caffe: repeated float, packed
  optional bytes double_data = 8;  // Caffe: repeated double, packed
  // The old 4-D shape, used when shape is absent.
  optional int32 num = 1;
  optional int32 channels = 2;
  optional int32 height = 3;
  optional int32 width = 4;
}

// The current layer message (NetParameter.layer).
message LayerParameter {
  optional string name = 1;
  optional string type = 2;
  repeated BlobProto blobs = 7;
}

// The oldest layer message, nested in V1 layers of files from before 2014; only detected.
message V0LayerParameter {
  optional string name = 1;
  optional string type = 2;
}

// The deprecated layer message (NetParameter.layers), as in Caffe's VGG16 release.
message V1LayerParameter {
  optional string name = 4;
  optional int32 type = 5;  // Caffe: enum LayerType; an int keeps values this subset does not name
  repeated BlobProto blobs = 6;
  optional V0LayerParameter layer = 1;
}

message NetParameter {
  optional string name = 1;
  repeated V1LayerParameter layers = 2;
  repeated LayerParameter layer = 100;
}
`;

/** V1LayerParameter.LayerType values of the layers that carry weights in VGG16 and FCN files. */
export const V1_LAYER_TYPES: ReadonlyMap<number, string> = new Map([
  [4, 'Convolution'],
  [14, 'InnerProduct'],
  [39, 'Deconvolution'],
]);

/** NetParameter field numbers of the two layer lists (the reader walks the top level itself). */
export const NET_FIELD_NAME = 1;
export const NET_FIELD_V1_LAYERS = 2;
export const NET_FIELD_LAYER = 100;

export interface BlobShapeMessage {
  dim?: (number | { toNumber(): number })[];
}

export interface BlobMessage {
  shape?: BlobShapeMessage | null;
  data?: Uint8Array;
  double_data?: Uint8Array;
  num?: number;
  channels?: number;
  height?: number;
  width?: number;
}

export interface LayerMessage {
  name?: string;
  type?: string;
  blobs?: BlobMessage[];
}

export interface V1LayerMessage {
  name?: string;
  type?: number;
  blobs?: BlobMessage[];
  layer?: { name?: string; type?: string } | null;
}

let cached: { layer: protobuf.Type; v1Layer: protobuf.Type } | null = null;

/** The decoders of one layer record of each form, compiled once. */
export function caffeLayerTypes(): { layer: protobuf.Type; v1Layer: protobuf.Type } {
  if (!cached) {
    // keepCase: field names as written above (double_data, not doubleData).
    const root = protobuf.parse(CAFFE_SUBSET_PROTO, { keepCase: true }).root;
    cached = { layer: root.lookupType('caffe.LayerParameter'), v1Layer: root.lookupType('caffe.V1LayerParameter') };
  }
  return cached;
}
