#include "conv.h"

#include <cstdio>
#include <cstdlib>

#include "conv_input_grad.h"
#include "conv_spec.h"
#include "conv_subpixel.h"
#include "conv_weight_grad.h"
#include "conv_weights.h"
#include "conv_winograd.h"

namespace fcn {

void debug_impl(const char* what, const ConvSpec& s, const char* impl) {
  static const bool on = std::getenv("FCN_DEBUG_IMPL") != nullptr;
  if (on) std::fprintf(stderr, "fcn: %s %s -> %s\n", what, s.key("").c_str(), impl);
}

ConvOptions read_conv_options(const Napi::Object& o) {
  ConvOptions c;
  c.transposed = opt_bool(o, "transposed", false);
  c.compute = opt_dtype(o, "dtype", dt::f32, {dt::f32, dt::bf16});
  c.stride = opt_ints(o, "stride", {1, 1}, 2, 1, kMaxGeometry);
  c.padding = opt_ints(o, "padding", {0, 0, 0, 0}, 4, 0, kMaxGeometry);
  return c;
}

ConvSpec make_conv_spec(const ConvOptions& c, const memory::dims& x, const memory::dims& w, bool has_bias) {
  ConvSpec s;
  s.transposed = c.transposed;
  s.has_bias = has_bias;
  s.compute = c.compute;
  s.stride = {c.stride[0], c.stride[1]};
  s.pad_l = {c.padding[0], c.padding[1]};
  s.pad_r = {c.padding[2], c.padding[3]};
  for (size_t i = 0; i < 4; i++) {
    if (x[i] > kMaxGeometry) throw_range_error("x is " + dims_key(x) + ": sizes above " + std::to_string(kMaxGeometry) + " are not supported");
    if (w[i] > kMaxGeometry) throw_range_error("the weights are " + dims_key(w) + ": sizes above " + std::to_string(kMaxGeometry) + " are not supported");
  }
  if (x[1] != w[1]) throw_range_error("input has " + std::to_string(x[1]) + " channels but the weights expect " + std::to_string(w[1]));
  s.x = x;
  s.w = w;
  memory::dims out(2);
  for (size_t i = 0; i < 2; i++) {
    // Sizes and parameters are below 2^31: none of these overflows.
    const int64_t in = x[2 + i], k = w[2 + i], st = s.stride[i], pads = s.pad_l[i] + s.pad_r[i];
    int64_t o;
    if (s.transposed) {
      o = (in - 1) * st - pads + k;
    } else {
      const int64_t span = in + pads - k;
      o = span < 0 ? 0 : span / st + 1;
    }
    if (o < 1)
      throw_range_error("input " + dims_key(x) + " is too small for kernel " + dims_key(w) + " with stride " + dims_key(s.stride) + " and padding " +
                        list_str(c.padding));
    if (o > kMaxGeometry) throw_range_error("the output would be " + std::to_string(o) + " pixels across, above " + std::to_string(kMaxGeometry));
    out[i] = o;
  }
  s.y = {x[0], w[0], out[0], out[1]};
  checked_numel(s.y, "the output " + list_str(s.y));
  return s;
}

namespace {

void require_conv_operand(const Tensor& t, const std::string& what, const char* axes) {
  require_rank(t, what, 4, axes);
  require_float(t, what);
}

template <bool T>
Napi::Value forward(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& w, Tensor* b, Tensor* weights_cache) {
  auto cp = cached(s.key("fwd"), [&] {
    auto pd = winograd_fwd_pd<T>(s);
    debug_impl("fwd", s, pd.impl_info_str());
    return CachedPrimitive{pd, typename Prims<T>::fwd(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(x, cp.pd.src_desc(), keep);
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache, cp.pd.weights_desc(), fresh);
  Napi::Object y = Tensor::Create(env, cp.pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Of(y).mem()}};
  if (b) args.emplace(DNNL_ARG_BIAS, in_layout(*b, bias_md(s), keep));
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("weightsCache", fresh);
  return out;
}

template <bool T>
Napi::Value backward_data(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache) {
  if (input_grad_as_forward(s) && w.md.data_type() == dt::f32) return input_grad_by_forward(env, s, dy, w, weights_cache, false);
  auto cp = cached(s.key("bwdD"), [&] {
    using B = typename Prims<T>::bwd_data;
    auto hint = fwd_pd<T>(s);
    auto make = [&](const memory::desc& dx, const memory::desc& dy) {
      typename B::desc d(Prims<T>::alg, dx, any_layout(s.w, s.compute), dy, s.stride, s.pad_l, s.pad_r);
      return typename B::primitive_desc(d, cpu_engine(), hint);
    };
    // Activations in the forward pass's layouts (no reorder of x, y or their gradients
    // between the passes) when an optimised kernel supports them; else oneDNN's choice.
    auto pd = make(hint.src_desc(), hint.dst_desc());
    if (!optimised(pd.impl_info_str())) pd = make(any_layout(s.x, s.compute), any_layout(s.y, s.compute));
    debug_impl("bwdD", s, pd.impl_info_str());
    return CachedPrimitive{pd, B(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache, cp.pd.weights_desc(), fresh);
  Napi::Object dx = Tensor::Create(env, cp.pd.diff_src_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, Tensor::Of(dx).mem()}});
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  out.Set("weightsFlipped", false);
  return out;
}

// The float32 copy of a descriptor's layout (a bfloat16 gradient handed on in its own blocking).
memory::desc as_f32(const memory::desc& md) {
  dnnl_memory_desc_t d = md.data;
  d.data_type = dnnl_f32;
  return memory::desc(d);
}

// `algorithm`: "matmul", "direct", or "auto" (matmul over many pixels). `grad_any_layout`: dw may
// stay in the layout the computation left it in (float32 always), saving a reorder.
template <bool T>
Napi::Value backward_weights(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& dy, const std::string& algorithm, bool grad_any_layout) {
  const bool by_matmul = algorithm == "matmul" || (algorithm == "auto" && weight_grad_as_matmul(s));
  if (by_matmul) {
    if (!weight_grad_matmul_possible(s)) throw_range_error("algorithm 'matmul' is for stride-1 convolutions only (not transposed)");
    return weight_grad_by_matmul(env, s, x, dy, grad_any_layout);
  }
  auto cp = cached(s.key("bwdW"), [&] {
    using B = typename Prims<T>::bwd_weights;
    auto hint = fwd_pd<T>(s);
    auto make = [&](const memory::desc& x, const memory::desc& dy, dt dw_type) {
      auto d = s.has_bias ? typename B::desc(Prims<T>::alg, x, any_layout(s.w, dw_type), bias_md(s), dy, s.stride, s.pad_l, s.pad_r)
                          : typename B::desc(Prims<T>::alg, x, any_layout(s.w, dw_type), dy, s.stride, s.pad_l, s.pad_r);
      return typename B::primitive_desc(d, cpu_engine(), hint);
    };
    // From bf16 inputs, float32 weight gradients where an optimised kernel writes them: the
    // update reads float32, so a bf16 gradient would cost a conversion pass (and its rounding).
    auto try_make = [&](const memory::desc& x, const memory::desc& dy) {
      if (s.compute != dt::f32) {
        try {
          auto pd = make(x, dy, dt::f32);
          if (optimised(pd.impl_info_str())) return pd;
        } catch (const dnnl::error&) {
        }
      }
      return make(x, dy, s.compute);
    };
    auto pd = try_make(hint.src_desc(), hint.dst_desc());
    if (!optimised(pd.impl_info_str())) pd = try_make(any_layout(s.x, s.compute), any_layout(s.y, s.compute));
    debug_impl("bwdW", s, pd.impl_info_str());
    return CachedPrimitive{pd, B(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(x, cp.pd.src_desc(), keep);
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  // Gradients leave in the master weights' layout (plain O,I,KH,KW float32), or as computed.
  Napi::Object dw = Tensor::Create(env, grad_any_layout ? as_f32(cp.pd.diff_weights_desc()) : plain_desc(s.w, dt::f32));
  memory dw_mem = Tensor::Of(dw).mem();
  memory dw_prim = dw_mem;
  if (cp.pd.diff_weights_desc() != dw_mem.get_desc()) {
    keep.emplace_back(cp.pd.diff_weights_desc().get_size());
    dw_prim = memory(cp.pd.diff_weights_desc(), cpu_engine(), keep.back().ptr);
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dw_prim}};
  Napi::Value db = env.Null();
  if (s.has_bias) {
    db = Tensor::Create(env, memory::desc({s.w[0]}, dt::f32, tag::a));
    args.emplace(DNNL_ARG_DIFF_BIAS, Tensor::Of(db.As<Napi::Object>()).mem());
  }
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  if (dw_prim.get_data_handle() != dw_mem.get_data_handle()) reorder_into(dw_prim, dw_mem);
  auto out = Napi::Object::New(env);
  out.Set("dw", dw);
  out.Set("db", db);
  return out;
}

}  // namespace

// convForward(x, w, bias|null, {stride, padding, relu, transposed, dtype, algorithm, weightsCache})
// algorithm: 'direct', 'winograd' (oneDNN's, float32 convolution), 'winograd-gemm' (float32 stride-1
// 3×3 or 7×7 convolution: conv_winograd.h; y channels last) or 'subpixel' (transposed: conv_subpixel.h).
//   → {y, weightsCache: Tensor|null}
Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 3);
  const ConvOptions c = read_conv_options(o);
  const bool relu = opt_bool(o, "relu", false);
  const std::string algorithm = opt_choice(o, "algorithm", "direct", {"direct", "winograd", "winograd-gemm", "subpixel"});
  const bool winograd = algorithm == "winograd";
  if (winograd && (c.transposed || c.compute != dt::f32))
    throw_range_error("algorithm 'winograd' is for float32 convolution only (not transposed, not bfloat16)");
  if (algorithm == "subpixel" && !c.transposed) throw_range_error("algorithm 'subpixel' is for transposed convolution only");
  // The logits' upsampling in bfloat16 writes them as float32 in the same pass.
  const dt out = opt_dtype(o, "output", c.compute, {dt::f32, dt::bf16});
  if (out != c.compute && (algorithm != "subpixel" || out != dt::f32))
    throw_range_error("output '" + std::string(dtype_name(out)) + "' is for a bfloat16 convolution by algorithm 'subpixel' only");
  Napi::Value cache_arg = o.Get("weightsCache");
  Tensor& x = Tensor::From(info[0], "x");
  Tensor& w = Tensor::From(info[1], "weights");
  Tensor* b = Tensor::FromOptional(info[2], "bias");
  Tensor* cache = Tensor::FromOptional(cache_arg, "weightsCache");
  require_conv_operand(x, "x", "N,C,H,W");
  require_conv_operand(w, "weights", "O,I,KH,KW");
  if (b) {
    require_float(*b, "bias");
    require_dims(*b, "bias", {w.dims()[0]});
  }
  ConvSpec s = make_conv_spec(c, x.dims(), w.dims(), b != nullptr);
  s.relu = relu;
  s.winograd = winograd;
  if (algorithm == "subpixel") return subpixel_forward(info.Env(), s, x, w, b, cache, out);
  if (algorithm == "winograd-gemm") return winograd_gemm_forward(info.Env(), s, x, w.mem(), b, cache);
  return c.transposed ? forward<true>(info.Env(), s, x, w, b, cache) : forward<false>(info.Env(), s, x, w, b, cache);
}

// convBackwardData(dy, w, x, {stride, padding, transposed, dtype, bias, weightsCache, algorithm})
//   → {dx, weightsCache, weightsFlipped: whether the cache holds the flipped I,O,KH,KW form}
// algorithm: 'direct' (a convolution kernel), 'matmul' (a matrix product and col2im, stride 1) or
// 'winograd' / 'winograd-gemm' (oneDNN's or the engine's Winograd convolution over the flipped
// weights: float32, stride 1, 3×3; the engine's dx is channels last).
Napi::Value ConvBackwardData(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 3);
  const ConvOptions c = read_conv_options(o);
  const bool has_bias = opt_bool(o, "bias", false);
  Napi::Value cache_arg = o.Get("weightsCache");
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& w = Tensor::From(info[1], "weights");
  Tensor& x = Tensor::From(info[2], "x");
  Tensor* cache = Tensor::FromOptional(cache_arg, "weightsCache");
  require_conv_operand(dy, "dy", "N,C,H,W");
  require_conv_operand(w, "weights", "O,I,KH,KW");
  require_conv_operand(x, "x", "N,C,H,W");
  // The ReLU's own backward is applied to dy before this: the spec has none.
  const ConvSpec s = make_conv_spec(c, x.dims(), w.dims(), has_bias);
  require_dims(dy, "dy", s.y);
  const std::string algorithm = opt_choice(o, "algorithm", "direct", {"direct", "matmul", "winograd", "winograd-gemm"});
  if (algorithm == "matmul") {
    if (!input_grad_matmul_possible(s)) throw_range_error("algorithm 'matmul' is for stride-1 convolutions only (not transposed)");
    return input_grad_by_matmul(info.Env(), s, dy, w, cache);
  }
  if (algorithm == "winograd" || algorithm == "winograd-gemm") {
    if (!input_grad_as_forward(s) || c.compute != dt::f32 || w.md.data_type() != dt::f32)
      throw_range_error("algorithm '" + algorithm + "' is for float32 stride-1 convolutions only (not transposed)");
    return algorithm == "winograd" ? input_grad_by_forward(info.Env(), s, dy, w, cache, true) : input_grad_by_winograd_gemm(info.Env(), s, dy, w, cache);
  }
  return c.transposed ? backward_data<true>(info.Env(), s, dy, w, cache) : backward_data<false>(info.Env(), s, dy, w, cache);
}

// convBackwardWeights(x, dy, {weightsDims, bias, stride, padding, transposed, dtype, algorithm, gradLayout})
//   → {dw, db|null}
Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 2);
  const ConvOptions c = read_conv_options(o);
  const bool has_bias = opt_bool(o, "bias", false);
  const std::string algorithm = opt_choice(o, "algorithm", "auto", {"auto", "direct", "matmul"});
  const bool any_layout = opt_choice(o, "gradLayout", "plain", {"plain", "any"}) == "any";
  Napi::Value wd = o.Get("weightsDims");
  if (wd.IsUndefined()) throw_type_error("weightsDims must be given: [O, I, KH, KW]");
  const auto w_dims = read_ints(wd, "weightsDims", 4, 1, kMaxGeometry);
  checked_numel(w_dims, "weights of dims " + list_str(w_dims));
  Tensor& x = Tensor::From(info[0], "x");
  Tensor& dy = Tensor::From(info[1], "dy");
  require_conv_operand(x, "x", "N,C,H,W");
  require_conv_operand(dy, "dy", "N,C,H,W");
  const ConvSpec s = make_conv_spec(c, x.dims(), memory::dims(w_dims.begin(), w_dims.end()), has_bias);
  require_dims(dy, "dy", s.y);
  return c.transposed ? backward_weights<true>(info.Env(), s, x, dy, algorithm, any_layout) : backward_weights<false>(info.Env(), s, x, dy, algorithm, any_layout);
}

}  // namespace fcn
