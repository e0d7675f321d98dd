#include "pool.h"

namespace fcn {

namespace {

struct PoolSpec {
  memory::dims x, y, kernel, stride, pad_l{0, 0}, pad_r{0, 0};
  dt type;
  std::string key(const char* op) const {
    return std::string(op) + dtype_name(type) + "|" + dims_key(x) + "|" + dims_key(kernel) + "|" + dims_key(stride) + "|" + dims_key(pad_r);
  }
};

// Ceil rounding (Caffe) keeps a last, partial window: it is expressed as extra padding
// on the bottom/right, which max pooling ignores.
PoolSpec parse(const Napi::Env& env, const Tensor& x, const Napi::Object& o) {
  PoolSpec s;
  s.x = x.dims();
  if (s.x.size() != 4) throw Napi::TypeError::New(env, "maxPool: input must be N,C,H,W");
  int64_t k = opt_int(o, "kernel", 2), st = opt_int(o, "stride", k);
  bool ceil = opt_bool(o, "ceil", false);
  if (k < 1 || st < 1) throw Napi::TypeError::New(env, "maxPool: kernel and stride must be positive");
  s.kernel = {k, k};
  s.stride = {st, st};
  s.type = x.md.data_type();
  int64_t oh, ow;
  if (ceil) {
    oh = (s.x[2] - k + st - 1) / st + 1;
    ow = (s.x[3] - k + st - 1) / st + 1;
  } else {
    oh = (s.x[2] - k) / st + 1;
    ow = (s.x[3] - k) / st + 1;
  }
  if (s.x[2] < k || s.x[3] < k) throw Napi::TypeError::New(env, "maxPool: input " + dims_key(s.x) + " is smaller than the window");
  s.pad_r = {(oh - 1) * st + k - s.x[2], (ow - 1) * st + k - s.x[3]};
  s.y = {s.x[0], s.x[1], oh, ow};
  return s;
}


}  // namespace

// maxPoolForward(x, {kernel = 2, stride = kernel, ceil = false, training = false})
//   → {y, workspace: Tensor|null}. Pooling keeps x's layout (no reorder for blocked inputs).
Napi::Value MaxPoolForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  auto o = opt_object(info, 1);
  PoolSpec s = parse(env, x, o);
  bool training = opt_bool(o, "training", false);
  // The source layout is part of the key: pooling runs in whatever layout x already has.
  auto& cp = cached(s.key(training ? "poolT" : "poolI") + md_key(x.md), [&] {
    dnnl::pooling_forward::desc d(training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                  x.md, memory::desc(s.y, s.type, tag::any), s.stride, s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::pooling_forward(pd)};
  });
  Napi::Object y = Tensor::Create(env, cp.pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Unwrap(y)->mem()}};
  Napi::Value ws = env.Null();
  if (training) {
    ws = Tensor::Create(env, cp.pd.workspace_desc());
    args.emplace(DNNL_ARG_WORKSPACE, Tensor::Unwrap(ws.As<Napi::Object>())->mem());
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
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& ws = Tensor::From(info[1], "workspace");
  Tensor& x = Tensor::From(info[2], "x");
  auto o = opt_object(info, 3);
  PoolSpec s = parse(env, x, o);
  if (dy.dims() != s.y) throw Napi::TypeError::New(env, "maxPool backward: dy is " + dims_key(dy.dims()) + ", expected " + dims_key(s.y));
  auto& cp = cached(s.key("poolB") + md_key(x.md) + md_key(dy.md), [&] {
    dnnl::pooling_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, x.md, memory::desc(s.y, s.type, tag::any), s.stride,
                                   s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_forward::primitive_desc hint(fd, cpu_engine());
    dnnl::pooling_backward::desc d(dnnl::algorithm::pooling_max, x.md, hint.dst_desc(), s.stride, s.kernel, s.pad_l, s.pad_r);
    dnnl::pooling_backward::primitive_desc pd(d, cpu_engine(), hint);
    return CachedPrimitive{pd, dnnl::pooling_backward(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  if (ws.md != cp.pd.workspace_desc()) throw Napi::TypeError::New(env, "maxPool backward: workspace does not belong to this pooling");
  Napi::Object dx = Tensor::Create(env, cp.pd.diff_src_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WORKSPACE, ws.mem()}, {DNNL_ARG_DIFF_SRC, Tensor::Unwrap(dx)->mem()}});
  cpu_stream().wait();
  return dx;
}

}  // namespace fcn
