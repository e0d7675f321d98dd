// Softmax cross-entropy over class channels, ignoring label 255, with its gradient.
#pragma once
#include "tensor.h"

namespace fcn {
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info);
}
