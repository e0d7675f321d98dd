#include "conv_winograd.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "conv_weights.h"

namespace fcn {

namespace {

// Channels per transform step: two AVX2 vectors (one AVX-512 one), a constant trip count the
// compiler unrolls and vectorises. A partial last block is computed on zeros and not stored.
constexpr int64_t CB = 16;
// V and M of one chunk of tiles stay within this, whatever the image size.
constexpr int64_t kChunkBytes = int64_t(32) << 20;
// Output channels per matrix product: conv6's 4096 in blocks, so that a chunk holds all its tiles.
constexpr int64_t kMaxOcBlock = 1024;

// The interpolation points, the smallest first (small points keep the transforms' entries, and
// so the rounding error, small). F(4×4, 3×3) takes the first 5, F(4×4, 7×7) the first 9. Its last
// pair is ±5/4, chosen by measurement over ±3 (the literature's usual next pair), ±3/2, ±4/3,
// ±4/5, ±3/4, ±2/3, ±5/8 and ±1/4: on the unit test's 7×7 cases its worst error, relative to the
// largest output a sum of |x|·|w| could reach, was 1.2e-5, against 5.4e-5 for ±3 and 1.8e-5 to
// 1.3e-4 for the others (±5/4 is also exact in binary).
double point(int i) {
  static const double p[] = {0, 1, -1, 2, -2, 0.5, -0.5, 1.25, -1.25, 1.0 / 3, -1.0 / 3};
  return p[i];
}

// Coefficients (constant term first) of Π (x − p_l) over the finite points l < n, l ≠ skip.
std::vector<double> product_poly(int n, int skip) {
  std::vector<double> c{1.0};
  for (int l = 0; l < n; l++) {
    if (l == skip) continue;
    std::vector<double> next(c.size() + 1, 0.0);
    for (size_t k = 0; k < c.size(); k++) {
      next[k + 1] += c[k];
      next[k] -= point(l) * c[k];
    }
    c = next;
  }
  return c;
}

}  // namespace

// 7×7 as F(4×4, 7×7) rather than F(2×2, 7×7): on conv6 at 512² (16×16 outputs) its products
// are 100 of [16 × 512]·[512 × 4096] instead of 64 of [64 × 512]·[512 × 4096], 2.6× fewer FLOPs;
// measured 26 ms against 42 (AVX-512) and 52 against 118 (AVX2), for 300 MB more transformed
// weights (100 rather than 64 matrices of 512 × 4096) and logits 8.6e-6 to 1.2e-5 of the largest
// from the direct kernel's, against 3.1e-6 to 3.3e-6 (full-width FCN-8s, 512², two seeds).
int winograd_tile(int64_t r) { return r == 3 ? 4 : r == 7 ? 4 : 0; }

bool winograd_gemm_fits(const ConvSpec& s) {
  return !s.transposed && s.compute == dt::f32 && s.stride == memory::dims{1, 1} && s.w[2] == s.w[3] && winograd_tile(s.w[2]) > 0;
}

// Toom–Cook with the point at infinity (Lavin & Gray, 2016): the linear convolution of g and
// a length-m u has degree n = α − 1, so it is fixed by its values at the n finite points plus its
// leading coefficient g_{r−1}·u_{m−1}: z(x) = Σ_j g(p_j) u(p_j) L_j(x) / L_j(p_j) + z_n Π (x − p_l)
// with L_j = Π_{l≠j} (x − p_l). Correlation is that map transposed in u: Aᵀ evaluates (p_j^i),
// G evaluates g and carries the 1 / L_j(p_j), Bᵀ's rows are the coefficients of L_j and of Π.
WinogradMatrices winograd_matrices(int m, int r) {
  const int alpha = m + r - 1, n = alpha - 1;
  if (m < 1 || r < 1 || n > 11) throw std::runtime_error("no Winograd points for F(" + std::to_string(m) + ", " + std::to_string(r) + ")");
  WinogradMatrices t{m, r, alpha, std::vector<double>(size_t(m * alpha), 0.0), std::vector<double>(size_t(alpha * r), 0.0),
                     std::vector<double>(size_t(alpha * alpha), 0.0)};
  auto pow_ = [](double p, int k) {
    double v = 1;
    for (int i = 0; i < k; i++) v *= p;
    return v;
  };
  for (int j = 0; j < n; j++) {
    double f = 1;
    for (int l = 0; l < n; l++)
      if (l != j) f *= point(j) - point(l);
    for (int i = 0; i < m; i++) t.AT[size_t(i * alpha + j)] = pow_(point(j), i);
    for (int k = 0; k < r; k++) t.G[size_t(j * r + k)] = pow_(point(j), k) / f;
    const std::vector<double> L = product_poly(n, j);
    for (size_t c = 0; c < L.size(); c++) t.BT[size_t(j * alpha) + c] = L[c];
  }
  t.AT[size_t((m - 1) * alpha + n)] = 1;
  t.G[size_t(n * r + r - 1)] = 1;
  const std::vector<double> M = product_poly(n, -1);
  for (size_t c = 0; c < M.size(); c++) t.BT[size_t(n * alpha) + c] = M[c];
  return t;
}

namespace {

std::vector<float> as_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// The geometry of one call: tiles of m×m outputs, chunks of tiles, blocks of output channels.
struct Plan {
  int64_t m, r, A, A2, N, IC, OC, H, W, OH, OW, pt, pl, TH, TW, T, Tc, OCb;
  std::vector<float> AT, G, BT;
  int64_t oc_blocks() const { return (OC + OCb - 1) / OCb; }
  int64_t ocb(int64_t ob) const { return std::min(OCb, OC - ob * OCb); }
};

Plan plan_of(const ConvSpec& s) {
  Plan p;
  p.r = s.w[2];
  p.m = winograd_tile(p.r);
  const WinogradMatrices t = winograd_matrices(int(p.m), int(p.r));
  p.A = t.alpha;
  p.A2 = p.A * p.A;
  p.AT = as_float(t.AT), p.G = as_float(t.G), p.BT = as_float(t.BT);
  p.N = s.x[0], p.IC = s.x[1], p.H = s.x[2], p.W = s.x[3], p.OC = s.w[0], p.OH = s.y[2], p.OW = s.y[3];
  p.pt = s.pad_l[0], p.pl = s.pad_l[1];
  p.TH = (p.OH + p.m - 1) / p.m, p.TW = (p.OW + p.m - 1) / p.m, p.T = p.N * p.TH * p.TW;
  p.OCb = std::min(p.OC, kMaxOcBlock);
  const int64_t per_tile = p.A2 * 4 * (p.IC + p.OCb);
  const int64_t most = std::max<int64_t>(16, kChunkBytes / per_tile), chunks = (p.T + most - 1) / most;
  p.Tc = (p.T + chunks - 1) / chunks;  // equal chunks: at most two matmul shapes
  return p;
}

// U, output-channel block by block: block ob is [α²][IC][OCb] (a dense matrix per ξ for the
// matmul), U_ξ[i][o] = Σ_kl G[ξy][k] g[o][i][k][l] G[ξx][l]. R and A are fixed at compile time so
// that the loops unroll; 16 output channels at a time, so that each ξ's row is written in runs.
// Each run is one whole cache line, written with streaming stores: U is not read again until the
// matmul, and ordinary stores would first read every line (conv6 as F(4×4, 7×7), 839 MB: 148–151
// ms with ordinary stores, 76–77 with streaming ones).
template <int R, int A>
void transform_weights(const Plan& p, const float* g, float* U) {
  const int64_t ocblocks = (p.OC + CB - 1) / CB;
  const float* G = p.G.data();
#pragma omp parallel
  {
#pragma omp for schedule(static)
  for (int64_t job = 0; job < p.IC * ocblocks; job++) {
    const int64_t i = job % p.IC, o0 = (job / p.IC) * CB, no = std::min(CB, p.OC - o0);
    float gg[R][R][CB], tmp[A][R][CB], u[A][A][CB];
    for (int k = 0; k < R; k++)
      for (int l = 0; l < R; l++)
        for (int64_t c = 0; c < CB; c++) gg[k][l][c] = c < no ? g[(((o0 + c) * p.IC + i) * R + k) * R + l] : 0.f;
    for (int a = 0; a < A; a++)
      for (int l = 0; l < R; l++)
        for (int64_t c = 0; c < CB; c++) {
          float acc = 0.f;
          for (int k = 0; k < R; k++) acc += G[a * R + k] * gg[k][l][c];
          tmp[a][l][c] = acc;
        }
    for (int a = 0; a < A; a++)
      for (int b = 0; b < A; b++)
        for (int64_t c = 0; c < CB; c++) {
          float acc = 0.f;
          for (int l = 0; l < R; l++) acc += G[b * R + l] * tmp[a][l][c];
          u[a][b][c] = acc;
        }
    const int64_t ob = o0 / p.OCb, ocb = p.ocb(ob), within = o0 - ob * p.OCb;
    float* blk = U + ob * p.OCb * p.A2 * p.IC;  // earlier blocks are all full
    for (int64_t xi = 0; xi < p.A2; xi++) {
      float* dst = blk + (xi * p.IC + i) * ocb + within;
#if defined(__AVX2__)
      if (no == CB && reinterpret_cast<uintptr_t>(dst) % 32 == 0) {
        for (int64_t c = 0; c < CB; c += 8) _mm256_stream_ps(dst + c, _mm256_loadu_ps(&u[xi / A][xi % A][c]));
        continue;
      }
#endif
      std::memcpy(dst, u[xi / A][xi % A], size_t(no) * 4);
    }
  }
#if defined(__AVX2__)
  _mm_sfence();  // the streaming stores are seen by the matmul's threads
#endif
  }
}

// One pass of a transform over whole channel blocks, for rows a < rows and columns b < cols:
// along the first index, out[a][b] = Σ_k C[a·A + k] · in[k][b]; along the second,
// out[a][b] = Σ_k C[b·A + k] · in[a][k]. The accumulator is a register block: no scratch to
// clear per tile.
template <bool AlongRows, int A>
inline void transform_pass(const float* C, int rows, int cols, const float (&in)[A][A][CB], float (&out)[A][A][CB]) {
  for (int a = 0; a < rows; a++)
    for (int b = 0; b < cols; b++) {
      const float* coefs = C + (AlongRows ? a : b) * A;
      float acc[CB] = {};
      for (int k = 0; k < A; k++) {
        if (coefs[k] == 0.f) continue;
        const float* v = AlongRows ? in[k][b] : in[a][k];
        for (int64_t c = 0; c < CB; c++) acc[c] += coefs[k] * v[c];
      }
      for (int64_t c = 0; c < CB; c++) out[a][b][c] = acc[c];
    }
}

// V[t − t0][ξ][c] = (Bᵀ d B)[ξ] for the tiles t0 … t0 + nt of x (channels last), zero padded.
template <int A>
void transform_input(const Plan& p, const float* x, float* V, int64_t t0, int64_t nt) {
  const int64_t cblocks = (p.IC + CB - 1) / CB, tiles_per_image = p.TH * p.TW;
  const float* BT = p.BT.data();
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < nt * cblocks; job++) {
    const int64_t tl = job / cblocks, c0 = (job % cblocks) * CB, nc = std::min(CB, p.IC - c0), t = t0 + tl;
    const int64_t n = t / tiles_per_image, ty = (t % tiles_per_image) / p.TW, tx = t % p.TW;
    const int64_t y0 = ty * p.m - p.pt, x0 = tx * p.m - p.pl;
    float d[A][A][CB], tmp[A][A][CB], v[A][A][CB];
    for (int64_t a = 0; a < A; a++)
      for (int64_t b = 0; b < A; b++) {
        const int64_t iy = y0 + a, ix = x0 + b;
        float* dst = d[a][b];
        if (iy < 0 || iy >= p.H || ix < 0 || ix >= p.W) {
          std::fill(dst, dst + CB, 0.f);
          continue;
        }
        std::memcpy(dst, x + ((n * p.H + iy) * p.W + ix) * p.IC + c0, size_t(nc) * 4);
        std::fill(dst + nc, dst + CB, 0.f);
      }
    transform_pass<true>(BT, A, A, d, tmp);
    transform_pass<false>(BT, A, A, tmp, v);
    for (int64_t xi = 0; xi < A * A; xi++) std::memcpy(V + (tl * A * A + xi) * p.IC + c0, v[xi / A][xi % A], size_t(nc) * 4);
  }
}

// y[n][oy][ox][o0 + c] = (Aᵀ M A + bias), ReLU'd, for the chunk's tiles and one channel block
// (M is [t − t0][ξ][ocb]); y channels last.
template <int A>
void transform_output(const Plan& p, const float* Mm, const float* bias, bool relu, float* y, int64_t t0, int64_t nt, int64_t o0, int64_t ocb) {
  const int64_t cblocks = (ocb + CB - 1) / CB, tiles_per_image = p.TH * p.TW, m = p.m;
  const float* AT = p.AT.data();
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < nt * cblocks; job++) {
    const int64_t tl = job / cblocks, c0 = (job % cblocks) * CB, nc = std::min(CB, ocb - c0), t = t0 + tl;
    const int64_t n = t / tiles_per_image, ty = (t % tiles_per_image) / p.TW, tx = t % p.TW;
    float mm[A][A][CB], tmp[A][A][CB], out[A][A][CB], bv[CB] = {};
    for (int64_t xi = 0; xi < A * A; xi++) {
      float* dst = mm[xi / A][xi % A];
      std::memcpy(dst, Mm + (tl * A * A + xi) * ocb + c0, size_t(nc) * 4);
      std::fill(dst + nc, dst + CB, 0.f);
    }
    if (bias) std::memcpy(bv, bias + o0 + c0, size_t(nc) * 4);
    transform_pass<true>(AT, int(m), A, mm, tmp);
    transform_pass<false>(AT, int(m), int(m), tmp, out);
    for (int64_t i = 0; i < m && ty * m + i < p.OH; i++)
      for (int64_t j = 0; j < m && tx * m + j < p.OW; j++) {
        float* o = out[i][j];
        for (int64_t c = 0; c < CB; c++) o[c] = relu ? std::max(o[c] + bv[c], 0.f) : o[c] + bv[c];
        std::memcpy(y + ((n * p.OH + ty * m + i) * p.OW + tx * m + j) * p.OC + o0 + c0, o, size_t(nc) * 4);
      }
  }
}

// The α² products of one chunk and one output-channel block: [α², nt, IC] × [α², IC, ocb], V and
// M stored tile by tile ([nt][α²][·]: each tile's transforms read and write one contiguous block).
// oneDNN 2.6 runs this layout with its jit sgemm, which measured 1.3–1.5× faster here than its
// brgemm matmul on the ξ-major layout (64×[64×512]·[512×1024], 36×[128×512]·[512×512]).
CachedPrimitive batched_matmul(const ConvSpec& s, int64_t A2, int64_t nt, int64_t IC, int64_t ocb) {
  const std::string key = "winoMM|" + dims_key({A2, nt, IC, ocb});
  return cached(key, [&] {
    memory::desc a({A2, nt, IC}, dt::f32, tag::bac), b({A2, IC, ocb}, dt::f32, tag::abc), c({A2, nt, ocb}, dt::f32, tag::bac);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), cpu_engine());
    debug_impl("fwd winograd-gemm matmul", s, pd.impl_info_str());
    return CachedPrimitive{pd, dnnl::matmul(pd)};
  });
}

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// The transformed weights: the caller's copy when it matches, else computed (and handed back).
memory transformed_weights(Napi::Env env, const Plan& p, const memory& w, Tensor* cache, Napi::Value& fresh, double& ms) {
  const memory::desc want({p.A2 * p.IC * p.OC}, dt::f32, tag::a);
  if (cache && cache->md == want) return cache->mem();
  const auto t0 = Clock::now();
  Napi::Object t = Tensor::Create(env, want);
  std::vector<Scratch> keep;  // only a master kept blocked is read through a plain copy, and only here
  const float* g = static_cast<const float*>(plain_weights(w, keep).get_data_handle());
  float* U = static_cast<float*>(Tensor::Of(t).ptr);
  if (p.r == 3) transform_weights<3, 6>(p, g, U);
  else transform_weights<7, 10>(p, g, U);
  ms = ms_since(t0);
  fresh = t;
  return Tensor::Of(t).mem();
}

}  // namespace

Napi::Value winograd_gemm_forward(Napi::Env env, const ConvSpec& s, Tensor& x, const memory& w, Tensor* b, Tensor* weights_cache) {
  if (!winograd_gemm_fits(s))
    throw_range_error("algorithm 'winograd-gemm' is for float32 stride-1 convolutions with square 3×3 or 7×7 kernels (x " + dims_key(s.x) + ", weights " +
                      dims_key(s.w) + ", stride " + dims_key(s.stride) + ")");
  if (w.get_desc().data_type() != dt::f32) throw_type_error("algorithm 'winograd-gemm' needs float32 weights");
  const Plan p = plan_of(s);
  double t_w = 0, t_in = 0, t_mm = 0, t_out = 0;
  Napi::Value fresh = env.Null();
  memory U = transformed_weights(env, p, w, weights_cache, fresh, t_w);
  std::vector<Scratch> keep;
  memory xm = in_layout(x, memory::desc(s.x, dt::f32, tag::nhwc), keep);
  const float* bias = nullptr;
  if (b) bias = static_cast<const float*>(in_layout(*b, memory::desc({p.OC}, dt::f32, tag::a), keep).get_data_handle());
  Napi::Object y = Tensor::Create(env, memory::desc(s.y, dt::f32, tag::nhwc));
  Scratch V(size_t(p.A2 * p.Tc * p.IC * 4)), M(size_t(p.A2 * p.Tc * p.OCb * 4));
  const float* xp = static_cast<const float*>(xm.get_data_handle());
  float *Vp = static_cast<float*>(V.ptr), *Mp = static_cast<float*>(M.ptr), *yp = static_cast<float*>(Tensor::Of(y).ptr);
  float* Up = static_cast<float*>(U.get_data_handle());
  for (int64_t t0 = 0; t0 < p.T; t0 += p.Tc) {
    const int64_t nt = std::min(p.Tc, p.T - t0);
    auto c0 = Clock::now();
    if (p.A == 6) transform_input<6>(p, xp, Vp, t0, nt);
    else transform_input<10>(p, xp, Vp, t0, nt);
    t_in += ms_since(c0);
    for (int64_t ob = 0; ob < p.oc_blocks(); ob++) {
      const int64_t ocb = p.ocb(ob);
      auto mm = batched_matmul(s, p.A2, nt, p.IC, ocb);
      c0 = Clock::now();
      memory a(mm.pd.src_desc(), cpu_engine(), Vp), wb(mm.pd.weights_desc(), cpu_engine(), Up + ob * p.OCb * p.A2 * p.IC), c(mm.pd.dst_desc(), cpu_engine(), Mp);
      mm.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, wb}, {DNNL_ARG_DST, c}});
      cpu_stream().wait();
      t_mm += ms_since(c0);
      c0 = Clock::now();
      if (p.A == 6) transform_output<6>(p, Mp, bias, s.relu, yp, t0, nt, ob * p.OCb, ocb);
      else transform_output<10>(p, Mp, bias, s.relu, yp, t0, nt, ob * p.OCb, ocb);
      t_out += ms_since(c0);
    }
  }
  static const bool debug = std::getenv("FCN_DEBUG_IMPL") != nullptr;
  if (debug)
    std::fprintf(stderr, "fcn: winograd-gemm F(%ld,%ld) %s: weights %.1f ms, input %.1f ms, matmul %.1f ms, output %.1f ms (%ld tiles in chunks of %ld)\n",
                 long(p.m), long(p.r), s.key("").c_str(), t_w, t_in, t_mm, t_out, long(p.T), long(p.Tc));
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("weightsCache", fresh);
  return out;
}

}  // namespace fcn
