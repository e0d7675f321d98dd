#include "pool.h"

#include <algorithm>

namespace fcn {

namespace {

struct PoolSpec {
  memory::dims x, y, kernel, stride, pad_l{0, 0}, pad_r{0, 0};
  dt type;
  std::string key(const char* op) const {
    return std::string(op) + dtype_name(type) + "|" + dims_key(x) + "|" + dims_key(kernel) + "|" + dims_key(stride) + "|" + dims_key(pad_r);
  }
};

struct PoolOptions {
  int64_t kernel, stride;
  bool ceil;
};

PoolOptions read_options(const Napi::Object& o) {
  PoolOptions p;
  p.kernel = opt_int(o, "kernel", 2, 1, kMaxGeometry);
  p.stride = opt_int(o, "stride", p.kernel, 1, kMaxGeometry);
  p.ceil = opt_bool(o, "ceil", false);
  return p;
}

// Ceil rounding (Caffe) keeps a last, partial window: it is expressed as extra padding
// on the bottom/right, which max pooling ignores. A last window that would start past the
// input (possible when the stride exceeds the kernel) would cover nothing and is dropped.
// Floor rounding needs no padding: oneDNN's size rule rounds down too.
// uint8 x (the int8 inference path's activations) pools for inference only: nothing trains in
// uint8, and oneDNN's backward would need float gradients of it.
PoolSpec make_spec(const Tensor& x, const PoolOptions& p, bool inference) {
  PoolSpec s;
  require_rank(x, "x", 4, "N,C,H,W");
  if (x.md.data_type() == dt::u8 && !inference) throw_type_error("x is uint8, which max pooling takes for inference only (training: false)");
  if (inference) require_dtype(x, "x", {dt::f32, dt::bf16, dt::u8});
  else require_float(x, "x");
  s.x = x.dims();
  for (int i = 1; i < 4; i++)
    if (s.x[i] > kMaxGeometry) throw_range_error("x is " + dims_key(s.x) + ": sizes above " + std::to_string(kMaxGeometry) + " are not supported");
  const int64_t k = p.kernel, st = p.stride;
  if (s.x[2] < k || s.x[3] < k) throw_range_error("input " + dims_key(s.x) + " is smaller than the window (" + std::to_string(k) + ")");
  s.kernel = {k, k};
  s.stride = {st, st};
  s.type = x.md.data_type();
  memory::dims out(2);
  for (int i = 0; i < 2; i++) {
    const int64_t in = s.x[2 + i];
    int64_t o = p.ceil ? (in - k + st - 1) / st + 1 : (in - k) / st + 1;
    if (p.ceil && (o - 1) * st >= in) o--;
    out[size_t(i)] = o;
  }
  for (int i = 0; i < 2; i++) s.pad_r[size_t(i)] = std::max<int64_t>(0, (out[size_t(i)] - 1) * st + k - s.x[2 + size_t(i)]);
  s.y = {s.x[0], s.x[1], out[0], out[1]};
  return s;
}

}  // namespace

// maxPoolForward(x, {kernel = 2, stride = kernel, ceil = false, training = false})
//   → {y, workspace: Tensor|null}. Pooling keeps x's layout (no reorder for blocked inputs) and
// dtype (float32, bfloat16, or uint8 for inference).
Napi::Value MaxPoolForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = options_arg(info, 1);
  const PoolOptions p = read_options(o);
  const bool training = opt_bool(o, "training", false);
  Tensor& x = Tensor::From(info[0], "x");
  PoolSpec s = make_spec(x, p, !training);
  // The source layout is part of the key: pooling runs in whatever layout x already has.
  auto cp = cached(s.key(training ? "poolT" : "poolI") + md_key(x.md), [&] {
    dnnl::pooling_forward::desc d(training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                  x.md, memory::desc(s.y, s.type, tag::any), s.stride, s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::pooling_forward(pd)};
  });
  Napi::Object y = Tensor::Create(env, cp.pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Of(y).mem()}};
  Napi::Value ws = env.Null();
  if (training) {
    ws = Tensor::Create(env, cp.pd.workspace_desc());
    args.emplace(DNNL_ARG_WORKSPACE, Tensor::Of(ws.As<Napi::Object>()).mem());
  }
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("workspace", ws);
  return out;
}

// maxPoolBackward(dy, workspace, x, {kernel, stride, ceil}) → dx (in x's layout)
Napi::Value MaxPoolBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const PoolOptions p = read_options(options_arg(info, 3));
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& ws = Tensor::From(info[1], "workspace");
  Tensor& x = Tensor::From(info[2], "x");
  PoolSpec s = make_spec(x, p, false);
  require_float(dy, "dy");
  require_dims(dy, "dy", s.y);
  auto cp = cached(s.key("poolB") + md_key(x.md) + md_key(dy.md), [&] {
    dnnl::pooling_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, x.md, memory::desc(s.y, s.type, tag::any), s.stride,
                                   s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_forward::primitive_desc hint(fd, cpu_engine());
    dnnl::pooling_backward::desc d(dnnl::algorithm::pooling_max, x.md, hint.dst_desc(), s.stride, s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_backward::primitive_desc pd(d, cpu_engine(), hint);
    return CachedPrimitive{pd, dnnl::pooling_backward(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  if (ws.md != cp.pd.workspace_desc()) throw_range_error("the workspace does not belong to this pooling (" + md_key(ws.md) + ", expected " + md_key(cp.pd.workspace_desc()) + ")");
  Napi::Object dx = Tensor::Create(env, cp.pd.diff_src_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WORKSPACE, ws.mem()}, {DNNL_ARG_DIFF_SRC, Tensor::Of(dx).mem()}});
  cpu_stream().wait();
  return dx;
}

}  // namespace fcn
