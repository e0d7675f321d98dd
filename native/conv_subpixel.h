// A transposed convolution whose output is exactly `stride` times its input (kernel − 2·padding
// = stride, as every Keras 'same' upsampling) computed as an ordinary stride-1 convolution with
// stride² times the output channels, one per output phase, then a depth-to-space reorder.
// oneDNN 2.6 runs FCN's 8× upsampling (kernel 16, stride 8) as a transposed convolution with
// its AVX2 kernel at a few tens of GFLOP/s; the ordinary convolution runs at its brgconv rate.
#pragma once
#include "conv_spec.h"

namespace fcn {

// Whether s (transposed) fits: stride equal in both axes, output = stride · input.
bool subpixel_fits(const ConvSpec& s);

// A channel-diagonal float32 kernel (each output channel reads only its own input channel, as
// FCN's bilinear upsamplings) runs as a depthwise loop instead: no phase convolution, no cache.
// y = the transposed convolution s of x with w (float32 plain O,I,KH,KW) and bias, as above;
// y is plain N,C,H,W, of type `out` (s.compute, or float32 from a bfloat16 convolution). `cache`: the phase weights a previous call handed back (as
// {y, weightsCache}) for this w; used when it fits the primitive, else rebuilt and handed back.
Napi::Value subpixel_forward(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& w, Tensor* b, Tensor* cache, dt out);

}  // namespace fcn
