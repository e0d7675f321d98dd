// Weight gradients (float32, from float32 or bfloat16 operands) of stride-1 convolutions as a matrix product,
// dW (O × KH·KW·I) = dyᵀ (O × P) · im2col(x) (P × KH·KW·I), on oneDNN's brgemm matmul, which
// outruns its backward-weights kernel there. The im2col matrix is built in chunks of pixels
// (≤ 32 MB each), each chunk's product accumulated into dW.
#pragma once
#include "conv_spec.h"

namespace fcn {

// Whether the matmul route can compute s's weight gradient at all, and whether it is the
// default choice (float32 over many pixels; the fastest per shape is measured by the caller).
bool weight_grad_matmul_possible(const ConvSpec& s);
bool weight_grad_as_matmul(const ConvSpec& s);
// {dw (float32 O,I,KH,KW: plain, or with `any_layout` the product's own O,KH,KW,I order, no
// copy), db (float32 O) or null}
Napi::Value weight_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& dy, bool any_layout);

}  // namespace fcn
