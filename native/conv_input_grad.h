// A stride-1 convolution's input gradient computed as a forward convolution: of dy with the
// weights transposed (in ↔ out channels) and flipped in space, padded by k−1−p. Run that way
// it uses oneDNN's forward brgconv kernels, which are faster than its backward-data kernels.
#pragma once
#include "conv_spec.h"

namespace fcn {

// Whether s's input gradient can take this path (stride 1, symmetric padding below the kernel).
bool input_grad_as_forward(const ConvSpec& s);
// {dx, weightsCache}: the cache holds the transposed, flipped weights.
Napi::Value input_grad_by_forward(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache, bool winograd);

// The same with the engine's Winograd (conv_winograd.h): {dx (channels last), weightsCache (the
// transformed flipped weights), weightsFlipped: true}.
Napi::Value input_grad_by_winograd_gemm(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache);

// Whether s's input gradient can be a matrix product and col2im (stride 1, not transposed).
bool input_grad_matmul_possible(const ConvSpec& s);
// {dx (channels last, the compute type), weightsCache, weightsFlipped: false}: the matrix
// product cols (pixels × KH·KW·I) = dy (pixels × O) · W (O × KH·KW·I), then col2im adds each
// kernel position's slice of cols back onto the input pixel it came from. The cache holds W in
// the compute type, O,KH,KW,I order (the product's own B, no flip).
Napi::Value input_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache);

}  // namespace fcn
