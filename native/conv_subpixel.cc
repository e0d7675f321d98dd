#include "conv_subpixel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv_weights.h"

namespace fcn {

namespace {

// Floor division (b may be negative).
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output pixel o = a·st + r (phase r) reads inputs a + t through kernel tap k = r + pad − t·st,
// for the t with 0 ≤ k < K: at most taps = ⌈K / st⌉ of them, the last at top(r) = ⌊(r + pad) / st⌋.
// One convolution serves every phase with `taps` taps if phase r's output is read `shift(r)` =
// top(r) − top(0) pixels further on: then tap j of the convolution at a + shift(r) reads input
// a + top(r) − taps + 1 + j. shift is 0 or 1 (pad < st), so the phase convolution has
// ⌈K / st⌉² taps, not the (⌈K / st⌉ + 1)² a common window over all phases would need.
struct Phases {
  int64_t st, pad, K, taps, top0;
  int64_t top(int64_t r) const { return floor_div(r + pad, st); }
  int64_t shift(int64_t r) const { return top(r) - top0; }
  int64_t pad_l() const { return taps - 1 - top0; }
  // Kernel tap of convolution tap j for phase r, or −1 where none.
  int64_t tap(int64_t r, int64_t j) const {
    const int64_t k = r + pad - (top(r) - taps + 1 + j) * st;
    return k >= 0 && k < K ? k : -1;
  }
};

Phases phases_of(const ConvSpec& s) {
  const int64_t st = s.stride[0], pad = s.pad_l[0], K = s.w[2];
  return Phases{st, pad, K, (K + st - 1) / st, floor_div(pad, st)};
}

// The phase convolution's weights, plain (O·st², I, taps, taps): channel (o·st + ry)·st + rx holds
// w[o][i][tap(ry, jy)][tap(rx, jx)], 0 where either has none.
std::vector<float> phase_weights(const float* w, const memory::dims& wd, const Phases& ph) {
  const int64_t O = wd[0], I = wd[1], K = wd[2], st = ph.st, T = ph.taps;
  std::vector<float> out(size_t(O * st * st * I * T * T), 0.f);
  for (int64_t o = 0; o < O; o++)
    for (int64_t ry = 0; ry < st; ry++)
      for (int64_t rx = 0; rx < st; rx++)
        for (int64_t i = 0; i < I; i++)
          for (int64_t jy = 0; jy < T; jy++)
            for (int64_t jx = 0; jx < T; jx++) {
              const int64_t ky = ph.tap(ry, jy), kx = ph.tap(rx, jx);
              if (ky < 0 || kx < 0) continue;
              const int64_t oc = (o * st + ry) * st + rx;
              out[size_t(((oc * I + i) * T + jy) * T + jx)] = w[((o * I + i) * K + ky) * K + kx];
            }
  return out;
}

// Depth to space: y[n][o][a·st + ry][c·st + rx] = z[n][a + shift(ry)][c + shift(rx)][(o·st + ry)·st + rx]
// (z channels-last, y plain), bfloat16 widened to float32 on the way when y is float32. One
// parallel pass over the input rows a: each reads its z rows (tens to hundreds of KB, kept in
// L2 across the st output rows it makes) along their channels, and writes every channel's
// st output rows a cache line at a time. (oneDNN's strided reorders would take one call per
// pair of shifts, each waiting for all the threads; a pass over y's rows in y's order reads z
// with a stride of C elements, a new cache line for every st of them.)
inline void put(float& d, float v) { d = v; }
inline void put(uint16_t& d, uint16_t v) { d = v; }
inline void put(float& d, uint16_t bf16) {
  const uint32_t u = uint32_t(bf16) << 16;
  std::memcpy(&d, &u, 4);
}

template <typename Z, typename Y>
void depth_to_space_as(const Z* z, Y* y, int64_t N, int64_t O, int64_t H, int64_t W, int64_t Hz, int64_t Wz, const Phases& ph) {
  const int64_t st = ph.st, C = O * st * st, Wy = W * st, Hy = H * st;
  // The phases rx < split read column c, the rest column c + 1 (shift is 0 or 1, rising).
  int64_t split = st;
  while (split > 0 && ph.shift(split - 1) == 1) split--;
  const int64_t sh0 = ph.shift(0);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; n++)
    for (int64_t a = 0; a < H; a++)
      for (int64_t ry = 0; ry < st; ry++) {
        const Z* zrow = z + ((n * Hz + a + ph.shift(ry)) * Wz + sh0) * C + ry * st;
        Y* yrow = y + ((n * O) * Hy + a * st + ry) * Wy;
        for (int64_t o = 0; o < O; o++) {
          const Z* zo = zrow + o * st * st;
          Y* yo = yrow + o * Hy * Wy;
          for (int64_t c = 0; c < W; c++) {
            const Z* z0 = zo + c * C;
            Y* y0 = yo + c * st;
            for (int64_t rx = 0; rx < split; rx++) put(y0[rx], z0[rx]);
            for (int64_t rx = split; rx < st; rx++) put(y0[rx], z0[C + rx]);
          }
        }
      }
}

void depth_to_space(const memory& z, const memory& y, const ConvSpec& s, const Phases& ph) {
  const memory::dims zd = z.get_desc().dims();
  const int64_t N = s.x[0], O = s.w[0], H = s.x[2], W = s.x[3];
  const bool to_f32 = y.get_desc().data_type() == dt::f32;
  void* yp = y.get_data_handle();
  if (s.compute == dt::f32)
    depth_to_space_as(static_cast<const float*>(z.get_data_handle()), static_cast<float*>(yp), N, O, H, W, zd[2], zd[3], ph);
  else if (to_f32)
    depth_to_space_as(static_cast<const uint16_t*>(z.get_data_handle()), static_cast<float*>(yp), N, O, H, W, zd[2], zd[3], ph);
  else
    depth_to_space_as(static_cast<const uint16_t*>(z.get_data_handle()), static_cast<uint16_t*>(yp), N, O, H, W, zd[2], zd[3], ph);
}

// Whether every output channel reads only its own input channel (w[o][i] = 0 for o ≠ i): FCN's
// bilinear upsamplings, fixed in training, are. Checked on each call (O·I·K² reads, microseconds).
bool channel_diagonal(const float* w, const memory::dims& wd) {
  const int64_t O = wd[0], I = wd[1], KK = wd[2] * wd[3];
  if (O != I) return false;
  for (int64_t o = 0; o < O; o++)
    for (int64_t i = 0; i < I; i++)
      if (i != o)
        for (int64_t k = 0; k < KK; k++)
          if (w[(o * I + i) * KK + k] != 0.f) return false;
  return true;
}

// The transposed convolution of a channel-diagonal kernel, float32 (x plain): per output row,
// each phase rx's values along the row are a sum over the taps of contiguous runs of the (zero
// padded) input rows, vectorised along the row, then interleaved into y. The dense phase
// convolution would multiply by O² zeros for every O useful products (21 × the work for FCN).
void depthwise_upsample(const float* x, const float* w, const float* bias, bool relu, float* y, const ConvSpec& s, const Phases& ph) {
  const int64_t N = s.x[0], O = s.w[0], H = s.x[2], W = s.x[3], K = s.w[2], st = ph.st, T = ph.taps;
  const int64_t Hy = H * st, Wy = W * st, pad = T + 1;  // input rows padded by T + 1 zeros each side
#pragma omp parallel
  {
    std::vector<float> rows(size_t(T * (W + 2 * pad))), part(size_t(st * W));
#pragma omp for collapse(2) schedule(static)
    for (int64_t no = 0; no < N * O; no++)
      for (int64_t Y = 0; Y < Hy; Y++) {
        const int64_t o = no % O, ay = Y / st, ry = Y % st;
        const float* wo = w + (o * O + o) * K * K;
        std::fill(part.begin(), part.end(), bias ? bias[o] : 0.f);
        for (int64_t jy = 0; jy < T; jy++) {
          const int64_t iy = ay + ph.top(ry) - T + 1 + jy, ky = ph.tap(ry, jy);
          if (ky < 0 || iy < 0 || iy >= H) continue;
          float* r = rows.data() + jy * (W + 2 * pad);
          std::fill(r, r + pad, 0.f);
          std::copy(x + (no * H + iy) * W, x + (no * H + iy + 1) * W, r + pad);
          std::fill(r + pad + W, r + 2 * pad + W, 0.f);
          for (int64_t rx = 0; rx < st; rx++)
            for (int64_t jx = 0; jx < T; jx++) {
              const int64_t kx = ph.tap(rx, jx);
              if (kx < 0) continue;
              const float c = wo[ky * K + kx];
              const float* src = r + pad + ph.top(rx) - T + 1 + jx;
              float* dst = part.data() + rx * W;
#pragma omp simd
              for (int64_t ax = 0; ax < W; ax++) dst[ax] += c * src[ax];
            }
        }
        float* yrow = y + (no * Hy + Y) * Wy;
        for (int64_t ax = 0; ax < W; ax++)
          for (int64_t rx = 0; rx < st; rx++) {
            const float v = part[size_t(rx * W + ax)];
            yrow[ax * st + rx] = relu && v < 0.f ? 0.f : v;
          }
      }
  }
}

// The phase convolution (z channels-last: depth to space is then a strided copy).
dnnl::convolution_forward::primitive_desc phase_pd(const ConvSpec& p) {
  using F = dnnl::convolution_forward;
  const auto pk = dnnl::prop_kind::forward_inference;
  const auto alg = dnnl::algorithm::convolution_direct;
  const memory::desc src = any_layout(p.x, p.compute), wei = any_layout(p.w, p.compute), dst(p.y, p.compute, tag::nhwc);
  auto d = p.has_bias ? F::desc(pk, alg, src, wei, bias_md(p), dst, p.stride, p.pad_l, p.pad_r) : F::desc(pk, alg, src, wei, dst, p.stride, p.pad_l, p.pad_r);
  dnnl::primitive_attr attr;
  if (p.relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return F::primitive_desc(d, attr, cpu_engine());
}

}  // namespace

bool subpixel_fits(const ConvSpec& s) {
  const int64_t st = s.stride[0];
  if (!(s.transposed && st == s.stride[1] && s.w[2] == s.w[3] && s.pad_l[0] == s.pad_l[1] && s.pad_l == s.pad_r && s.y[2] == s.x[2] * st && s.y[3] == s.x[3] * st))
    return false;
  const Phases ph = phases_of(s);
  return ph.pad_l() >= 0 && ph.shift(st - 1) <= 1 && ph.shift(0) == 0;
}

Napi::Value subpixel_forward(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& w, Tensor* b, Tensor* cache, dt out) {
  if (!subpixel_fits(s))
    throw_range_error("algorithm 'subpixel' is for transposed convolutions whose output is stride × input with equal strides and padding (x " + dims_key(s.x) +
                      ", weights " + dims_key(s.w) + ", stride " + dims_key(s.stride) + ")");
  if (s.w[1] != x.dims()[1] || w.md.data_type() != dt::f32)
    throw_type_error("algorithm 'subpixel' needs float32 weights (O,I,KH,KW)");
  const Phases ph = phases_of(s);
  std::vector<Scratch> plain_w;
  const float* wp = static_cast<const float*>(plain_weights(w.mem(), plain_w).get_data_handle());
  if (s.compute == dt::f32 && channel_diagonal(wp, s.w)) {
    std::vector<Scratch> keep;
    memory xm = in_layout(x, memory::desc(s.x, dt::f32, tag::nchw), keep);
    const float* bias = b ? static_cast<const float*>(in_layout(*b, memory::desc({s.w[0]}, dt::f32, tag::a), keep).get_data_handle()) : nullptr;
    Napi::Object y = Tensor::Create(env, memory::desc(s.y, dt::f32, tag::nchw));
    depthwise_upsample(static_cast<const float*>(xm.get_data_handle()), wp, bias, s.relu, static_cast<float*>(Tensor::Of(y).ptr), s, ph);
    auto result = Napi::Object::New(env);
    result.Set("y", y);
    result.Set("weightsCache", env.Null());
    return result;
  }
  const int64_t st = ph.st, O = s.w[0], C = O * st * st, grow = ph.shift(st - 1);
  ConvSpec p;
  p.relu = s.relu;
  p.has_bias = s.has_bias;
  p.compute = s.compute;
  p.x = s.x;
  p.w = {C, s.w[1], ph.taps, ph.taps};
  p.y = {s.x[0], C, s.x[2] + grow, s.x[3] + grow};
  p.pad_l = {ph.pad_l(), ph.pad_l()};
  p.pad_r = {grow + ph.top0, grow + ph.top0};
  auto cp = cached(p.key("fwdSubpixel"), [&] {
    auto pd = phase_pd(p);
    debug_impl("fwdSubpixel", p, pd.impl_info_str());
    return CachedPrimitive{pd, dnnl::convolution_forward(pd)};
  });
  dnnl::convolution_forward::primitive_desc pd(cp.pd.get());
  std::vector<Scratch> keep;
  memory src = in_layout(x, pd.src_desc(), keep);
  // The phase weights are a function of w alone: built and packed once, then handed back as
  // the caller's weights cache (a cache of another layout, e.g. the direct kernel's, is rebuilt).
  Napi::Value fresh = env.Null();
  memory wei;
  if (cache && cache->md == pd.weights_desc()) {
    wei = cache->mem();
  } else {
    std::vector<float> plain = phase_weights(wp, s.w, ph);
    memory plain_mem(memory::desc(p.w, dt::f32, tag::oihw), cpu_engine(), plain.data());
    Napi::Object t = Tensor::Create(env, pd.weights_desc());
    wei = Tensor::Of(t).mem();
    reorder_into(plain_mem, wei);
    fresh = t;
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}};
  std::vector<float> phase_bias;
  if (b) {
    memory bm = in_layout(*b, memory::desc({O}, dt::f32, tag::a), keep);
    const float* bv = static_cast<const float*>(bm.get_data_handle());
    phase_bias.resize(size_t(C));
    for (int64_t c = 0; c < C; c++) phase_bias[size_t(c)] = bv[c / (st * st)];
    args.emplace(DNNL_ARG_BIAS, memory(bias_md(p), cpu_engine(), phase_bias.data()));
  }
  // z, as large as the output, comes from the pool: a fresh allocation each call faults in a
  // new page every 4 KiB (5,400 of them for 512² logits).
  Scratch zbuf(pd.dst_desc().get_size());
  memory z(pd.dst_desc(), cpu_engine(), zbuf.ptr);
  args.emplace(DNNL_ARG_DST, z);
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  Napi::Object y = Tensor::Create(env, memory::desc(s.y, out, tag::nchw));
  depth_to_space(z, Tensor::Of(y).mem(), s, ph);
  auto result = Napi::Object::New(env);
  result.Set("y", y);
  result.Set("weightsCache", fresh);
  return result;
}

}  // namespace fcn
