#include "eltwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

// Each image draws its mask from its own key, (seed, its index in the whole batch), at each
// element's logical (C,H,W) position: a process that holds images k… of a batch (an MPI rank)
// draws for them what one process holding the whole batch draws.
template <typename T>
void dropout_fwd(const T* x, T* y, uint8_t* mask, size_t n, size_t per_image, uint64_t first_image, float rate, uint64_t seed) {
  const float keep_scale = 1.f / (1.f - rate);
  const uint64_t threshold = uint64_t(double(rate) * 18446744073709551616.0);
  const uint64_t key = mix(seed + 0x9e3779b97f4a7c15ULL);
  // Image by image, its key drawn once (a division and a hash per element were most of the time).
  for (size_t b = 0; b < n / per_image; b++) {
    const uint64_t image_key = mix(key ^ ((first_image + b) * 0xd1b54a32d192ed03ULL));
    const size_t base = b * per_image;
#pragma omp parallel for schedule(static)
    for (int64_t at = 0; at < int64_t(per_image); at++) {
      const bool keep = mix(image_key ^ uint64_t(at)) >= threshold;
      const size_t i = base + size_t(at);
      mask[i] = keep;
      st(y, i, keep ? ld(x, i) * keep_scale : 0.f);
    }
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
  Tensor& x = Tensor::From(info[0], "x");
  require_float(x, "x");
  auto cp = cached("reluF" + md_key(x.md), [&] {
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_relu, x.md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::eltwise_forward(pd)};
  });
  Napi::Object y = Tensor::Create(info.Env(), x.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Of(y).mem()}});
  cpu_stream().wait();
  return y;
}

// reluBackward(dy, y) → dx: uses the ReLU's output, so a ReLU fused into a convolution
// needs nothing kept but that convolution's output.
Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& y = Tensor::From(info[1], "y");
  require_float(dy, "dy");
  require_float(y, "y");
  if (dy.dims() != y.dims()) throw_range_error("dy is " + dims_key(dy.dims()) + " but y is " + dims_key(y.dims()));
  auto cp = cached("reluB" + md_key(y.md), [&] {
    dnnl::eltwise_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, y.md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc hint(fd, cpu_engine());
    dnnl::eltwise_backward::desc d(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, y.md, y.md, 0.f, 0.f);
    dnnl::eltwise_backward::primitive_desc pd(d, cpu_engine(), hint);
    return CachedPrimitive{pd, dnnl::eltwise_backward(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, y.md, keep);
  Napi::Object dx = Tensor::Create(info.Env(), y.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DST, y.mem()}, {DNNL_ARG_DIFF_SRC, Tensor::Of(dx).mem()}});
  cpu_stream().wait();
  return dx;
}

// add(a, b) → a + b in a's layout (b is reordered to it when needed).
Napi::Value Add(const Napi::CallbackInfo& info) {
  Tensor& a = Tensor::From(info[0], "a");
  Tensor& b = Tensor::From(info[1], "b");
  require_float(a, "a");
  require_float(b, "b");
  if (a.dims() != b.dims()) throw_range_error("shapes differ (" + dims_key(a.dims()) + " vs " + dims_key(b.dims()) + ")");
  auto cp = cached("add" + md_key(a.md), [&] {
    dnnl::binary::desc d(dnnl::algorithm::binary_add, a.md, a.md, a.md);
    dnnl::binary::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::binary(pd)};
  });
  std::vector<Scratch> keep;
  memory bm = in_layout(b, a.md, keep);
  Napi::Object c = Tensor::Create(info.Env(), a.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC_0, a.mem()}, {DNNL_ARG_SRC_1, bm}, {DNNL_ARG_DST, Tensor::Of(c).mem()}});
  cpu_stream().wait();
  return c;
}

// scale(x, s) → s·x, in x's layout.
Napi::Value Scale(const Napi::CallbackInfo& info) {
  const float s = float(read_number(info[1], "factor"));
  Tensor& x = Tensor::From(info[0], "x");
  require_float(x, "x");
  // The primitive bakes the factor in: the key holds its exact bits (printing it with a
  // fixed number of decimals would let nearby factors share a primitive).
  uint32_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  auto cp = cached("scale" + md_key(x.md) + "|" + std::to_string(bits), [&] {
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_linear, x.md, s, 0.f);
    dnnl::eltwise_forward::primitive_desc pd(d, cpu_engine());
    return CachedPrimitive{pd, dnnl::eltwise_forward(pd)};
  });
  Napi::Object y = Tensor::Create(info.Env(), x.md);
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, x.mem()}, {DNNL_ARG_DST, Tensor::Of(y).mem()}});
  cpu_stream().wait();
  return y;
}

namespace {
double dropout_rate(const Napi::Object& o) {
  const double rate = opt_num(o, "rate", 0.5);
  if (!(rate >= 0 && rate < 1)) throw_range_error("rate must be in [0, 1), got " + describe(Napi::Number::New(o.Env(), rate)));
  return rate;
}
}  // namespace

// dropoutForward(x, {rate, seed, firstImage = 0}) → {y, mask}: inverted dropout (kept values
// scaled by 1/(1−rate)); y and the mask (one byte per element) are plain. `firstImage`: the
// index of x's first image in the whole batch it is a share of (masks are drawn per image).
Napi::Value DropoutForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = options_arg(info, 1);
  const double rate = dropout_rate(o);
  const uint64_t seed = uint64_t(opt_int(o, "seed", 0, 0, kMaxSafeInteger));
  const uint64_t first_image = uint64_t(opt_int(o, "firstImage", 0, 0, kMaxSafeInteger));
  Tensor& x = Tensor::From(info[0], "x");
  require_float(x, "x");
  // Masks follow logical positions, so that they do not depend on the layout a primitive chose.
  std::vector<Scratch> keep;
  const memory::desc plain = plain_desc(x.dims(), x.md.data_type());
  memory src = in_layout(x, plain, keep);
  Napi::Object y = Tensor::Create(env, plain);
  Napi::Object mask = Tensor::Create(env, with_type(plain, dt::u8));
  Tensor& yt = Tensor::Of(y);
  Tensor& mt = Tensor::Of(mask);
  const size_t n = size_t(x.numel()), per_image = n / size_t(x.dims()[0]);
  if (x.md.data_type() == dt::f32)
    dropout_fwd(static_cast<const float*>(src.get_data_handle()), static_cast<float*>(yt.ptr), static_cast<uint8_t*>(mt.ptr), n, per_image, first_image, float(rate), seed);
  else
    dropout_fwd(static_cast<const uint16_t*>(src.get_data_handle()), static_cast<uint16_t*>(yt.ptr), static_cast<uint8_t*>(mt.ptr), n, per_image, first_image, float(rate), seed);
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("mask", mask);
  return out;
}

// dropoutBackward(dy, mask, {rate}) → dx
Napi::Value DropoutBackward(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 2);
  const double rate = dropout_rate(o);
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& mask = Tensor::From(info[1], "mask");
  require_float(dy, "dy");
  require_dtype(mask, "mask", {dt::u8});
  if (dy.dims() != mask.dims()) throw_range_error("dy is " + dims_key(dy.dims()) + " but the mask " + dims_key(mask.dims()));
  std::vector<Scratch> keep;
  memory::desc want = with_type(mask.md, dy.md.data_type());
  memory d = in_layout(dy, want, keep);
  Napi::Object dx = Tensor::Create(info.Env(), want);
  Tensor& dxt = Tensor::Of(dx);
  size_t n = buffer_elems(dxt);
  if (want.data_type() == dt::f32)
    dropout_bwd(static_cast<const float*>(d.get_data_handle()), static_cast<const uint8_t*>(mask.ptr), static_cast<float*>(dxt.ptr), n, float(rate));
  else
    dropout_bwd(static_cast<const uint16_t*>(d.get_data_handle()), static_cast<const uint8_t*>(mask.ptr), static_cast<uint16_t*>(dxt.ptr), n, float(rate));
  return dx;
}

// cropPad(x, {top, left, height, width, value = 0}) → y (plain N,C,height,width) with
// y[.., i, j] = x[.., i + top, j + left] where that lies inside x, else `value`.
// Negative offsets pad; its own backward is cropPad with the offsets negated. The result is
// always plain float32: this is the edge where the network's output leaves oneDNN layouts.
Napi::Value CropPad(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 1);
  const int64_t top = opt_int(o, "top", 0, -kMaxSafeInteger, kMaxSafeInteger), left = opt_int(o, "left", 0, -kMaxSafeInteger, kMaxSafeInteger);
  const int64_t height = opt_int(o, "height", 0, 1, kMaxElements), width = opt_int(o, "width", 0, 1, kMaxElements);
  const float value = float(opt_num(o, "value", 0));
  Tensor& x = Tensor::From(info[0], "x");
  require_rank(x, "x", 4, "N,C,H,W");
  require_float(x, "x");
  const auto d = x.dims();
  const int64_t oh = height ? height : d[2], ow = width ? width : d[3];
  const memory::dims out_dims{d[0], d[1], oh, ow};
  checked_numel(out_dims, "the result " + list_str(out_dims));
  Napi::Object y = Tensor::Create(info.Env(), plain_desc(out_dims, dt::f32));
  Tensor& yt = Tensor::Of(y);
  // A crop to the same size changes only the type and layout: one reorder, no copy after it.
  if (top == 0 && left == 0 && oh == d[2] && ow == d[3]) {
    reorder_into(x.mem(), yt.mem());
    return y;
  }
  std::vector<Scratch> keep;
  memory src = in_layout(x, plain_desc(d, dt::f32), keep);
  const float* xp = static_cast<const float*>(src.get_data_handle());
  float* yp = static_cast<float*>(yt.ptr);
  const int64_t H = d[2], W = d[3], planes = d[0] * d[1];
  // Each row in three parts: the padding left of the map, the copied run, the padding right.
  const int64_t j0 = std::clamp<int64_t>(-left, 0, ow), j1 = std::clamp<int64_t>(W - left, j0, ow);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; p++) {
    for (int64_t i = 0; i < oh; i++) {
      const int64_t si = i + top;
      float* row = yp + (p * oh + i) * ow;
      if (si < 0 || si >= H) {
        std::fill(row, row + ow, value);
        continue;
      }
      const float* srow = xp + (p * H + si) * W;
      std::fill(row, row + j0, value);
      std::copy(srow + (j0 + left), srow + (j1 + left), row + j0);
      std::fill(row + j1, row + ow, value);
    }
  }
  return y;
}

// argmax(x) → uint8 N,H,W: the index of the largest channel (the first on ties).
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  Tensor& x = Tensor::From(info[0], "x");
  require_rank(x, "x", 4, "N,C,H,W");
  require_float(x, "x");
  auto d = x.dims();
  if (d[1] > 256) throw_range_error("x has " + std::to_string(d[1]) + " channels, at most 256 fit in uint8 labels");
  std::vector<Scratch> keep;
  memory src = in_layout(x, plain_desc(d, dt::f32), keep);
  const float* xp = static_cast<const float*>(src.get_data_handle());
  Napi::Object y = Tensor::Create(info.Env(), plain_desc({d[0], d[2], d[3]}, dt::u8));
  uint8_t* yp = static_cast<uint8_t*>(Tensor::Of(y).ptr);
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

namespace {
// max |v| over n elements; NaN when any is NaN (a max that skipped it would calibrate a
// quantizer from a broken tensor without a sign).
template <typename T>
double abs_max(const T* p, size_t n) {
  float m = 0;
  bool nan = false;
#pragma omp parallel for reduction(max : m) reduction(|| : nan) schedule(static)
  for (int64_t i = 0; i < int64_t(n); i++) {
    const float v = std::fabs(ld(p, size_t(i)));
    if (std::isnan(v)) nan = true;
    else if (v > m) m = v;
  }
  return nan ? std::nan("") : double(m);
}
}  // namespace

// absMax(t) → max |t| over a float32 or bfloat16 tensor in any layout (the padding of blocked
// layouts holds zeros, which leave the max as it is): the range a quantizer is calibrated to.
Napi::Value AbsMax(const Napi::CallbackInfo& info) {
  Tensor& t = Tensor::From(info[0], "tensor");
  require_float(t, "tensor");
  const size_t n = buffer_elems(t);
  const double m = t.md.data_type() == dt::f32 ? abs_max(static_cast<const float*>(t.ptr), n) : abs_max(static_cast<const uint16_t*>(t.ptr), n);
  return Napi::Number::New(info.Env(), m);
}

}  // namespace fcn
