// Convolution and transposed convolution (oneDNN deconvolution): forward with bias and
// ReLU fused as a post-op, backward data, backward weights+bias.
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value ConvForward(const Napi::CallbackInfo& info);
Napi::Value ConvBackwardData(const Napi::CallbackInfo& info);
Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info);
}  // namespace fcn
