// A stride-1 convolution's input gradient computed as a forward convolution: of dy with the
// weights transposed (in ↔ out channels) and flipped in space, padded by k−1−p. Run that way
// it uses oneDNN's forward brgconv kernels, which are faster than its backward-data kernels.
#pragma once
#include "conv_spec.h"

namespace fcn {

// Whether s's input gradient can take this path (stride 1, symmetric padding below the kernel).
bool input_grad_as_forward(const ConvSpec& s);
// {dx, weightsCache}: the cache holds the transposed, flipped weights.
Napi::Value input_grad_by_forward(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache);

}  // namespace fcn
