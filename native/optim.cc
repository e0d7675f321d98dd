#include "optim.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "conv_weights.h"
#include "eltwise.h"

namespace fcn {

namespace {
// See Packed::plan.
struct TilePlan {
  std::vector<int64_t> run_at;
  std::vector<int32_t> run_len, src;
};

// How a layout lays out a full tile's block at one kernel position: runs of `len` elements
// along i (kRowsI) or o (kRowsO) at unit steps; or bfloat16 pairs of i (kPairsI: element
// (o, 2p + b) at to[o] + ti[2p] + b, to stepping by 2 along a run of o) or of o (kPairsO).
struct Runs {
  enum Kind : uint8_t { kGeneric, kRowsI, kRowsO, kPairsI, kPairsO } kind = kGeneric;
  int64_t len = 0;
};

// Copies of a kernel in the layouts its primitives use (float32 or bfloat16), rewritten by
// the update in the same pass as the master weights: a training step then reorders no
// weights. `flipped`: the input-gradient convolution's copy, [i][o][KH−1−kh][KW−1−kw].
struct Packed {
  void* ptr;
  bool bf16;
  std::vector<int64_t> to, ti, hw;  // offsets of w's o and i, and of w's kernel position j
  // Where the layout repeats from one full tile to the next (blocks of 2..64 channels do), one
  // plan serves every full tile: the tile's destination in contiguous runs (offsets from
  // to[o0] + ti[i0]) and, in that order, each element's index in the master from its corner.
  // Writing along the destination, reading the just-updated master from cache, vectorises.
  std::shared_ptr<const TilePlan> plan;  // null: no plan, the tile is scattered element-wise
  // Where, in every full tile, each kernel position's 32×32 block is written in runs along i
  // or o (bfloat16: pairs of i, or of o, side by side), a run at a time from a transposed tile
  // (see Runs); kGeneric: through the plan.
  Runs runs;
};

// Where a gradient that came in a primitive's blocked layout keeps element (o, i, j).
struct GradLayout {
  std::vector<int64_t> to, ti, hw;
};

// hw[j]: offset0 plus the offsets of kernel position j (reversed when flipped).
std::vector<int64_t> kernel_offsets(const dnnl_memory_desc_t& md, bool flipped) {
  const int64_t KH = md.dims[2], KW = md.dims[3], KK = KH * KW;
  const auto th = offsets_along(md, 2), tw = offsets_along(md, 3);
  std::vector<int64_t> hw(static_cast<size_t>(KK));
  for (int64_t j = 0; j < KK; j++) {
    const int64_t p = flipped ? KK - 1 - j : j;
    hw[size_t(j)] = md.offset0 + th[size_t(p / KW)] + tw[size_t(p % KW)];
  }
  return hw;
}

// A blocked layout's full tile as runs (start, length) of contiguous elements.
using TileRuns = std::vector<std::pair<int64_t, int64_t>>;

// One parameter: master w, optimiser state s1 (Adam's m, SGD's velocity) and s2 (Adam's v),
// all plain; its gradient in any layout; the packed copies to keep current.
struct Item {
  float *w, *s1, *s2;
  const float* g;
  int64_t n;
  memory::dims dims;
  float decay, lr;  // Adam: decay = 2·l2; SGD: weight decay and learning rate
  bool g_plain = true;
  GradLayout gl;
  // A blocked gradient's offsets over one output channel's run of a full tile, (i, j) in the
  // master's order, from gl.to[o] + gl.ti[i0]; empty where its layout does not repeat per tile.
  std::vector<int32_t> gidx;
  // A blocked gradient whose full tiles transpose into the master's order: runs of g_runs.len
  // along o or i (kRowsO / kRowsI), kernel positions g_jstep apart.
  Runs g_runs;
  int64_t g_jstep = 0;
  std::vector<Packed> packs;
  // The master, its state and its gradient all in one blocked layout (the weight-gradient
  // kernel's, which the optimiser adopted): the update streams all four in the layout's order,
  // a tile at a time, and the copies are written from the tile just updated. blocks: a full
  // tile's elements as runs (start, length) from its corner to[o0] + ti[i0].
  bool w_blocked = false;
  std::shared_ptr<const TileRuns> blocks;
  bool tiled() const { return !packs.empty() || !g_plain; }
};

// Adam as Keras: with g' = g + 2·l2·w, m ← m + (1−β1)(g' − m); v ← v + (1−β2)(g'² − v);
// w ← w − α·m/(√v + ε), where α = lr·√(1−β2^t)/(1−β1^t) (the caller's bias correction).
// run: elements p0…p0+n of the item, gradient element k = grad(k). The arrays are taken as
// unaliased locals so that the loop vectorises (through the Item they would not).
struct AdamRule {
  float alpha, b1, b2, eps;
  template <class Grad>
  void run(const Item& it, int64_t p0, int64_t n, Grad grad) const {
    float* __restrict w = it.w + p0;
    float* __restrict m = it.s1 + p0;
    float* __restrict v = it.s2 + p0;
    const float decay = it.decay, a = alpha, c1 = 1.f - b1, c2 = 1.f - b2, e = eps;
#pragma omp simd
    for (int64_t k = 0; k < n; k++) {
      const float gi = grad(k) + decay * w[k];
      const float mi = m[k] + c1 * (gi - m[k]);
      const float vi = v[k] + c2 * (gi * gi - v[k]);
      m[k] = mi;
      v[k] = vi;
      w[k] = w[k] - a * mi / (std::sqrt(vi) + e);
    }
  }
};

// SGD as Caffe: v ← μ·v − lr·(g + wd·w); w ← w + v.
struct SgdRule {
  float mu;
  template <class Grad>
  void run(const Item& it, int64_t p0, int64_t n, Grad grad) const {
    float* __restrict w = it.w + p0;
    float* __restrict vel = it.s1 + p0;
    const float lr = it.lr, decay = it.decay, m = mu;
#pragma omp simd
    for (int64_t k = 0; k < n; k++) {
      const float vi = m * vel[k] - lr * (grad(k) + decay * w[k]);
      vel[k] = vi;
      w[k] = w[k] + vi;
    }
  }
};

// Tiles of 32 output × 32 input channels over every kernel position: the master and its
// state are read in runs of KH·KW, each packed copy written in runs along its blocks from a
// small buffer [kernel position][o][i] (rows padded by a cache line: at a power-of-two
// stride every position's row would fall in the same L1 set).
constexpr int64_t kTileO = 32, kTileI = 32, kRow = kTileO * kTileI + 16;
// Plain parameters (biases, and kernels without copies) are shared out in chunks.
constexpr int64_t kChunk = 16384;

// dst[c·ds + r] = src[r·rs + c] for r < R, c < C: blocks of 8×8 in registers, the edges
// element-wise. Moving a tile between the master's order and a layout's is this transpose.
void transpose2d(const float* src, int64_t rs, float* dst, int64_t ds, int64_t R, int64_t C) {
  int64_t r8 = 0, c8 = 0;
#if defined(__AVX2__)
  r8 = R & ~int64_t(7), c8 = C & ~int64_t(7);
  for (int64_t r = 0; r < r8; r += 8)
    for (int64_t c = 0; c < c8; c += 8) {
      const float* s = src + r * rs + c;
      __m256 t[8], u[8];
      for (int k = 0; k < 8; k += 2) {
        const __m256 a = _mm256_loadu_ps(s + k * rs), b = _mm256_loadu_ps(s + (k + 1) * rs);
        t[k] = _mm256_unpacklo_ps(a, b);
        t[k + 1] = _mm256_unpackhi_ps(a, b);
      }
      for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
      }
      float* d = dst + c * ds + r;
      for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(d + k * ds, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(d + (k + 4) * ds, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
      }
    }
#endif
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = r < r8 ? c8 : 0; c < C; c++) dst[c * ds + r] = src[r * rs + c];
}

// The longest run (32, 16 or 8, dividing a tile) over which t steps by `step` everywhere in
// t's first n entries; 0 if none.
int64_t step_runs(const std::vector<int64_t>& t, int64_t n, int64_t step) {
  for (int64_t len = 32; len >= 8; len /= 2) {
    bool ok = n >= len;
    for (int64_t k = 0; ok && k + 1 < n; k++) ok = (k + 1) % len == 0 || t[size_t(k + 1)] - t[size_t(k)] == step;
    if (ok) return len;
  }
  return 0;
}

// t's first n entries pair up (t[2p + 1] = t[2p] + 1) at even offsets.
bool pairs_up(const std::vector<int64_t>& t, int64_t n) {
  for (int64_t k = 0; k + 1 < n; k += 2)
    if (t[size_t(k + 1)] != t[size_t(k)] + 1 || t[size_t(k)] % 2) return false;
  return true;
}

bool all_even(const std::vector<int64_t>& t, int64_t n) {
  for (int64_t k = 0; k < n; k++)
    if (t[size_t(k)] % 2) return false;
  return true;
}

// How a copy's full tiles are written (see Runs); full: the channels that full tiles cover.
Runs copy_runs(const Packed& pk, int64_t fullO, int64_t fullI) {
  if (fullO == 0 || fullI == 0) return {};
  if (pk.bf16 && all_even(pk.hw, int64_t(pk.hw.size()))) {
    if (pairs_up(pk.ti, fullI) && all_even(pk.to, fullO))
      if (int64_t len = step_runs(pk.to, fullO, 2)) return {Runs::kPairsI, len};
    if (pairs_up(pk.to, fullO) && all_even(pk.ti, fullI))
      if (int64_t len = step_runs(pk.ti, fullI, 2)) return {Runs::kPairsO, len};
  }
  if (int64_t len = step_runs(pk.ti, fullI, 1)) return {Runs::kRowsI, len};
  if (int64_t len = step_runs(pk.to, fullO, 1)) return {Runs::kRowsO, len};
  return {};
}

// The copies are written with streaming stores where a run fills whole 32-byte words: the copy
// is next read by the following step's forward, long after the cache forgot it, and ordinary
// stores would first read every line they write (measured on conv6's update: 10 ms less in
// bfloat16, 15 in float32).
//
// n elements from float32 to the copy's type.
inline void put_run(const Packed& pk, int64_t at, const float* __restrict src, int64_t n) {
  if (pk.bf16) {
    uint16_t* __restrict d = static_cast<uint16_t*>(pk.ptr) + at;
#pragma omp simd
    for (int64_t k = 0; k < n; k++) d[k] = f32_to_bf16(src[k]);
    return;
  }
  float* __restrict d = static_cast<float*>(pk.ptr) + at;
  int64_t k = 0;
#if defined(__AVX2__)
  if (reinterpret_cast<uintptr_t>(d) % 32 == 0)
    for (; k + 8 <= n; k += 8) _mm256_stream_ps(d + k, _mm256_loadu_ps(src + k));
#endif
  for (; k < n; k++) d[k] = src[k];
}

#if defined(__AVX2__)
// 8 float32 lanes rounded to bfloat16 as f32_to_bf16 does, the result in each lane's top half.
inline __m256i bf16_top(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
}
#endif

// n bfloat16 pairs (a[k], b[k]) from offset `at` on (even: the pair is one aligned 32-bit word).
inline void put_pairs(const Packed& pk, int64_t at, const float* __restrict a, const float* __restrict b, int64_t n) {
  typedef uint32_t __attribute__((may_alias)) word;
  word* __restrict d = reinterpret_cast<word*>(static_cast<uint16_t*>(pk.ptr) + at);
  int64_t k = 0;
#if defined(__AVX2__)
  if (reinterpret_cast<uintptr_t>(d) % 32 == 0)
    for (; k + 8 <= n; k += 8) {
      const __m256i lo = _mm256_srli_epi32(bf16_top(_mm256_loadu_ps(a + k)), 16);
      const __m256i hi = _mm256_and_si256(bf16_top(_mm256_loadu_ps(b + k)), _mm256_set1_epi32(int(0xffff0000u)));
      _mm256_stream_si256(reinterpret_cast<__m256i*>(d + k), _mm256_or_si256(lo, hi));
    }
#endif
  for (; k < n; k++) d[k] = uint32_t(f32_to_bf16(a[k])) | uint32_t(f32_to_bf16(b[k])) << 16;
}

// A tile as [j][o][i]: rows of i `row` apart, kernel positions kRow apart.
struct TileRows {
  const float* p;
  int64_t row;
};

// A full tile at (o0, i0) into a copy by its runs: toi = the tile as [j][o][i], tio = as
// [j][i][o] (kernel positions kRow apart).
void write_by_runs(const Packed& pk, TileRows toi, const float* tio, int64_t o0, int64_t i0) {
  const int64_t len = pk.runs.len, row = toi.row;
  const int64_t* to = &pk.to[size_t(o0)];
  const int64_t* ti = &pk.ti[size_t(i0)];
  for (size_t j = 0; j < pk.hw.size(); j++) {
    const int64_t aj = pk.hw[j];
    const float* oi = toi.p + int64_t(j) * kRow;
    const float* io = tio + int64_t(j) * kRow;
    switch (pk.runs.kind) {
      case Runs::kRowsI:
        for (int64_t o = 0; o < kTileO; o++)
          for (int64_t i = 0; i < kTileI; i += len) put_run(pk, aj + to[o] + ti[i], oi + o * row + i, len);
        break;
      case Runs::kRowsO:
        for (int64_t i = 0; i < kTileI; i++)
          for (int64_t o = 0; o < kTileO; o += len) put_run(pk, aj + to[o] + ti[i], io + i * kTileO + o, len);
        break;
      case Runs::kPairsI:
        for (int64_t i = 0; i < kTileI; i += 2)
          for (int64_t o = 0; o < kTileO; o += len) put_pairs(pk, aj + to[o] + ti[i], io + i * kTileO + o, io + (i + 1) * kTileO + o, len);
        break;
      case Runs::kPairsO:
        for (int64_t o = 0; o < kTileO; o += 2)
          for (int64_t i = 0; i < kTileI; i += len) put_pairs(pk, aj + to[o] + ti[i], oi + o * row + i, oi + (o + 1) * row + i, len);
        break;
      case Runs::kGeneric:
        break;
    }
  }
}

void write_tile(const Packed& pk, const float* tile, int64_t o0, int64_t i0, int64_t no, int64_t ni) {
  for (size_t j = 0; j < pk.hw.size(); j++)
    for (int64_t o = 0; o < no; o++) {
      const float* row = tile + int64_t(j) * kRow + o * kTileI;
      const int64_t base = pk.hw[j] + pk.to[size_t(o0 + o)];
      const int64_t* idx = &pk.ti[size_t(i0)];
      if (pk.bf16) {
        uint16_t* d = static_cast<uint16_t*>(pk.ptr) + base;
        for (int64_t i = 0; i < ni; i++) d[idx[i]] = f32_to_bf16(row[i]);
      } else {
        float* d = static_cast<float*>(pk.ptr) + base;
        for (int64_t i = 0; i < ni; i++) d[idx[i]] = row[i];
      }
    }
}

// The plan for a copy (see Packed), or none when its layout does not repeat tile by tile.
std::shared_ptr<const TilePlan> plan_runs(const Packed& pk, int64_t O, int64_t I, int64_t KK) {
  if (O < kTileO || I < kTileI || I * KK * kTileO > INT32_MAX) return nullptr;
  for (int64_t o0 = 0; o0 + kTileO <= O; o0 += kTileO)
    for (int64_t o = 0; o < kTileO; o++)
      if (pk.to[size_t(o0 + o)] - pk.to[size_t(o0)] != pk.to[size_t(o)] - pk.to[0]) return nullptr;
  for (int64_t i0 = 0; i0 + kTileI <= I; i0 += kTileI)
    for (int64_t i = 0; i < kTileI; i++)
      if (pk.ti[size_t(i0 + i)] - pk.ti[size_t(i0)] != pk.ti[size_t(i)] - pk.ti[0]) return nullptr;
  std::vector<std::pair<int64_t, int32_t>> at;  // (destination, source) per element
  at.reserve(size_t(KK * kTileO * kTileI));
  for (int64_t o = 0; o < kTileO; o++)
    for (int64_t i = 0; i < kTileI; i++)
      for (int64_t j = 0; j < KK; j++)
        at.push_back({pk.hw[size_t(j)] + pk.to[size_t(o)] - pk.to[0] + pk.ti[size_t(i)] - pk.ti[0], int32_t((o * I + i) * KK + j)});
  std::sort(at.begin(), at.end());
  auto plan = std::make_shared<TilePlan>();
  for (size_t k = 0; k < at.size(); k++) {
    if (k > 0 && at[k].first == at[k - 1].first) return nullptr;
    if (k == 0 || at[k].first != at[k - 1].first + 1) {
      plan->run_at.push_back(at[k].first);
      plan->run_len.push_back(0);
    }
    plan->run_len.back()++;
    plan->src.push_back(at[k].second);
  }
  return plan;
}

// What is derived from a layout alone (a copy's plan, a blocked master's tile runs), kept by
// layout: the same tensors come back every step, and sorting conv6's tile (50 k elements) each
// time would cost the step milliseconds on one thread.
template <class T, class Make>
std::shared_ptr<const T> by_layout(const std::string& key, Make make) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const T>> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto hit = cache.find(key);
    if (hit != cache.end()) return hit->second;
  }
  std::shared_ptr<const T> made = make();
  std::lock_guard<std::mutex> lock(mutex);
  return cache.emplace(key, made).first->second;
}

std::string layout_key(const memory::desc& md) { return md_key(md) + " @" + std::to_string(md.data.offset0); }

std::shared_ptr<const TilePlan> cached_plan(const Packed& pk, const memory::desc& md, bool flipped, const memory::dims& d) {
  return by_layout<TilePlan>(layout_key(md) + (flipped ? " flipped" : ""), [&] { return plan_runs(pk, d[0], d[1], d[2] * d[3]); });
}

// A full tile by its copy's plan; w: the master at the tile's corner (o0, i0, 0).
void write_runs(const Packed& pk, const float* w, int64_t base) {
  const TilePlan& plan = *pk.plan;
  const int32_t* src = plan.src.data();
  for (size_t r = 0; r < plan.run_at.size(); r++) {
    const int64_t n = plan.run_len[r];
    if (pk.bf16) {
      uint16_t* d = static_cast<uint16_t*>(pk.ptr) + base + plan.run_at[r];
#pragma omp simd
      for (int64_t k = 0; k < n; k++) d[k] = f32_to_bf16(w[src[k]]);
    } else {
      float* d = static_cast<float*>(pk.ptr) + base + plan.run_at[r];
#pragma omp simd
      for (int64_t k = 0; k < n; k++) d[k] = w[src[k]];
    }
    src += n;
  }
}

// Per-thread room for a tile: the updated master as [j][o][i] (oi) and as [j][i][o] (io),
// kernel positions kRow apart; a full tile's gradient in the master's order (gtile); one output
// channel's gathered gradient (grun).
struct TileBuffers {
  float *oi = nullptr, *io = nullptr, *gtile = nullptr, *grun = nullptr;
};

// The master's tile (o0, i0) of no × ni channels transposed into oi and/or io.
void transpose_tile(const Item& it, int64_t o0, int64_t i0, int64_t no, int64_t ni, float* oi, float* io) {
  const int64_t I = it.dims[1], KK = it.dims[2] * it.dims[3];
  const float* w = it.w + (o0 * I + i0) * KK;
  if (oi)
    for (int64_t o = 0; o < no; o++) transpose2d(w + o * I * KK, KK, oi + o * kTileI, kRow, ni, KK);
  if (io && KK == 1) transpose2d(w, I, io, kTileO, no, ni);
  else if (io)
    for (int64_t i = 0; i < ni; i++) transpose2d(w + i * KK, I * KK, io + i * kTileO, kRow, no, KK);
}

// Where a gradient's run starts (its kernel positions g_jstep apart): fetched into L1 one run
// ahead of its transpose. Each run touches KH·KW lines a kilobyte or more apart, a pattern the
// hardware prefetchers follow badly: on conv6 (bfloat16, OIhw16i16o) the update took 9–11 ms
// (of 67) less with it.
inline void prefetch_run(const Item& it, const float* g) {
  const int64_t KK = it.dims[2] * it.dims[3];
  for (int64_t j = 0; j < KK; j++) __builtin_prefetch(g + j * it.g_jstep, 0, 3);
}

// A full tile's blocked gradient in the master's order (output channel o's run at gt + o·run,
// then i·KK + j) by transposes of its runs along o or i; i_end: the span's end, to prefetch to.
void gather_grad_tile(const Item& it, int64_t o0, int64_t i0, int64_t i_end, float* gt, int64_t run) {
  const int64_t KK = it.dims[2] * it.dims[3], len = it.g_runs.len;
  const float* g = it.g + it.gl.hw[0];
  const int64_t* to = &it.gl.to[size_t(o0)];
  const int64_t* ti = &it.gl.ti[size_t(i0)];
  if (it.g_runs.kind == Runs::kRowsO)
    for (int64_t i = 0; i < kTileI; i++) {
      for (int64_t o = 0; o < kTileO && i0 + i + 1 < i_end; o += len) prefetch_run(it, g + to[o] + ti[i + 1]);
      for (int64_t o = 0; o < kTileO; o += len) transpose2d(g + to[o] + ti[i], it.g_jstep, gt + o * run + i * KK, run, KK, len);
    }
  else
    for (int64_t o = 0; o < kTileO; o++) {
      for (int64_t i = 0; i < kTileI && o + 1 < kTileO; i += len) prefetch_run(it, g + to[o + 1] + ti[i]);
      for (int64_t i = 0; i < kTileI; i += len) transpose2d(g + to[o] + ti[i], it.g_jstep, gt + o * run + i * KK, KK, KK, len);
    }
}

// The tile's packed copies from the just-updated master: a full tile by its copies' runs (or
// plans), an edge tile element-wise.
void write_copies(const Item& it, int64_t o0, int64_t i0, int64_t no, int64_t ni, const TileBuffers& b) {
  if (it.packs.empty()) return;
  const int64_t I = it.dims[1], KK = it.dims[2] * it.dims[3];
  const bool full = no == kTileO && ni == kTileI;
  // A 1×1 kernel's full tile as [j][o][i] is the master itself, read in place.
  const bool oi_in_place = full && KK == 1;
  bool need_oi = false, need_io = false;
  for (const Packed& pk : it.packs) {
    const Runs::Kind k = full ? pk.runs.kind : Runs::kGeneric;
    if (k == Runs::kRowsO || k == Runs::kPairsI) need_io = true;
    else if (k == Runs::kGeneric ? !full || !pk.plan : !oi_in_place) need_oi = true;
  }
  transpose_tile(it, o0, i0, no, ni, need_oi ? b.oi : nullptr, need_io ? b.io : nullptr);
  const float* corner = it.w + (o0 * I + i0) * KK;
  const TileRows oi = oi_in_place ? TileRows{corner, I} : TileRows{b.oi, kTileI};
  for (const Packed& pk : it.packs) {
    if (full && pk.runs.kind != Runs::kGeneric) write_by_runs(pk, oi, b.io, o0, i0);
    else if (full && pk.plan) write_runs(pk, corner, pk.to[size_t(o0)] + pk.ti[size_t(i0)]);
    else write_tile(pk, b.oi, o0, i0, no, ni);
  }
}

// Tiles side by side along i (a span) are updated row by row before their copies are written,
// so that the master and its state are read in runs of up to kSpanRun elements (32 KB). With
// one tile per run (6 KB for a 7×7 kernel, 128 bytes for a 1×1) conv6's update ran at a third
// of the speed: the prefetchers lose track of 3 × 32 short runs at once.
constexpr int64_t kSpanRun = 8192;
int64_t span_of(int64_t KK) { return kTileI * std::max<int64_t>(1, kSpanRun / (kTileI * KK)); }

// The gradient of one output channel's run of tiles from i0 on (n inputs) as the update reads it.
template <class Rule>
void update_row(const Item& it, const Rule& rule, const TileBuffers& b, int64_t o, int64_t i0, int64_t n) {
  const int64_t I = it.dims[1], KK = it.dims[2] * it.dims[3];
  for (int64_t s = i0; s < i0 + n; s += kTileI) {
    const int64_t ni = std::min(kTileI, i0 + n - s), p0 = (o * I + s) * KK, run = ni * KK;
    if (ni == kTileI && !it.gidx.empty()) {
      const float* g = it.g + it.gl.to[size_t(o)] + it.gl.ti[size_t(s)];
      const int32_t* gx = it.gidx.data();
      rule.run(it, p0, run, [g, gx](int64_t k) { return g[gx[k]]; });
      continue;
    }
    float* grun = b.grun;
    for (int64_t i = 0; i < ni; i++) {
      const float* gi = it.g + it.gl.to[size_t(o)] + it.gl.ti[size_t(s + i)];
      for (int64_t j = 0; j < KK; j++) grun[i * KK + j] = gi[it.gl.hw[size_t(j)]];
    }
    rule.run(it, p0, run, [grun](int64_t k) { return grun[k]; });
  }
}

// Per output channel, the master's run over a span of tiles is contiguous: a blocked gradient is
// transposed into that order (full tiles whose layout runs along o or i), read through its
// plan, or gathered into a run of its own first, so the update itself vectorises.
template <class Rule>
void update_tiled(const Item& it, const Rule& rule, const TileBuffers& b) {
  const int64_t O = it.dims[0], I = it.dims[1], KK = it.dims[2] * it.dims[3], span = span_of(KK);
#pragma omp for collapse(2) schedule(static) nowait
  for (int64_t o0 = 0; o0 < O; o0 += kTileO)
    for (int64_t s0 = 0; s0 < I; s0 += span) {
      if (!b.oi) continue;  // a thread without its buffers still meets the loop, doing nothing
      const int64_t no = std::min(kTileO, O - o0), ns = std::min(span, I - s0), run = ns * KK;
      const bool grad_tiles = !it.g_plain && no == kTileO && ns % kTileI == 0 && it.g_runs.kind != Runs::kGeneric;
      if (grad_tiles)
        for (int64_t i0 = s0; i0 < s0 + ns; i0 += kTileI) gather_grad_tile(it, o0, i0, s0 + ns, b.gtile + (i0 - s0) * KK, run);
      for (int64_t o = 0; o < no; o++) {
        const int64_t p0 = ((o0 + o) * I + s0) * KK;
        if (it.g_plain || grad_tiles) {
          const float* g = it.g_plain ? it.g + p0 : b.gtile + o * run;
          rule.run(it, p0, run, [g](int64_t k) { return g[k]; });
        } else {
          update_row(it, rule, b, o0 + o, s0, ns);
        }
      }
      for (int64_t i0 = s0; i0 < s0 + ns; i0 += kTileI) write_copies(it, o0, i0, no, std::min(kTileI, I - i0), b);
    }
}

// A tile of a blocked master as [j][o][i] (oi) and [j][i][o] (io): rows along the layout's runs
// are copied, the other order is their transpose (in cache: the tile was just updated).
void blocked_tile_views(const Item& it, int64_t o0, int64_t i0, int64_t no, int64_t ni, float* oi, float* io) {
  const int64_t KK = it.dims[2] * it.dims[3];
  const int64_t* to = &it.gl.to[size_t(o0)];
  const int64_t* ti = &it.gl.ti[size_t(i0)];
  const bool full = no == kTileO && ni == kTileI, along_o = full && it.g_runs.kind == Runs::kRowsO;
  const int64_t len = it.g_runs.len;
  for (int64_t j = 0; j < KK; j++) {
    const float* w = it.w + it.gl.hw[size_t(j)];
    float* oj = oi + j * kRow;
    float* ij = io + j * kRow;
    if (along_o) {
      for (int64_t i = 0; i < kTileI; i++)
        for (int64_t o = 0; o < kTileO; o += len) std::memcpy(ij + i * kTileO + o, w + to[o] + ti[i], size_t(len) * 4);
      transpose2d(ij, kTileO, oj, kTileI, kTileI, kTileO);
    } else if (full && it.g_runs.kind == Runs::kRowsI) {
      for (int64_t o = 0; o < kTileO; o++)
        for (int64_t i = 0; i < kTileI; i += len) std::memcpy(oj + o * kTileI + i, w + to[o] + ti[i], size_t(len) * 4);
      transpose2d(oj, kTileI, ij, kTileO, kTileO, kTileI);
    } else {
      for (int64_t o = 0; o < no; o++)
        for (int64_t i = 0; i < ni; i++) oj[o * kTileI + i] = ij[i * kTileO + o] = w[to[o] + ti[i]];
    }
  }
}

// Runs of a blocked layout's full tile, or none if its tiles differ (see Item::blocks).
std::shared_ptr<const TileRuns> tile_runs(const Item& it) {
  const int64_t O = it.dims[0], I = it.dims[1], KK = it.dims[2] * it.dims[3];
  const auto& to = it.gl.to;
  const auto& ti = it.gl.ti;
  bool same = O >= kTileO && I >= kTileI;
  for (int64_t o0 = 0; same && o0 + kTileO <= O; o0 += kTileO)
    for (int64_t o = 0; same && o < kTileO; o++) same = to[size_t(o0 + o)] - to[size_t(o0)] == to[size_t(o)] - to[0];
  for (int64_t i0 = 0; same && i0 + kTileI <= I; i0 += kTileI)
    for (int64_t i = 0; same && i < kTileI; i++) same = ti[size_t(i0 + i)] - ti[size_t(i0)] == ti[size_t(i)] - ti[0];
  if (!same) return nullptr;
  std::vector<int64_t> at;
  at.reserve(size_t(kTileO * kTileI * KK));
  for (int64_t o = 0; o < kTileO; o++)
    for (int64_t i = 0; i < kTileI; i++)
      for (int64_t j = 0; j < KK; j++) at.push_back(to[size_t(o)] - to[0] + ti[size_t(i)] - ti[0] + it.gl.hw[size_t(j)]);
  std::sort(at.begin(), at.end());
  auto runs = std::make_shared<TileRuns>();
  for (size_t k = 0; k < at.size(); k++)
    if (k > 0 && at[k] == at[k - 1] + 1) runs->back().second++;
    else runs->push_back({at[k], 1});
  return runs;
}

// A master in its gradient's blocked layout (Item::w_blocked): each tile updated along the
// layout's runs (the four arrays read in the same order, no transpose), then its copies written.
template <class Rule>
void update_blocked(const Item& it, const Rule& rule, const TileBuffers& b) {
  const int64_t O = it.dims[0], I = it.dims[1], KK = it.dims[2] * it.dims[3];
  const float* g = it.g;
#pragma omp for collapse(2) schedule(static) nowait
  for (int64_t o0 = 0; o0 < O; o0 += kTileO)
    for (int64_t i0 = 0; i0 < I; i0 += kTileI) {
      if (!b.oi) continue;
      const int64_t no = std::min(kTileO, O - o0), ni = std::min(kTileI, I - i0);
      if (no == kTileO && ni == kTileI && it.blocks) {
        const int64_t corner = it.gl.to[size_t(o0)] + it.gl.ti[size_t(i0)];
        for (const auto& r : *it.blocks) {
          const float* gr = g + corner + r.first;
          rule.run(it, corner + r.first, r.second, [gr](int64_t k) { return gr[k]; });
        }
      } else {
        for (int64_t o = o0; o < o0 + no; o++)
          for (int64_t i = i0; i < i0 + ni; i++)
            for (int64_t j = 0; j < KK; j++) {
              const int64_t p = it.gl.to[size_t(o)] + it.gl.ti[size_t(i)] + it.gl.hw[size_t(j)];
              rule.run(it, p, 1, [g, p](int64_t) { return g[p]; });
            }
      }
      if (it.packs.empty()) continue;
      blocked_tile_views(it, o0, i0, no, ni, b.oi, b.io);
      const bool full = no == kTileO && ni == kTileI;
      for (const Packed& pk : it.packs)
        if (full && pk.runs.kind != Runs::kGeneric) write_by_runs(pk, TileRows{b.oi, kTileI}, b.io, o0, i0);
        else write_tile(pk, b.oi, o0, i0, no, ni);
    }
}

// Every parameter in one OpenMP region (no fork/join per tensor; biases share the threads'
// time with the large kernels).
template <class Rule>
void update_all(const std::vector<Item>& items, const Rule& rule) {
  int64_t kk = 0, rows = 0;  // the largest kernel; the longest run of a span (see span_of)
  for (const Item& it : items)
    if (it.tiled()) kk = std::max(kk, it.dims[2] * it.dims[3]), rows = std::max(rows, span_of(it.dims[2] * it.dims[3]) * it.dims[2] * it.dims[3]);
  ParallelErrors errors;
#pragma omp parallel
  {
    FlushDenormals flush;  // moments decaying towards 0 would pass through denormals
    std::vector<float> buf;
    if (kk) errors.capture([&] { buf.resize(size_t(2 * kk * kRow + kTileO * rows + kk * kTileI)); });
    TileBuffers b;
    if (!buf.empty()) b = {buf.data(), buf.data() + kk * kRow, buf.data() + 2 * kk * kRow, buf.data() + 2 * kk * kRow + kTileO * rows};
    for (const Item& it : items) {
      if (it.w_blocked) {
        update_blocked(it, rule, b);
        continue;
      }
      if (it.tiled()) {
        update_tiled(it, rule, b);
        continue;
      }
      const float* g = it.g;
#pragma omp for schedule(static) nowait
      for (int64_t c = 0; c < it.n; c += kChunk) rule.run(it, c, std::min(kChunk, it.n - c), [g, c](int64_t k) { return g[c + k]; });
    }
#if defined(__AVX2__)
    _mm_sfence();  // the copies' streaming stores are seen by whoever reads them next
#endif
  }
  errors.rethrow();
}

// Item::gidx, when every full tile's run sees the same pattern of offsets.
void plan_grad(Item& it) {
  const int64_t I = it.dims[1], KK = it.dims[2] * it.dims[3];
  const auto& ti = it.gl.ti;
  if (I < kTileI) return;
  for (int64_t i0 = 0; i0 + kTileI <= I; i0 += kTileI)
    for (int64_t i = 0; i < kTileI; i++)
      if (ti[size_t(i0 + i)] - ti[size_t(i0)] != ti[size_t(i)] - ti[0]) return;
  for (int64_t i = 0; i < kTileI; i++)
    for (int64_t j = 0; j < KK; j++) {
      const int64_t at = ti[size_t(i)] - ti[0] + it.gl.hw[size_t(j)];
      if (at < INT32_MIN || at > INT32_MAX) return it.gidx.clear();
      it.gidx.push_back(int32_t(at));
    }
}

// Item::g_runs, when kernel positions lie evenly apart and full tiles run along o or i.
void grad_runs(Item& it) {
  const auto& hw = it.gl.hw;
  const int64_t fullO = it.dims[0] / kTileO * kTileO, fullI = it.dims[1] / kTileI * kTileI;
  const int64_t jstep = hw.size() > 1 ? hw[1] - hw[0] : 0;
  for (size_t j = 1; j < hw.size(); j++)
    if (hw[j] - hw[j - 1] != jstep) return;
  if (fullO == 0 || fullI == 0) return;
  it.g_jstep = jstep;
  if (int64_t len = step_runs(it.gl.to, fullO, 1)) it.g_runs = {Runs::kRowsO, len};
  else if (int64_t len = step_runs(it.gl.ti, fullI, 1)) it.g_runs = {Runs::kRowsI, len};
}

void check_state(const Tensor& w, const Tensor& t, const std::string& what) {
  if (w.md.dims() != t.md.dims()) throw_range_error(what + " does not match the weights (" + dims_key(t.dims()) + " vs " + dims_key(w.dims()) + ")");
  if (w.md != t.md) throw_type_error(what + " does not match the weights (" + md_key(t.md) + " vs " + md_key(w.md) + ")");
}

// The item's master weights (plain float32) and gradient: plain like w, or for a kernel any
// blocked float32 layout a weight-gradient primitive left it in.
Item base_item(const Napi::Value& W, const Napi::Value& G, const std::string& which) {
  Tensor& w = Tensor::From(W, which + "weights");
  Tensor& g = Tensor::From(G, which + "grad");
  require_dtype(w, which + "weights", {dt::f32});
  if (g.dims() != w.dims()) throw_range_error(which + "grad does not match the weights (" + dims_key(g.dims()) + " vs " + dims_key(w.dims()) + ")");
  require_dtype(g, which + "grad", {dt::f32});
  const bool w_blocked = !is_plain(w.md);
  if (w_blocked && (g.md != w.md || w.dims().size() != 4 || w.md.data.format_kind != dnnl_blocked))
    throw_type_error(which + "weights must be plain, or blocked as their gradient, got " + md_key(w.md) + " with a gradient " + md_key(g.md));
  Item it{};
  it.w = static_cast<float*>(w.ptr);
  it.g = static_cast<const float*>(g.ptr);
  it.n = int64_t(w.bytes / 4);
  it.dims = w.dims();
  if (g.md == w.md && !w_blocked) return it;
  if (it.dims.size() != 4 || g.md.data.format_kind != dnnl_blocked)
    throw_type_error(which + "grad does not match the weights (" + md_key(g.md) + " vs " + md_key(w.md) + ")");
  it.g_plain = false;
  it.g += g.md.data.offset0;
  it.gl = {offsets_along(g.md.data, 0), offsets_along(g.md.data, 1), kernel_offsets(g.md.data, false)};
  for (auto& h : it.gl.hw) h -= g.md.data.offset0;
  grad_runs(it);
  if (w_blocked) {
    it.w_blocked = true;
    it.w += w.md.data.offset0;
    it.blocks = by_layout<TileRuns>(layout_key(w.md), [&] { return tile_runs(it); });
    return it;
  }
  plan_grad(it);
  return it;
}

// The optimiser state of a master in its gradient's layout starts where the master's does.
float* state_ptr(const Tensor& t, const Item& it) {
  return static_cast<float*>(t.ptr) + (it.w_blocked ? t.md.data.offset0 : 0);
}

// packs: undefined/null, or an array of {tensor, flipped}: blocked float32 or bfloat16 copies
// of a kernel (O,I,KH,KW; flipped: I,O,KH,KW).
void read_packs(const Napi::Value& v, const Tensor& w, Item& it, const std::string& which) {
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsArray()) throw_type_error(which + "packed copies must be an array, got " + describe(v));
  auto a = v.As<Napi::Array>();
  for (uint32_t k = 0; k < a.Length(); k++) {
    const std::string name = which + "packed copy " + std::to_string(k);
    Napi::Value e = a.Get(k);
    if (!e.IsObject()) throw_type_error(name + " must be {tensor, flipped}, got " + describe(e));
    const bool flipped = read_bool(e.As<Napi::Object>().Get("flipped"), name + ".flipped");
    Tensor& t = Tensor::From(e.As<Napi::Object>().Get("tensor"), name + ".tensor");
    require_float(t, name);
    const auto d = w.dims();
    if (d.size() != 4) throw_range_error(name + ": only kernels (O,I,KH,KW) have packed copies");
    const memory::dims want = flipped ? memory::dims{d[1], d[0], d[2], d[3]} : d;
    require_dims(t, name, want);
    if (t.md.data.format_kind != dnnl_blocked || t.ptr == w.ptr) throw_type_error(name + " must be a copy apart from the weights");
    const auto& md = t.md.data;
    it.packs.push_back({t.ptr, t.md.data_type() == dt::bf16, offsets_along(md, flipped ? 1 : 0), offsets_along(md, flipped ? 0 : 1), kernel_offsets(md, flipped), nullptr, {}});
    it.packs.back().plan = cached_plan(it.packs.back(), t.md, flipped, d);
    it.packs.back().runs = copy_runs(it.packs.back(), d[0] / kTileO * kTileO, d[1] / kTileI * kTileI);
  }
}

AdamRule adam_rule(const Napi::Object& o) {
  return {float(opt_num(o, "alpha", 1e-3)), float(opt_num(o, "beta1", 0.9)), float(opt_num(o, "beta2", 0.999)), float(opt_num(o, "epsilon", 1e-7))};
}

Item adam_item(const Napi::Value& W, const Napi::Value& G, const Napi::Value& M, const Napi::Value& V, const Napi::Value& P, double l2, const std::string& which) {
  Item it = base_item(W, G, which);
  Tensor& w = Tensor::From(W, which + "weights");
  Tensor& m = Tensor::From(M, which + "m");
  Tensor& v = Tensor::From(V, which + "v");
  check_state(w, m, which + "m");
  check_state(w, v, which + "v");
  it.s1 = state_ptr(m, it);
  it.s2 = state_ptr(v, it);
  it.decay = float(2 * l2);
  read_packs(P, w, it, which);
  return it;
}
}  // namespace

// adamUpdate(w, g, m, v, {alpha, beta1, beta2, epsilon, l2}, packs?): one parameter (see AdamRule).
Napi::Value AdamUpdate(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 4);
  const AdamRule rule = adam_rule(o);
  const double l2 = opt_num(o, "l2", 0);
  update_all(std::vector<Item>{adam_item(info[0], info[1], info[2], info[3], info[5], l2, "")}, rule);
  return info.Env().Undefined();
}

// adamUpdateAll([w…], [g…], [m…], [v…], [l2…], {alpha, beta1, beta2, epsilon}, [packs…]?):
// every parameter in one call; l2[i] applies to w[i], packs[i] (optional) are w[i]'s copies.
Napi::Value AdamUpdateAll(const Napi::CallbackInfo& info) {
  const char* names[5] = {"weights", "grads", "m", "v", "l2"};
  for (int i = 0; i < 5; i++)
    if (!info[i].IsArray()) throw_type_error(std::string(names[i]) + " must be an array, got " + describe(info[i]));
  const AdamRule rule = adam_rule(options_arg(info, 5));
  auto W = info[0].As<Napi::Array>(), G = info[1].As<Napi::Array>(), M = info[2].As<Napi::Array>(), V = info[3].As<Napi::Array>(), L = info[4].As<Napi::Array>();
  const uint32_t k = W.Length();
  if (G.Length() != k || M.Length() != k || V.Length() != k || L.Length() != k)
    throw_range_error("the five arrays must have the same length, got " + list_str({W.Length(), G.Length(), M.Length(), V.Length(), L.Length()}));
  const bool has_packs = !info[6].IsUndefined() && !info[6].IsNull();
  if (has_packs && (!info[6].IsArray() || info[6].As<Napi::Array>().Length() != k))
    throw_type_error("packs must be an array as long as the weights, got " + describe(info[6]));
  // Everything is read from JS (array getters may run) before any tensor is touched.
  // (No room is reserved up front: a sparse array can claim billions of elements it does not
  // hold, and the first missing one ends the call.)
  std::vector<double> l2;
  for (uint32_t i = 0; i < k; i++) l2.push_back(read_number(L.Get(i), "l2[" + std::to_string(i) + "]"));
  std::vector<Item> items;
  for (uint32_t i = 0; i < k; i++) {
    Napi::Value packs = has_packs ? info[6].As<Napi::Array>().Get(i) : info.Env().Undefined();
    items.push_back(adam_item(W.Get(i), G.Get(i), M.Get(i), V.Get(i), packs, l2[i], "parameter " + std::to_string(i) + ": "));
  }
  update_all(items, rule);
  return info.Env().Undefined();
}

// sgdUpdate(w, g, v, {lr, momentum, weightDecay}, packs?): see SgdRule.
Napi::Value SgdUpdate(const Napi::CallbackInfo& info) {
  auto o = options_arg(info, 3);
  const float lr = float(opt_num(o, "lr", 1e-3)), mu = float(opt_num(o, "momentum", 0)), wd = float(opt_num(o, "weightDecay", 0));
  Item it = base_item(info[0], info[1], "");
  Tensor& w = Tensor::From(info[0], "weights");
  Tensor& v = Tensor::From(info[2], "velocity");
  check_state(w, v, "velocity");
  it.s1 = state_ptr(v, it);
  it.lr = lr;
  it.decay = wd;
  read_packs(info[4], w, it, "");
  update_all(std::vector<Item>{it}, SgdRule{mu});
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
