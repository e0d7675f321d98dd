// Element-wise ops and the small plain-layout ops around the network's edges:
// ReLU, add, dropout, crop/pad, argmax, and absMax for quantization's calibration.
#pragma once
#include "bf16.h"
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

}  // namespace fcn
