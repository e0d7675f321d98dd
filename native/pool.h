// 2×2 (or any k×k) max pooling, floor or ceil rounding, with its backward.
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value MaxPoolForward(const Napi::CallbackInfo& info);
Napi::Value MaxPoolBackward(const Napi::CallbackInfo& info);
}  // namespace fcn
