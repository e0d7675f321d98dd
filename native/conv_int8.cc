#include "conv_int8.h"

#include <cmath>
#include <cstdio>

#include "conv_spec.h"
#include "conv_weights.h"

namespace fcn {

namespace {

using Fwd = dnnl::convolution_forward;

// The per-output-channel scales, copied out of the caller's Float32Array (read without
// running any JS).
std::vector<float> read_scales(const Napi::Object& o) {
  Napi::Value v = o.Get("scales");
  if (v.IsUndefined() || v.IsNull()) throw_type_error("scales must be given: a Float32Array of one scale per output channel");
  napi_typedarray_type kind = napi_int8_array;
  size_t length = 0;
  void* data = nullptr;
  if (!v.IsTypedArray() || napi_get_typedarray_info(v.Env(), v, &kind, &length, &data, nullptr, nullptr) != napi_ok || kind != napi_float32_array)
    throw_type_error("scales must be a Float32Array, got " + describe(v));
  const float* f = static_cast<const float*>(data);
  std::vector<float> scales(f, f + length);
  for (size_t i = 0; i < length; i++)
    if (!(std::isfinite(scales[i]) && scales[i] > 0))
      throw_range_error("scales[" + std::to_string(i) + "] must be a finite number > 0, got " + describe(Napi::Number::New(v.Env(), scales[i])));
  return scales;
}

// 'uint8' or 'float32': required, since which one a layer wants depends on what reads it next.
dt read_output(const Napi::Object& o) {
  Napi::Value v = o.Get("output");
  if (v.IsUndefined() || v.IsNull()) throw_type_error("output must be given: 'uint8' or 'float32'");
  if (!v.IsString()) throw_type_error("output must be a string, got " + describe(v));
  const std::string s = v.As<Napi::String>().Utf8Value();
  if (s == "uint8") return dt::u8;
  if (s == "float32") return dt::f32;
  throw_range_error("output must be one of 'uint8', 'float32', got '" + s + "'");
}

// oneDNN 2.x bakes the output scales into the primitive (AVX2's int8 kernels refuse runtime
// scales), so the cache key must tell scale sets apart: their count and a 64-bit FNV-1a hash of
// their bytes.
std::string scales_key(const std::vector<float>& scales) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(scales.data());
  for (size_t i = 0; i < scales.size() * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%zu:%016llx", scales.size(), static_cast<unsigned long long>(h));
  return buf;
}

// oneDNN 2.x computes dst = scale·(Σ x·w + bias) for int8 convolution (the f32 bias joins the
// int32 sum before the output scale), which is this op's contract as it stands: no adjustment.
Fwd::primitive_desc int8_pd(const ConvSpec& s, const memory::desc& src, dt out, const std::vector<float>& scales, float clip) {
  const auto pk = dnnl::prop_kind::forward_inference;
  const auto alg = dnnl::algorithm::convolution_direct;
  const memory::desc wei = any_layout(s.w, dt::s8), dst = any_layout(s.y, out);
  auto d = s.has_bias ? Fwd::desc(pk, alg, src, wei, bias_md(s), dst, s.stride, s.pad_l, s.pad_r) : Fwd::desc(pk, alg, src, wei, dst, s.stride, s.pad_l, s.pad_r);
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << 1, scales);  // mask 2: one scale per output channel
  if (s.relu) {
    // Post-ops act on the scaled value, before rounding: clip bounds the output itself.
    dnnl::post_ops po;
    if (clip > 0) po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, clip);
    else po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return Fwd::primitive_desc(d, attr, cpu_engine());
}

// In x's own layout when an optimised kernel takes it (what the previous int8 convolution or
// pooling wrote: no reorder between layers), else in the layout oneDNN prefers (x's data type
// either way: uint8 activations, or the int8 image of the first layer).
Fwd::primitive_desc choose_pd(const ConvSpec& s, const memory::desc& x_md, dt out, const std::vector<float>& scales, float clip) {
  try {
    auto pd = int8_pd(s, x_md, out, scales, clip);
    if (optimised(pd.impl_info_str())) return pd;
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_out_of_memory) throw;
  }
  try {
    return int8_pd(s, any_layout(s.x, x_md.data_type()), out, scales, clip);
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_out_of_memory) throw;
    throw_range_error(std::string("oneDNN has no int8 convolution of ") + dtype_name(x_md.data_type()) + " x " + dims_key(s.x) + " with weights " + dims_key(s.w) + ", stride " + dims_key(s.stride) +
                      ", padding " + dims_key(s.pad_l) + "/" + dims_key(s.pad_r) + " and " + dtype_name(out) + " output on this CPU" +
                      (e.status == dnnl_unimplemented ? "" : std::string(" (") + e.what() + ")"));
  }
}

}  // namespace

// convForwardInt8(x uint8 or int8 N,C,H,W, w int8 O,I,KH,KW (plain), bias float32 [O] | null,
//                 {stride, padding, relu, clip, scales: Float32Array [O], output: 'uint8' | 'float32', weightsCache})
//   → {y, weightsCache: Tensor|null}
// y[n,o,i,j] = relu?(scales[o] · (Σ x·w + bias[o])) with the sum in int32; uint8 output
// rounded to nearest and saturated to [0, 255]; with clip (relu only) the ReLU becomes
// min(max(v, 0), clip), e.g. 127 to keep a uint8 output within 7 bits. y is in the layout the
// primitive chose.
// The sum is exact when every x ≤ 127 or every |w| ≤ 64: without VNNI (AVX2, the first
// AVX-512 CPUs) oneDNN multiplies with vpmaddubsw, which adds pairs of products in 16 bits
// with saturation, and larger pairs are clipped (255·127 + 255·127 = 64770 comes out 32767).
// Quantization keeps one of the two ranges so that results are the same on every CPU.
// An int8 x (the signed image of the first layer) is exact with VNNI; without it, oneDNN adds
// 128 to x to make it unsigned and halves the weights to stay clear of that saturation (the
// weights lose their last bit: a rounding, not a clipping).
Napi::Value ConvForwardInt8(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 3);
  ConvOptions c;
  c.transposed = false;
  c.compute = dt::u8;
  c.stride = opt_ints(o, "stride", {1, 1}, 2, 1, kMaxGeometry);
  c.padding = opt_ints(o, "padding", {0, 0, 0, 0}, 4, 0, kMaxGeometry);
  const bool relu = opt_bool(o, "relu", false);
  float clip = 0;
  if (!o.Get("clip").IsUndefined()) {
    const double v = read_number(o.Get("clip"), "clip");
    if (!(std::isfinite(v) && v > 0 && v <= 3.4e38)) throw_range_error("clip must be a positive finite number, got " + std::to_string(v));
    if (!relu) throw_range_error("clip bounds the ReLU: it needs relu: true");
    clip = float(v);
  }
  const std::vector<float> scales = read_scales(o);
  const dt out = read_output(o);
  Napi::Value cache_arg = o.Get("weightsCache");
  Tensor& x = Tensor::From(info[0], "x");
  Tensor& w = Tensor::From(info[1], "weights");
  Tensor* b = Tensor::FromOptional(info[2], "bias");
  Tensor* cache = Tensor::FromOptional(cache_arg, "weightsCache");
  require_rank(x, "x", 4, "N,C,H,W");
  require_dtype(x, "x", {dt::u8, dt::s8});
  require_rank(w, "weights", 4, "O,I,KH,KW");
  require_dtype(w, "weights", {dt::s8});
  if (!is_plain(w.md)) throw_type_error("the weights must be in the plain layout (O,I,KH,KW)");
  const int64_t O = w.dims()[0];
  if (b) {
    require_dtype(*b, "bias", {dt::f32});
    require_dims(*b, "bias", {O});
  }
  if (int64_t(scales.size()) != O)
    throw_range_error("scales has " + std::to_string(scales.size()) + " values but the weights have " + std::to_string(O) + " output channels");
  ConvSpec s = make_conv_spec(c, x.dims(), w.dims(), b != nullptr);
  s.relu = relu;

  Napi::Env env = info.Env();
  // The source layout is part of the key: the primitive runs in x's layout when it can.
  const std::string key = s.key("fwdI8") + "|" + md_key(x.md) + "|" + dtype_name(out) + "|clip" + std::to_string(clip) + "|" + scales_key(scales);
  auto cp = cached(key, [&] {
    auto pd = choose_pd(s, x.md, out, scales, clip);
    debug_impl("fwdI8", s, pd.impl_info_str());
    return CachedPrimitive{pd, Fwd(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(x, cp.pd.src_desc(), keep);
  // Through oneDNN's reorder from plain O,I,KH,KW: it also writes whatever extras (compensation,
  // scale adjustment) the chosen kernel's weights descriptor asks for.
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, cache, cp.pd.weights_desc(), fresh);
  Napi::Object y = Tensor::Create(env, cp.pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Of(y).mem()}};
  if (b) args.emplace(DNNL_ARG_BIAS, in_layout(*b, bias_md(s), keep));
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  auto result = Napi::Object::New(env);
  result.Set("y", y);
  result.Set("weightsCache", fresh);
  return result;
}

}  // namespace fcn
