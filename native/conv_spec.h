// What the convolution paths share: one convolution's geometry and precision, the oneDNN
// primitive families for convolution and transposed convolution, and the forward primitive
// descriptor every path starts from.
#pragma once
#include "tensor.h"

namespace fcn {

// Shapes are N,C,H,W for activations and O,I,KH,KW for weights, for both convolution
// and transposed convolution (oneDNN's deconvolution weights are output-channel first too).
struct ConvSpec {
  bool transposed = false;
  bool relu = false;
  bool has_bias = false;
  // Winograd's algorithm instead of the direct one (forward float32 convolution only).
  bool winograd = false;
  dt compute = dt::f32;
  memory::dims x, w, y;
  memory::dims stride{1, 1}, pad_l{0, 0}, pad_r{0, 0};

  std::string key(const char* op) const {
    return std::string(op) + (transposed ? "T" : "C") + (relu ? "r" : "") + (has_bias ? "b" : "") + (winograd ? "W" : "") + dtype_name(compute) +
           "|" + dims_key(x) + "|" + dims_key(w) + "|" + dims_key(stride) + "|" + dims_key(pad_l) + "|" + dims_key(pad_r);
  }
};

// The options every convolution op shares, read before any tensor is unwrapped.
struct ConvOptions {
  bool transposed;
  dt compute;
  std::vector<int64_t> stride, padding;  // padding: top, left, bottom, right
};
ConvOptions read_conv_options(const Napi::Object& o);

// The geometry of x (N,C,H,W) convolved with w (O,I,KH,KW), checked: every size within
// oneDNN's range, channels that agree, and an output of at least one pixel.
ConvSpec make_conv_spec(const ConvOptions& c, const memory::dims& x, const memory::dims& w, bool has_bias);

// Reference and gemm-based implementations are oneDNN's fallbacks, far slower than its jit
// and brgemm kernels: a layout that only they support is not worth keeping.
inline bool optimised(const char* impl) {
  std::string s(impl);
  return s.find("ref") == std::string::npos && s.find("gemm:") == std::string::npos;
}

template <bool Transposed>
struct Prims;
template <>
struct Prims<false> {
  using fwd = dnnl::convolution_forward;
  using bwd_data = dnnl::convolution_backward_data;
  using bwd_weights = dnnl::convolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::convolution_direct;
};
template <>
struct Prims<true> {
  using fwd = dnnl::deconvolution_forward;
  using bwd_data = dnnl::deconvolution_backward_data;
  using bwd_weights = dnnl::deconvolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::deconvolution_direct;
};

inline memory::desc any_layout(const memory::dims& d, dt type) { return memory::desc(d, type, tag::any); }
inline memory::desc bias_md(const ConvSpec& s) { return s.has_bias ? memory::desc({s.w[0]}, dt::f32, tag::a) : memory::desc(); }

// With FCN_DEBUG_IMPL set, prints which oneDNN implementation a path got.
void debug_impl(const char* what, const ConvSpec& s, const char* impl);

// Always forward_inference: a convolution keeps nothing for its backward pass (the ReLU's
// backward reads the saved output), and oneDNN 2.6 offers its fastest kernels (brgconv)
// only for inference — with forward_training it picks jit kernels at half the speed.
// (Their float32 sums round differently, so a pre-activation within rounding of zero can
// switch its ReLU: test/models/parity.test.ts explains how the reference allows for that.)
template <bool T>
typename Prims<T>::fwd::primitive_desc fwd_pd(const ConvSpec& s) {
  using F = typename Prims<T>::fwd;
  const auto pk = dnnl::prop_kind::forward_inference;
  const dnnl::algorithm alg = !T && s.winograd ? dnnl::algorithm::convolution_winograd : Prims<T>::alg;
  auto d = s.has_bias ? typename F::desc(pk, alg, any_layout(s.x, s.compute), any_layout(s.w, s.compute), bias_md(s), any_layout(s.y, s.compute), s.stride, s.pad_l,
                                         s.pad_r)
                      : typename F::desc(pk, alg, any_layout(s.x, s.compute), any_layout(s.w, s.compute), any_layout(s.y, s.compute), s.stride, s.pad_l, s.pad_r);
  dnnl::primitive_attr attr;
  if (s.relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return typename F::primitive_desc(d, attr, cpu_engine());
}

// fwd_pd, and for Winograd's algorithm a clear error where oneDNN has no implementation of it
// (oneDNN 2.6 implements it for AVX-512 CPUs only, and for some shapes).
template <bool T>
typename Prims<T>::fwd::primitive_desc winograd_fwd_pd(const ConvSpec& s) {
  if (!s.winograd) return fwd_pd<T>(s);
  try {
    return fwd_pd<T>(s);
  } catch (const dnnl::error& e) {
    if (e.status != dnnl_unimplemented) throw;
    throw_range_error("Winograd convolution is not available on this CPU (for x " + dims_key(s.x) + " and weights " + dims_key(s.w) + "): use algorithm 'direct'");
  }
}

}  // namespace fcn
