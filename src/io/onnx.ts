// A minimal subset of the ONNX schema (onnx.proto, proto2) for protobufjs: the messages an
// inference graph needs — a model with its operator sets and metadata, a graph of nodes with
// attributes, tensors for initializers, and typed inputs/outputs with symbolic dimensions.
// Field numbers are onnx.proto's; fields left out are ones the exporter never writes.
// The large tensors are not encoded through these types (see onnx-export.ts): their bytes are
// written straight after a header encoded here, so a model is never copied into a JS message.
import protobuf from 'protobufjs';

/** TensorProto.DataType values used here. */
export const OnnxDataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7 } as const;

/** AttributeProto.AttributeType values used here. */
export const OnnxAttributeType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

/** Field numbers the exporter writes by hand around the protobufjs-encoded parts. */
export const OnnxField = {
  /** ModelProto.graph (GraphProto). */
  modelGraph: 7,
  /** GraphProto.initializer (repeated TensorProto). */
  graphInitializer: 5,
  /** TensorProto.raw_data (bytes: little-endian, fixed width). */
  tensorRawData: 9,
} as const;

// proto3 here (onnx.proto is proto2) so that every repeated number is packed, as ONNX
// Runtime reads either way; field names are onnx.proto's, camelCased by protobufjs.
/** The key of a length-delimited field followed by the length (below 2^53), for the hand-written parts. */
export function lengthDelimited(field: number, length: number): Uint8Array {
  return protobuf.Writer.create().uint32(field * 8 + 2).uint64(length).finish();
}

const ONNX_SUBSET_PROTO = `
syntax = "proto3";
package onnx;

message ModelProto {
  int64 ir_version = 1;
  repeated OperatorSetIdProto opset_import = 8;
  string producer_name = 2;
  string producer_version = 3;
  string doc_string = 6;
  GraphProto graph = 7;
  repeated StringStringEntryProto metadata_props = 14;
}

message StringStringEntryProto {
  string key = 1;
  string value = 2;
}

message OperatorSetIdProto {
  string domain = 1;
  int64 version = 2;
}

message GraphProto {
  repeated NodeProto node = 1;
  string name = 2;
  repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  string name = 3;
  string op_type = 4;
  repeated AttributeProto attribute = 5;
}

message AttributeProto {
  string name = 1;
  int32 type = 20;
  int64 i = 3;
  bytes s = 4;
  repeated int64 ints = 8;
}

message TensorProto {
  repeated int64 dims = 1;
  int32 data_type = 2;
  repeated float float_data = 4;
  repeated int64 int64_data = 7;
  string name = 8;
  bytes raw_data = 9;
}

message ValueInfoProto {
  string name = 1;
  TypeProto type = 2;
  string doc_string = 3;
}

message TypeProto {
  message Tensor {
    int32 elem_type = 1;
    TensorShapeProto shape = 2;
  }
  oneof value {
    Tensor tensor_type = 1;
  }
}

message TensorShapeProto {
  message Dimension {
    oneof value {
      int64 dim_value = 1;
      string dim_param = 2;
    }
  }
  repeated Dimension dim = 1;
}
`;

const root = protobuf.parse(ONNX_SUBSET_PROTO).root;

export const ModelProto = root.lookupType('onnx.ModelProto');
export const GraphProto = root.lookupType('onnx.GraphProto');
export const TensorProto = root.lookupType('onnx.TensorProto');

// Plain-object shapes of the messages, as the exporter builds them (camelCase field names).
export interface OnnxAttribute {
  name: string;
  type: number;
  i?: number;
  s?: Uint8Array;
  ints?: number[];
}

export interface OnnxNode {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  attribute: OnnxAttribute[];
}

export interface OnnxTensorHeader {
  dims: number[];
  dataType: number;
  name: string;
  int64Data?: number[];
  floatData?: number[];
}

/** A dimension: a fixed size or a symbolic name (e.g. 'batch'). */
export type OnnxDim = number | string;

export interface OnnxValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: ({ dimValue: number } | { dimParam: string })[] } } };
  docString?: string;
}

export function valueInfo(name: string, elemType: number, dims: OnnxDim[], docString?: string): OnnxValueInfo {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } }, ...(docString ? { docString } : {}) };
}

/** Encodes a plain object as the given message type, checking it against the schema first. */
export function encodeMessage(type: protobuf.Type, value: object): Uint8Array {
  const problem = type.verify(value);
  if (problem) throw new Error(`ONNX ${type.name}: ${problem}`);
  return type.encode(type.fromObject(value as Record<string, unknown>)).finish();
}
