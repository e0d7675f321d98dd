// Convolution and transposed convolution (oneDNN deconvolution): forward with bias and
// ReLU fused as a post-op, backward data, backward weights+bias. The oneDNN primitives are
// here; the faster special paths and the weight packer have files of their own
// (conv_input_grad, conv_weight_grad, conv_weights).
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value ConvForward(const Napi::CallbackInfo& info);
Napi::Value ConvBackwardData(const Napi::CallbackInfo& info);
Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info);
}  // namespace fcn
