// Element-wise ops and the small plain-layout ops around the network's edges:
// ReLU, add, dropout, crop/pad, argmax, and absMax for quantization's calibration.
#pragma once
#include "tensor.h"

#include <cstring>

namespace fcn {
Napi::Value ReluForward(const Napi::CallbackInfo& info);
Napi::Value ReluBackward(const Napi::CallbackInfo& info);
Napi::Value Add(const Napi::CallbackInfo& info);
Napi::Value DropoutForward(const Napi::CallbackInfo& info);
Napi::Value DropoutBackward(const Napi::CallbackInfo& info);
Napi::Value CropPad(const Napi::CallbackInfo& info);
Napi::Value Argmax(const Napi::CallbackInfo& info);
Napi::Value Scale(const Napi::CallbackInfo& info);
Napi::Value AbsMax(const Napi::CallbackInfo& info);

// bfloat16 is the top half of a float32 (round to nearest even on the way down).
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
}  // namespace fcn
