#include "optim.h"

#include <cmath>
#include <vector>

namespace fcn {

namespace {
void check_same(const Tensor& w, const Tensor& t, const std::string& what) {
  if (w.md.dims() != t.md.dims()) throw_range_error(what + " does not match the weights (" + dims_key(t.dims()) + " vs " + dims_key(w.dims()) + ")");
  if (w.md != t.md) throw_type_error(what + " does not match the weights (" + md_key(t.md) + " vs " + md_key(w.md) + ")");
}

// One parameter's Adam update: with g' = g + 2·l2·w, m ← m + (1−β1)(g' − m);
// v ← v + (1−β2)(g'² − v); w ← w − α·m/(√v + ε), where the caller passes
// α = lr·√(1−β2^t)/(1−β1^t) (Keras's bias correction).
struct AdamItem {
  float *w, *m, *v;
  const float* g;
  int64_t n;
  float l2x2;
};

// `which` names the parameter in messages ("" for the only one).
AdamItem adam_item(const Napi::Value& W, const Napi::Value& G, const Napi::Value& M, const Napi::Value& V, double l2, const std::string& which) {
  Tensor& w = Tensor::From(W, which + "weights");
  Tensor& g = Tensor::From(G, which + "grad");
  Tensor& m = Tensor::From(M, which + "m");
  Tensor& v = Tensor::From(V, which + "v");
  require_dtype(w, which + "weights", {dt::f32});
  check_same(w, g, which + "grad");
  check_same(w, m, which + "m");
  check_same(w, v, which + "v");
  return {static_cast<float*>(w.ptr), static_cast<float*>(m.ptr), static_cast<float*>(v.ptr), static_cast<const float*>(g.ptr), int64_t(w.bytes / 4), float(2 * l2)};
}

struct AdamHyper {
  float alpha, b1, b2, eps;
};

AdamHyper adam_hyper(const Napi::Object& o) {
  return {float(opt_num(o, "alpha", 1e-3)), float(opt_num(o, "beta1", 0.9)), float(opt_num(o, "beta2", 0.999)), float(opt_num(o, "epsilon", 1e-7))};
}

// Every parameter in one OpenMP region (no fork/join per tensor; biases share the threads'
// time with the large kernels).
void adam_apply(const std::vector<AdamItem>& items, const AdamHyper& h) {
  const float alpha = h.alpha, b1 = h.b1, b2 = h.b2, eps = h.eps;
#pragma omp parallel
  for (const AdamItem& it : items) {
    float *wp = it.w, *mp = it.m, *vp = it.v;
    const float* gp = it.g;
    const float l2x2 = it.l2x2;
#pragma omp for simd schedule(static) nowait
    for (int64_t i = 0; i < it.n; i++) {
      float gi = gp[i] + l2x2 * wp[i];
      float mi = mp[i] + (1.f - b1) * (gi - mp[i]);
      float vi = vp[i] + (1.f - b2) * (gi * gi - vp[i]);
      mp[i] = mi;
      vp[i] = vi;
      wp[i] -= alpha * mi / (std::sqrt(vi) + eps);
    }
  }
}
}  // namespace

// adamUpdate(w, g, m, v, {alpha, beta1, beta2, epsilon, l2}): one parameter (see AdamItem).
Napi::Value AdamUpdate(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 4);
  const AdamHyper h = adam_hyper(o);
  const double l2 = opt_num(o, "l2", 0);
  adam_apply({adam_item(info[0], info[1], info[2], info[3], l2, "")}, h);
  return info.Env().Undefined();
}

// adamUpdateAll([w…], [g…], [m…], [v…], [l2…], {alpha, beta1, beta2, epsilon}): every
// parameter in one call; l2[i] applies to w[i].
Napi::Value AdamUpdateAll(const Napi::CallbackInfo& info) {
  const char* names[5] = {"weights", "grads", "m", "v", "l2"};
  for (int i = 0; i < 5; i++)
    if (!info[i].IsArray()) throw_type_error(std::string(names[i]) + " must be an array, got " + describe(info[i]));
  const AdamHyper h = adam_hyper(options_arg(info, 5));
  auto W = info[0].As<Napi::Array>(), G = info[1].As<Napi::Array>(), M = info[2].As<Napi::Array>(), V = info[3].As<Napi::Array>(), L = info[4].As<Napi::Array>();
  const uint32_t k = W.Length();
  if (G.Length() != k || M.Length() != k || V.Length() != k || L.Length() != k)
    throw_range_error("the five arrays must have the same length, got " + list_str({W.Length(), G.Length(), M.Length(), V.Length(), L.Length()}));
  // Everything is read from JS (array getters may run) before any tensor is touched.
  // (No room is reserved up front: a sparse array can claim billions of elements it does not
  // hold, and the first missing one ends the call.)
  std::vector<double> l2;
  for (uint32_t i = 0; i < k; i++) l2.push_back(read_number(L.Get(i), "l2[" + std::to_string(i) + "]"));
  std::vector<AdamItem> items;
  for (uint32_t i = 0; i < k; i++) items.push_back(adam_item(W.Get(i), G.Get(i), M.Get(i), V.Get(i), l2[i], "parameter " + std::to_string(i) + ": "));
  adam_apply(items, h);
  return info.Env().Undefined();
}

// sgdUpdate(w, g, v, {lr, momentum, weightDecay}): g' = g + wd·w; v ← μ·v − lr·g'; w ← w + v.
Napi::Value SgdUpdate(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 3);
  const float lr = float(opt_num(o, "lr", 1e-3)), mu = float(opt_num(o, "momentum", 0)), wd = float(opt_num(o, "weightDecay", 0));
  Tensor& w = Tensor::From(info[0], "weights");
  Tensor& g = Tensor::From(info[1], "grad");
  Tensor& v = Tensor::From(info[2], "velocity");
  require_dtype(w, "weights", {dt::f32});
  check_same(w, g, "grad");
  check_same(w, v, "velocity");
  float *wp = static_cast<float*>(w.ptr), *vp = static_cast<float*>(v.ptr);
  const float* gp = static_cast<const float*>(g.ptr);
  const int64_t n = int64_t(w.bytes / 4);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float vi = mu * vp[i] - lr * (gp[i] + wd * wp[i]);
    vp[i] = vi;
    wp[i] += vi;
  }
  return info.Env().Undefined();
}

// sumSquares(t) → Σ t² (double accumulation), for the L2 term of the reported loss.
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Tensor& t = Tensor::From(info[0], "tensor");
  require_dtype(t, "tensor", {dt::f32});
  const float* p = static_cast<const float*>(t.ptr);
  const int64_t n = int64_t(t.bytes / 4);
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (int64_t i = 0; i < n; i++) s += double(p[i]) * double(p[i]);
  return Napi::Number::New(info.Env(), s);
}

}  // namespace fcn
