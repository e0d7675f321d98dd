// Fused optimiser updates over one parameter, or all of them in one call (in place): Adam with Keras's L2 regulariser,
// and SGD with momentum and weight decay (Caffe's form).
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value AdamUpdate(const Napi::CallbackInfo& info);
Napi::Value AdamUpdateAll(const Napi::CallbackInfo& info);
Napi::Value SgdUpdate(const Napi::CallbackInfo& info);
Napi::Value SumSquares(const Napi::CallbackInfo& info);
}  // namespace fcn
