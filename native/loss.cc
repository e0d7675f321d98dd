#include "loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bf16.h"
#include "conv_weights.h"

#if defined(__AVX2__) && defined(__GLIBC__) && defined(__x86_64__)
#include <immintrin.h>
// glibc's vector expf (libmvec, within 1 ulp as its scalar one): the exponentials were most of
// the loss's time one at a time.
extern "C" __m256 _ZGVdN8v_expf(__m256);
#define FCN_VECTOR_EXP 1
#endif

namespace fcn {

namespace {
// Below it an exponential is under 1.2e-38 (nothing to a sum of at least 1), and the vector
// expf hands such lanes to the scalar one.
constexpr float kExpFloor = -87.f;

// e[i] = exp(max(x[i] − m[i], kExpFloor)); sum[i] += e[i] (for i < n).
void exp_run(const float* x, const float* m, float* e, double* sum, int64_t n) {
  int64_t i = 0;
#ifdef FCN_VECTOR_EXP
  const __m256 floor = _mm256_set1_ps(kExpFloor);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _ZGVdN8v_expf(_mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(m + i)), floor));
    _mm256_storeu_ps(e + i, v);
    _mm256_storeu_pd(sum + i, _mm256_add_pd(_mm256_loadu_pd(sum + i), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(sum + i + 4, _mm256_add_pd(_mm256_loadu_pd(sum + i + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
  }
#endif
  for (; i < n; i++) {
    const float v = std::exp(std::max(x[i] - m[i], kExpFloor));
    e[i] = v;
    sum[i] += v;
  }
}

// Runs of kRun pixels of one image, channel plane by channel plane: every access is contiguous
// (per pixel, the 21 planes would be 21 strided streams read twice).
constexpr int64_t kRun = 256;

// One run of len ≤ kRun pixels of C planes HW apart: the gradient gs (softmax − one-hot, times
// scale; exactly 0 where ignored) and the run's summed loss.
double softmax_run(const float* xs, const uint8_t* ys, float* gs, int64_t C, int64_t HW, int64_t len, int64_t ignore, float scale) {
  float m[kRun];
  double sum[kRun];
  std::copy(xs, xs + len, m);
  for (int64_t c = 1; c < C; c++)
    for (int64_t i = 0; i < len; i++) m[i] = std::max(m[i], xs[c * HW + i]);
  std::fill(sum, sum + len, 0.0);
  for (int64_t c = 0; c < C; c++) exp_run(xs + c * HW, m, gs + c * HW, sum, len);  // each exponential once, parked in the gradient
  float inv[kRun];
  double total = 0;
  for (int64_t i = 0; i < len; i++) {
    if (ys[i] == ignore) {
      inv[i] = 0.f;
      continue;
    }
    total += std::log(sum[i]) - double(xs[ys[i] * HW + i] - m[i]);
    inv[i] = float(1.0 / sum[i]) * scale;
  }
  for (int64_t c = 0; c < C; c++)
    for (int64_t i = 0; i < len; i++) gs[c * HW + i] *= inv[i];
  for (int64_t i = 0; i < len; i++)
    if (ys[i] != ignore) gs[ys[i] * HW + i] -= scale;
    else
      for (int64_t c = 0; c < C; c++) gs[c * HW + i] = 0.f;  // exactly 0, whatever the logits
  return total;
}

// Logits in another layout or type (a bfloat16 network's, as its last upsampling left them):
// each run's planes are gathered into float32 and its gradient scattered back in the logits'
// own layout and type, so that neither goes through a float32 plain copy (on a 512² bfloat16
// step the two reorders around the loss took 7 ms).
class StridedLogits {
 public:
  explicit StridedLogits(const memory::desc& md)
      : on_(offsets_along(md.data, 0)), oc_(offsets_along(md.data, 1)), oh_(offsets_along(md.data, 2)), ow_(offsets_along(md.data, 3)),
        offset0_(md.data.offset0), W_(md.dims()[3]), bf16_(md.data_type() == dt::bf16) {}

  // Run i0…i0+len of image n: into xs as C planes len apart; gs (same form) written back to g.
  double run(const void* x, void* g, const uint8_t* ys, float* xs, float* gs, int64_t n, int64_t i0, int64_t len, int64_t ignore, float scale) const {
    int64_t at[kRun];
    for (int64_t k = 0; k < len; k++) at[k] = offset0_ + on_[size_t(n)] + oh_[size_t((i0 + k) / W_)] + ow_[size_t((i0 + k) % W_)];
    const int64_t C = int64_t(oc_.size());
    for (int64_t c = 0; c < C; c++) {
      float* xc = xs + c * len;
      const int64_t oc = oc_[size_t(c)];
      if (bf16_)
        for (int64_t k = 0; k < len; k++) xc[k] = bf16_to_f32(static_cast<const uint16_t*>(x)[at[k] + oc]);
      else
        for (int64_t k = 0; k < len; k++) xc[k] = static_cast<const float*>(x)[at[k] + oc];
    }
    const double total = softmax_run(xs, ys, gs, C, len, len, ignore, scale);
    for (int64_t c = 0; c < C; c++) {
      const float* gc = gs + c * len;
      const int64_t oc = oc_[size_t(c)];
      if (bf16_)
        for (int64_t k = 0; k < len; k++) static_cast<uint16_t*>(g)[at[k] + oc] = f32_to_bf16(gc[k]);
      else
        for (int64_t k = 0; k < len; k++) static_cast<float*>(g)[at[k] + oc] = gc[k];
    }
    return total;
  }

 private:
  std::vector<int64_t> on_, oc_, oh_, ow_;
  int64_t offset0_, W_;
  bool bf16_;
};

// The loss over logits in any layout (see StridedLogits), the gradient written to g.
double strided_loss(const memory::desc& md, const void* x, void* g, const uint8_t* y, int64_t ignore, float scale) {
  const StridedLogits logits(md);
  const auto d = md.dims();
  const int64_t N = d[0], C = d[1], HW = d[2] * d[3], runs = (HW + kRun - 1) / kRun;
  double total = 0;
  ParallelErrors errors;
#pragma omp parallel reduction(+ : total)
  {
    FlushDenormals flush;
    std::vector<float> planes;
    errors.capture([&] { planes.resize(size_t(2 * C * kRun)); });
    // A thread without its buffer still meets the loop (every thread must), doing nothing.
#pragma omp for schedule(static)
    for (int64_t job = 0; job < N * runs; job++) {
      if (planes.empty()) continue;
      const int64_t n = job / runs, i0 = (job % runs) * kRun;
      total += logits.run(x, g, y + n * HW + i0, planes.data(), planes.data() + C * kRun, n, i0, std::min(kRun, HW - i0), ignore, scale);
    }
  }
  errors.rethrow();
  return total;
}
}  // namespace

// softmaxCrossEntropy(logits N,C,H,W, labels uint8 N,H,W, {reduction: 'mean'|'sum', ignore = 255})
//   → {loss, valid, grad}; logits float32 or bfloat16 in any layout, grad in theirs. 'mean' divides by the number of labelled pixels (the seed's loss),
//   'sum' does not (Caffe's). With no labelled pixel the loss and gradient are 0.
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = options_arg(info, 2);
  const std::string reduction = opt_choice(o, "reduction", "mean", {"mean", "sum"});
  const int64_t ignore = opt_int(o, "ignore", 255, 0, 255);
  Tensor& logits = Tensor::From(info[0], "logits");
  Tensor& labels = Tensor::From(info[1], "labels");
  require_rank(logits, "logits", 4, "N,C,H,W");
  require_float(logits, "logits");
  require_dtype(labels, "labels", {dt::u8});
  auto d = logits.dims();
  require_dims(labels, "labels", {d[0], d[2], d[3]});
  std::vector<Scratch> keep;
  memory ym = in_layout(labels, plain_desc(labels.dims(), dt::u8), keep);
  const uint8_t* y = static_cast<const uint8_t*>(ym.get_data_handle());
  const int64_t N = d[0], C = d[1], HW = d[2] * d[3], P = N * HW;

  int64_t valid = 0, bad = P;  // the first pixel whose label is not a class
#pragma omp parallel for reduction(+ : valid) reduction(min : bad) schedule(static)
  for (int64_t p = 0; p < P; p++) {
    if (y[p] == ignore) continue;
    if (y[p] >= C) bad = std::min(bad, p);
    valid++;
  }
  if (bad < P)
    throw_range_error("label " + std::to_string(int(y[bad])) + " at pixel " + std::to_string(bad) + " is not a class (0.." + std::to_string(C - 1) +
                      ") nor the ignore label " + std::to_string(ignore));
  const float scale = reduction == "mean" ? (valid > 0 ? 1.f / float(valid) : 0.f) : 1.f;
  // The gradient in the logits' layout and type (a blocked layout's padding zeroed: kernels
  // that read it count on that).
  const bool padded = logits.md.get_size() != size_t(logits.numel()) * dtype_size(logits.md.data_type());
  Napi::Object g = Tensor::Create(env, logits.md, padded);
  double total = 0;
  if (!is_plain(logits.md) || logits.md.data_type() != dt::f32) {
    total = strided_loss(logits.md, logits.ptr, Tensor::Of(g).ptr, y, ignore, scale);
  } else {
    const float* x = static_cast<const float*>(logits.ptr);
    float* gp = static_cast<float*>(Tensor::Of(g).ptr);
    const int64_t runs = (HW + kRun - 1) / kRun;
#pragma omp parallel reduction(+ : total)
    {
      FlushDenormals flush;
#pragma omp for schedule(static)
      for (int64_t job = 0; job < N * runs; job++) {
        const int64_t n = job / runs, i0 = (job % runs) * kRun;
        total += softmax_run(x + n * C * HW + i0, y + n * HW + i0, gp + n * C * HW + i0, C, HW, std::min(kRun, HW - i0), ignore, scale);
      }
    }
  }
  auto out = Napi::Object::New(env);
  out.Set("loss", total * (reduction == "mean" ? (valid > 0 ? 1.0 / double(valid) : 0.0) : 1.0));
  out.Set("valid", double(valid));
  out.Set("grad", g);
  return out;
}

}  // namespace fcn
