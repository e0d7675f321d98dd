#include "eltwise.h"

#include <algorithm>
#include <cmath>

namespace fcn {

namespace {


// Element count of the buffer, padding included: element-wise ops run over the raw
// buffer, so they work in any layout (padding zeros stay zero under every op here).
size_t buffer_elems(const Tensor& t) { return t.bytes / dtype_size(t.md.data_type()); }

// A counter-based hash (splitmix64 finaliser): the mask depends only on the seed and the
// element's position, so it is the same for any thread count and can be recomputed.
inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

template <typename T>
inline float ld(const T* p, size_t i);
template <>
inline float ld<float>(const float* p, size_t i) { return p[i]; }
template <>
inline float ld<uint16_t>(const uint16_t* p, size_t i) { return bf16_to_f32(p[i]); }
template <typename T>
inline void st(T* p, size_t i, float v);
template <>
inline void st<float>(float* p, size_t i, float v) { p[i] = v; }
template <>
inline void st<uint16_t>(uint16_t* p, size_t i, float v) { p[i] = f32_to_bf16(v); }

template <typename T>
void dropout_fwd(const T* x, T* y, uint8_t* mask, size_t n, float rate, uint64_t seed) {
  const float keep_scale = 1.f / (1.f - rate);
  const uint64_t threshold = uint64_t(double(rate) * 18446744073709551616.0);
  const uint64_t key = mix(seed + 0x9e3779b97f4a7c15ULL);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(n); i++) {
    bool keep = mix(key ^ uint64_t(i)) >= threshold;
    mask[i] = keep;
    st(y, size_t(i), keep ? ld(x, size_t(i)) * keep_scale : 0.f);
  }
}

template <typename T>
void dropout_bwd(const T* dy, const uint8_t* mask, T* dx, size_t n, float rate) {
  const float keep_scale = 1.f / (1.f - rate);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(n); i++) st(dx, size_t(i), mask[i] ? ld(dy, size_t(i)) * keep_scale : 0.f);
}

memory::desc with_type(memory::desc md, dt type) {
  md.data.data_type = static_cast<dnnl_data_type_t>(type);
  return md;
}

}  // namespace

// reluForward(x) → y, in x's layout.
Napi::Value ReluForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  auto& cp = cached("reluF" + md_key(x.md), [&] {
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_relu, x.md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::eltwise_forward(pd)};
  });
  Napi::Object y = Tensor::Create(env, x.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Unwrap(y)->mem()}});
  cpu_stream().wait();
  return y;
}

// reluBackward(dy, y) → dx: uses the ReLU's output, so a ReLU fused into a convolution
// needs nothing kept but that convolution's output.
Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& y = Tensor::From(info[1], "y");
  if (dy.dims() != y.dims()) throw Napi::TypeError::New(env, "reluBackward: dy is " + dims_key(dy.dims()) + " but y is " + dims_key(y.dims()));
  auto& cp = cached("reluB" + md_key(y.md), [&] {
    dnnl::eltwise_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, y.md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc hint(fd, cpu_engine());
    dnnl::eltwise_backward::desc d(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, y.md, y.md, 0.f, 0.f);
    dnnl::eltwise_backward::primitive_desc pd(d, cpu_engine(), hint);
    return CachedPrimitive{pd, dnnl::eltwise_backward(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, y.md, keep);
  Napi::Object dx = Tensor::Create(env, y.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DST, y.mem()}, {DNNL_ARG_DIFF_SRC, Tensor::Unwrap(dx)->mem()}});
  cpu_stream().wait();
  return dx;
}

// add(a, b) → a + b in a's layout (b is reordered to it when needed).
Napi::Value Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& a = Tensor::From(info[0], "a");
  Tensor& b = Tensor::From(info[1], "b");
  if (a.dims() != b.dims()) throw Napi::TypeError::New(env, "add: shapes differ (" + dims_key(a.dims()) + " vs " + dims_key(b.dims()) + ")");
  auto& cp = cached("add" + md_key(a.md), [&] {
    dnnl::binary::desc d(dnnl::algorithm::binary_add, a.md, a.md, a.md);
    dnnl::binary::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::binary(pd)};
  });
  std::vector<Scratch> keep;
  memory bm = in_layout(b, a.md, keep);
  Napi::Object c = Tensor::Create(env, a.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC_0, a.mem()}, {DNNL_ARG_SRC_1, bm}, {DNNL_ARG_DST, Tensor::Unwrap(c)->mem()}});
  cpu_stream().wait();
  return c;
}

// scale(x, s) → s·x, in x's layout.
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "scale: factor must be a number");
  float s = info[1].As<Napi::Number>().FloatValue();
  auto& cp = cached("scale" + md_key(x.md) + std::to_string(s), [&] {
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_linear, x.md, s, 0.f);
    dnnl::eltwise_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::eltwise_forward(pd)};
  });
  Napi::Object y = Tensor::Create(env, x.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Unwrap(y)->mem()}});
  cpu_stream().wait();
  return y;
}

// dropoutForward(x, {rate, seed}) → {y, mask}: inverted dropout (kept values scaled by
// 1/(1−rate)); the mask is one byte per element in x's layout.
Napi::Value DropoutForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  auto o = opt_object(info, 1);
  double rate = opt_num(o, "rate", 0.5);
  if (!(rate >= 0 && rate < 1)) throw Napi::TypeError::New(env, "dropout: rate must be in [0, 1)");
  uint64_t seed = uint64_t(opt_num(o, "seed", 0));
  Napi::Object y = Tensor::Create(env, x.md);
  Napi::Object mask = Tensor::Create(env, with_type(x.md, dt::u8));
  Tensor* yt = Tensor::Unwrap(y);
  Tensor* mt = Tensor::Unwrap(mask);
  size_t n = buffer_elems(x);
  if (x.md.data_type() == dt::f32)
    dropout_fwd(static_cast<const float*>(x.ptr), static_cast<float*>(yt->ptr), static_cast<uint8_t*>(mt->ptr), n, float(rate), seed);
  else if (x.md.data_type() == dt::bf16)
    dropout_fwd(static_cast<const uint16_t*>(x.ptr), static_cast<uint16_t*>(yt->ptr), static_cast<uint8_t*>(mt->ptr), n, float(rate), seed);
  else
    throw Napi::TypeError::New(env, "dropout: x must be float32 or bfloat16");
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("mask", mask);
  return out;
}

// dropoutBackward(dy, mask, {rate}) → dx
Napi::Value DropoutBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& mask = Tensor::From(info[1], "mask");
  auto o = opt_object(info, 2);
  double rate = opt_num(o, "rate", 0.5);
  std::vector<Scratch> keep;
  memory::desc want = with_type(mask.md, dy.md.data_type());
  memory d = in_layout(dy, want, keep);
  Napi::Object dx = Tensor::Create(env, want);
  Tensor* dxt = Tensor::Unwrap(dx);
  size_t n = buffer_elems(*dxt);
  if (want.data_type() == dt::f32)
    dropout_bwd(static_cast<const float*>(d.get_data_handle()), static_cast<const uint8_t*>(mask.ptr), static_cast<float*>(dxt->ptr), n, float(rate));
  else
    dropout_bwd(static_cast<const uint16_t*>(d.get_data_handle()), static_cast<const uint8_t*>(mask.ptr), static_cast<uint16_t*>(dxt->ptr), n, float(rate));
  return dx;
}

// cropPad(x, {top, left, height, width, value = 0}) → y (plain N,C,height,width) with
// y[.., i, j] = x[.., i + top, j + left] where that lies inside x, else `value`.
// Negative offsets pad; its own backward is cropPad with the offsets negated. The result is
// always plain float32: this is the edge where the network's output leaves oneDNN layouts.
Napi::Value CropPad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  auto o = opt_object(info, 1);
  auto d = x.dims();
  if (d.size() != 4) throw Napi::TypeError::New(env, "cropPad: x must be N,C,H,W");
  int64_t top = opt_int(o, "top", 0), left = opt_int(o, "left", 0);
  int64_t oh = opt_int(o, "height", d[2]), ow = opt_int(o, "width", d[3]);
  float value = float(opt_num(o, "value", 0));
  if (oh < 1 || ow < 1) throw Napi::TypeError::New(env, "cropPad: height and width must be positive");
  std::vector<Scratch> keep;
  memory src = in_layout(x, plain_desc(d, dt::f32), keep);
  const float* xp = static_cast<const float*>(src.get_data_handle());
  Napi::Object y = Tensor::Create(env, plain_desc({d[0], d[1], oh, ow}, dt::f32));
  float* yp = static_cast<float*>(Tensor::Unwrap(y)->ptr);
  const int64_t H = d[2], W = d[3], planes = d[0] * d[1];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; p++) {
    for (int64_t i = 0; i < oh; i++) {
      int64_t si = i + top;
      float* row = yp + (p * oh + i) * ow;
      if (si < 0 || si >= H) {
        for (int64_t j = 0; j < ow; j++) row[j] = value;
        continue;
      }
      const float* srow = xp + (p * H + si) * W;
      for (int64_t j = 0; j < ow; j++) {
        int64_t sj = j + left;
        row[j] = (sj >= 0 && sj < W) ? srow[sj] : value;
      }
    }
  }
  return y;
}

// argmax(x) → uint8 N,H,W: the index of the largest channel (the first on ties).
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& x = Tensor::From(info[0], "x");
  auto d = x.dims();
  if (d.size() != 4) throw Napi::TypeError::New(env, "argmax: x must be N,C,H,W");
  if (d[1] > 255) throw Napi::TypeError::New(env, "argmax: at most 255 channels");
  std::vector<Scratch> keep;
  memory src = in_layout(x, plain_desc(d, dt::f32), keep);
  const float* xp = static_cast<const float*>(src.get_data_handle());
  Napi::Object y = Tensor::Create(env, plain_desc({d[0], d[2], d[3]}, dt::u8));
  uint8_t* yp = static_cast<uint8_t*>(Tensor::Unwrap(y)->ptr);
  const int64_t C = d[1], HW = d[2] * d[3];
  // Threads split every image into runs of pixels (batch 1 is the common case), each
  // keeping its running maxima on the stack.
  constexpr int64_t RUN = 1024;
  const int64_t runs = (HW + RUN - 1) / RUN;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < d[0] * runs; job++) {
    const int64_t n = job / runs, p0 = (job % runs) * RUN, len = std::min(RUN, HW - p0);
    const float* base = xp + n * C * HW + p0;
    uint8_t* out = yp + n * HW + p0;
    float best[RUN];
    std::copy(base, base + len, best);
    std::fill(out, out + len, 0);
    for (int64_t c = 1; c < C; c++) {
      const float* plane = base + c * HW;
      for (int64_t i = 0; i < len; i++)
        if (plane[i] > best[i]) {
          best[i] = plane[i];
          out[i] = uint8_t(c);
        }
    }
  }
  return y;
}

}  // namespace fcn
