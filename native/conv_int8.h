// Quantized (int8) inference convolution: uint8 activations × int8 weights summed in int32,
// per-output-channel scales, bias and ReLU fused, uint8 or float32 out.
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value ConvForwardInt8(const Napi::CallbackInfo& info);
}  // namespace fcn
