#include "optim.h"

#include <cmath>
#include <vector>

namespace fcn {

namespace {
void check_same(const Napi::Env& env, const Tensor& a, const Tensor& b, const char* what) {
  if (a.md != b.md) throw Napi::TypeError::New(env, std::string("optimizer: ") + what + " does not match the weights (" + md_key(b.md) + " vs " + md_key(a.md) + ")");
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

AdamItem adam_item(const Napi::Env& env, const Napi::Value& W, const Napi::Value& G, const Napi::Value& M, const Napi::Value& V, double l2) {
  Tensor& w = Tensor::From(W, "weights");
  Tensor& g = Tensor::From(G, "grad");
  Tensor& m = Tensor::From(M, "m");
  Tensor& v = Tensor::From(V, "v");
  if (w.md.data_type() != dt::f32) throw Napi::TypeError::New(env, "optimizer: weights must be float32");
  check_same(env, w, g, "grad");
  check_same(env, w, m, "m");
  check_same(env, w, v, "v");
  return {static_cast<float*>(w.ptr), static_cast<float*>(m.ptr), static_cast<float*>(v.ptr), static_cast<const float*>(g.ptr), int64_t(w.bytes / 4), float(2 * l2)};
}

// Every parameter in one OpenMP region (no fork/join per tensor; biases share the threads'
// time with the large kernels).
void adam_apply(const std::vector<AdamItem>& items, const Napi::Object& o) {
  const float alpha = float(opt_num(o, "alpha", 1e-3)), b1 = float(opt_num(o, "beta1", 0.9)), b2 = float(opt_num(o, "beta2", 0.999));
  const float eps = float(opt_num(o, "epsilon", 1e-7));
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
  Napi::Env env = info.Env();
  auto o = opt_object(info, 4);
  adam_apply({adam_item(env, info[0], info[1], info[2], info[3], opt_num(o, "l2", 0))}, o);
  return env.Undefined();
}

// adamUpdateAll([w…], [g…], [m…], [v…], [l2…], {alpha, beta1, beta2, epsilon}): every
// parameter in one call; l2[i] applies to w[i].
Napi::Value AdamUpdateAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (int i = 0; i < 5; i++)
    if (!info[i].IsArray()) throw Napi::TypeError::New(env, "adamUpdateAll: weights, grads, m, v and l2 must be arrays");
  auto W = info[0].As<Napi::Array>(), G = info[1].As<Napi::Array>(), M = info[2].As<Napi::Array>(), V = info[3].As<Napi::Array>(), L = info[4].As<Napi::Array>();
  const uint32_t k = W.Length();
  if (G.Length() != k || M.Length() != k || V.Length() != k || L.Length() != k) throw Napi::TypeError::New(env, "adamUpdateAll: the five arrays must have the same length");
  std::vector<AdamItem> items;
  items.reserve(k);
  for (uint32_t i = 0; i < k; i++) {
    Napi::Value l2 = L.Get(i);
    if (!l2.IsNumber()) throw Napi::TypeError::New(env, "adamUpdateAll: l2 must be numbers");
    items.push_back(adam_item(env, W.Get(i), G.Get(i), M.Get(i), V.Get(i), l2.As<Napi::Number>().DoubleValue()));
  }
  adam_apply(items, opt_object(info, 5));
  return env.Undefined();
}

// sgdUpdate(w, g, v, {lr, momentum, weightDecay}): g' = g + wd·w; v ← μ·v − lr·g'; w ← w + v.
Napi::Value SgdUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& w = Tensor::From(info[0], "weights");
  Tensor& g = Tensor::From(info[1], "grad");
  Tensor& v = Tensor::From(info[2], "velocity");
  auto o = opt_object(info, 3);
  if (w.md.data_type() != dt::f32) throw Napi::TypeError::New(env, "optimizer: weights must be float32");
  check_same(env, w, g, "grad");
  check_same(env, w, v, "velocity");
  const float lr = float(opt_num(o, "lr", 1e-3)), mu = float(opt_num(o, "momentum", 0)), wd = float(opt_num(o, "weightDecay", 0));
  float *wp = static_cast<float*>(w.ptr), *vp = static_cast<float*>(v.ptr);
  const float* gp = static_cast<const float*>(g.ptr);
  const int64_t n = int64_t(w.bytes / 4);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float vi = mu * vp[i] - lr * (gp[i] + wd * wp[i]);
    vp[i] = vi;
    wp[i] += vi;
  }
  return env.Undefined();
}

// sumSquares(t) → Σ t² (double accumulation), for the L2 term of the reported loss.
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Tensor& t = Tensor::From(info[0], "tensor");
  if (t.md.data_type() != dt::f32) throw Napi::TypeError::New(info.Env(), "sumSquares: tensor must be float32");
  const float* p = static_cast<const float*>(t.ptr);
  const int64_t n = int64_t(t.bytes / 4);
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (int64_t i = 0; i < n; i++) s += double(p[i]) * double(p[i]);
  return Napi::Number::New(info.Env(), s);
}

}  // namespace fcn
