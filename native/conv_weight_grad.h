// float32 weight gradients of stride-1 convolutions over many pixels as a matrix product,
// dW (O × KH·KW·I) = dyᵀ (O × P) · im2col(x) (P × KH·KW·I), on oneDNN's brgemm matmul, which
// outruns its backward-weights kernel there. The im2col matrix is built in chunks of pixels
// (≤ 32 MB each), each chunk's product accumulated into dW.
#pragma once
#include "conv_spec.h"

namespace fcn {

bool weight_grad_as_matmul(const ConvSpec& s);
// {dw (plain O,I,KH,KW float32), db (float32 O) or null}
Napi::Value weight_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& dy);

}  // namespace fcn
