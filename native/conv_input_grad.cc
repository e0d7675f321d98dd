#include "conv_input_grad.h"

#include "conv_weights.h"

namespace fcn {

bool input_grad_as_forward(const ConvSpec& s) {
  return !s.transposed && s.stride == memory::dims{1, 1} && s.pad_l == s.pad_r && s.pad_l[0] < s.w[2] && s.pad_l[1] < s.w[3];
}

namespace {
ConvSpec input_grad_spec(const ConvSpec& s) {
  ConvSpec f = s;
  f.relu = false;
  f.has_bias = false;
  f.x = s.y;
  f.w = {s.w[1], s.w[0], s.w[2], s.w[3]};
  f.y = s.x;
  f.pad_l = f.pad_r = {s.w[2] - 1 - s.pad_l[0], s.w[3] - 1 - s.pad_l[1]};
  return f;
}
}  // namespace

Napi::Value input_grad_by_forward(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache) {
  ConvSpec f = input_grad_spec(s);
  auto cp = cached(f.key("bwdDF"), [&] {
    auto pd = fwd_pd<false>(f);
    debug_impl("bwdD as fwd", f, pd.impl_info_str());
    return CachedPrimitive{pd, dnnl::convolution_forward(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(dy, cp.pd.src_desc(), keep);
  // The caller's cache for this path holds transposed weights only.
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache, cp.pd.weights_desc(), fresh, true);
  Napi::Object dx = Tensor::Create(env, cp.pd.dst_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Of(dx).mem()}});
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  out.Set("weightsFlipped", true);
  return out;
}

}  // namespace fcn
