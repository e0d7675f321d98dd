#include "optim.h"

#include <cmath>
#include <vector>

namespace fcn {

namespace {
void check_same(const Napi::Env& env, const Tensor& a, const Tensor& b, const char* what) {
  if (a.md != b.md) throw Napi::TypeError::New(env, std::string("optimizer: ") + what + " does not match the weights (" + md_key(b.md) + " vs " + md_key(a.md) + ")");
}
Napi::Object options(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsObject() ? info[i].As<Napi::Object>() : Napi::Object::New(info.Env());
}
}  // namespace

// adamUpdate(w, g, m, v, {alpha, beta1, beta2, epsilon, l2}): with g' = g + 2·l2·w,
// m ← m + (1−β1)(g' − m); v ← v + (1−β2)(g'² − v); w ← w − α·m/(√v + ε),
// where the caller passes α = lr·√(1−β2^t)/(1−β1^t) (Keras's bias correction).
Napi::Value AdamUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& w = Tensor::From(info[0], "weights");
  Tensor& g = Tensor::From(info[1], "grad");
  Tensor& m = Tensor::From(info[2], "m");
  Tensor& v = Tensor::From(info[3], "v");
  auto o = options(info, 4);
  if (w.md.data_type() != dt::f32) throw Napi::TypeError::New(env, "optimizer: weights must be float32");
  check_same(env, w, g, "grad");
  check_same(env, w, m, "m");
  check_same(env, w, v, "v");
  const float alpha = float(opt_num(o, "alpha", 1e-3)), b1 = float(opt_num(o, "beta1", 0.9)), b2 = float(opt_num(o, "beta2", 0.999));
  const float eps = float(opt_num(o, "epsilon", 1e-7)), l2x2 = float(2 * opt_num(o, "l2", 0));
  float *wp = static_cast<float*>(w.ptr), *mp = static_cast<float*>(m.ptr), *vp = static_cast<float*>(v.ptr);
  const float* gp = static_cast<const float*>(g.ptr);
  const int64_t n = int64_t(w.bytes / 4);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float gi = gp[i] + l2x2 * wp[i];
    float mi = mp[i] + (1.f - b1) * (gi - mp[i]);
    float vi = vp[i] + (1.f - b2) * (gi * gi - vp[i]);
    mp[i] = mi;
    vp[i] = vi;
    wp[i] -= alpha * mi / (std::sqrt(vi) + eps);
  }
  return env.Undefined();
}

// adamUpdateAll([w…], [g…], [m…], [v…], [l2…], {alpha, beta1, beta2, epsilon}): adamUpdate over
// every parameter in one call and one OpenMP region (no fork/join per tensor; small tensors
// such as biases share the threads' time with the large ones).
Napi::Value AdamUpdateAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (int i = 0; i < 5; i++)
    if (!info[i].IsArray()) throw Napi::TypeError::New(env, "adamUpdateAll: weights, grads, m, v and l2 must be arrays");
  auto W = info[0].As<Napi::Array>(), G = info[1].As<Napi::Array>(), M = info[2].As<Napi::Array>(), V = info[3].As<Napi::Array>(), L = info[4].As<Napi::Array>();
  const uint32_t k = W.Length();
  if (G.Length() != k || M.Length() != k || V.Length() != k || L.Length() != k) throw Napi::TypeError::New(env, "adamUpdateAll: the five arrays must have the same length");
  auto o = options(info, 5);
  const float alpha = float(opt_num(o, "alpha", 1e-3)), b1 = float(opt_num(o, "beta1", 0.9)), b2 = float(opt_num(o, "beta2", 0.999));
  const float eps = float(opt_num(o, "epsilon", 1e-7));
  struct Item {
    float *w, *m, *v;
    const float* g;
    int64_t n;
    float l2x2;
  };
  std::vector<Item> items;
  items.reserve(k);
  for (uint32_t i = 0; i < k; i++) {
    Tensor& w = Tensor::From(W.Get(i), "weights");
    Tensor& g = Tensor::From(G.Get(i), "grad");
    Tensor& m = Tensor::From(M.Get(i), "m");
    Tensor& v = Tensor::From(V.Get(i), "v");
    if (w.md.data_type() != dt::f32) throw Napi::TypeError::New(env, "optimizer: weights must be float32");
    check_same(env, w, g, "grad");
    check_same(env, w, m, "m");
    check_same(env, w, v, "v");
    Napi::Value l2 = L.Get(i);
    if (!l2.IsNumber()) throw Napi::TypeError::New(env, "adamUpdateAll: l2 must be numbers");
    items.push_back({static_cast<float*>(w.ptr), static_cast<float*>(m.ptr), static_cast<float*>(v.ptr), static_cast<const float*>(g.ptr), int64_t(w.bytes / 4),
                     float(2 * l2.As<Napi::Number>().DoubleValue())});
  }
#pragma omp parallel
  for (const Item& it : items) {
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
  return env.Undefined();
}

// sgdUpdate(w, g, v, {lr, momentum, weightDecay}): g' = g + wd·w; v ← μ·v − lr·g'; w ← w + v.
Napi::Value SgdUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& w = Tensor::From(info[0], "weights");
  Tensor& g = Tensor::From(info[1], "grad");
  Tensor& v = Tensor::From(info[2], "velocity");
  auto o = options(info, 3);
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
