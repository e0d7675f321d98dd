#include "conv.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "eltwise.h"

namespace fcn {

namespace {

// Shapes are N,C,H,W for activations and O,I,KH,KW for weights, for both convolution
// and transposed convolution (oneDNN's deconvolution weights are output-channel first too).
struct ConvSpec {
  bool transposed = false;
  bool relu = false;
  bool has_bias = false;
  dt compute = dt::f32;
  memory::dims x, w, y;
  memory::dims stride{1, 1}, pad_l{0, 0}, pad_r{0, 0};

  std::string key(const char* op) const {
    return std::string(op) + (transposed ? "T" : "C") + (relu ? "r" : "") + (has_bias ? "b" : "") + dtype_name(compute) + "|" +
           dims_key(x) + "|" + dims_key(w) + "|" + dims_key(stride) + "|" + dims_key(pad_l) + "|" + dims_key(pad_r);
  }
};

ConvSpec parse_spec(const Napi::Env& env, const memory::dims& x, const memory::dims& w, bool has_bias, const Napi::Object& o) {
  ConvSpec s;
  s.transposed = opt_bool(o, "transposed", false);
  s.relu = opt_bool(o, "relu", false);
  s.has_bias = has_bias;
  s.compute = parse_dtype(env, opt_str(o, "dtype", "float32"));
  if (s.compute != dt::f32 && s.compute != dt::bf16) throw Napi::TypeError::New(env, "conv: compute dtype must be float32 or bfloat16");
  auto st = opt_ints(o, "stride", {1, 1});
  auto pad = opt_ints(o, "padding", {0, 0, 0, 0});  // top, left, bottom, right
  if (st.size() != 2 || pad.size() != 4) throw Napi::TypeError::New(env, "conv: stride must be [sh, sw] and padding [top, left, bottom, right]");
  s.stride = {st[0], st[1]};
  s.pad_l = {pad[0], pad[1]};
  s.pad_r = {pad[2], pad[3]};
  if (x.size() != 4 || w.size() != 4) throw Napi::TypeError::New(env, "conv: input must be N,C,H,W and weights O,I,KH,KW");
  if (x[1] != w[1])
    throw Napi::TypeError::New(env, "conv: input has " + std::to_string(x[1]) + " channels but the weights expect " + std::to_string(w[1]));
  s.x = x;
  s.w = w;
  int64_t oh, ow;
  if (s.transposed) {
    oh = (x[2] - 1) * s.stride[0] - s.pad_l[0] - s.pad_r[0] + w[2];
    ow = (x[3] - 1) * s.stride[1] - s.pad_l[1] - s.pad_r[1] + w[3];
  } else {
    oh = (x[2] + s.pad_l[0] + s.pad_r[0] - w[2]) / s.stride[0] + 1;
    ow = (x[3] + s.pad_l[1] + s.pad_r[1] - w[3]) / s.stride[1] + 1;
  }
  if (oh < 1 || ow < 1) throw Napi::TypeError::New(env, "conv: input " + dims_key(x) + " is too small for kernel " + dims_key(w));
  s.y = {x[0], w[0], oh, ow};
  return s;
}

template <bool Transposed>
struct Prims;
template <>
struct Prims<false> {
  using fwd = dnnl::convolution_forward;
  using bwd_data = dnnl::convolution_backward_data;
  using bwd_weights = dnnl::convolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::convolution_direct;
};
template <>
struct Prims<true> {
  using fwd = dnnl::deconvolution_forward;
  using bwd_data = dnnl::deconvolution_backward_data;
  using bwd_weights = dnnl::deconvolution_backward_weights;
  static constexpr dnnl::algorithm alg = dnnl::algorithm::deconvolution_direct;
};

memory::desc any(const memory::dims& d, dt type) { return memory::desc(d, type, tag::any); }

// Reference and gemm-based implementations are oneDNN's fallbacks, far slower than its jit
// and brgemm kernels: a layout that only they support is not worth keeping.
bool optimised(const char* impl) {
  std::string s(impl);
  return s.find("ref") == std::string::npos && s.find("gemm:") == std::string::npos;
}

void debug_impl(const char* what, const ConvSpec& s, const char* impl) {
  static const bool on = std::getenv("FCN_DEBUG_IMPL") != nullptr;
  if (on) std::fprintf(stderr, "fcn: %s %s -> %s\n", what, s.key("").c_str(), impl);
}
memory::desc bias_md(const ConvSpec& s) { return s.has_bias ? memory::desc({s.w[0]}, dt::f32, tag::a) : memory::desc(); }

template <bool T>
typename Prims<T>::fwd::primitive_desc fwd_pd(const ConvSpec& s, bool training) {
  using F = typename Prims<T>::fwd;
  // Always forward_inference: a convolution keeps nothing for its backward pass (the ReLU's
  // backward reads the saved output), and oneDNN 2.6 offers its fastest kernels (brgconv)
  // only for inference — with forward_training it picks jit kernels at half the speed.
  // (Their float32 sums round differently, so a pre-activation within rounding of zero can
  // switch its ReLU: test/models/parity.test.ts explains how the reference allows for that.)
  (void)training;
  auto pk = dnnl::prop_kind::forward_inference;
  auto d = s.has_bias ? typename F::desc(pk, Prims<T>::alg, any(s.x, s.compute), any(s.w, s.compute), bias_md(s), any(s.y, s.compute), s.stride, s.pad_l, s.pad_r)
                      : typename F::desc(pk, Prims<T>::alg, any(s.x, s.compute), any(s.w, s.compute), any(s.y, s.compute), s.stride, s.pad_l, s.pad_r);
  dnnl::primitive_attr attr;
  if (s.relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return typename F::primitive_desc(d, attr, cpu_engine());
}

void pack_weights(const Tensor& w, Tensor& dst, bool transpose_flip);

// The caller's prepared copy of the weights (option 'weightsCache'), if any.
Tensor* weights_cache(const Napi::Env& env, const Napi::Object& o) {
  return Tensor::FromOptional(o.Has("weightsCache") ? o.Get("weightsCache") : env.Null(), "weightsCache");
}

// Weights in the layout the primitive wants: the caller's cached copy when it still
// matches, else a fresh reorder that is handed back so the caller can cache it until the
// weights change (reordering conv6's 400 MB on every call would cost more than the conv).
// With `transpose_flip` the copy holds the input-gradient convolution's weights (see
// pack_weights), never w itself.
memory prepared_weights(Napi::Env env, Tensor& w, Tensor* cache, const memory::desc& want, Napi::Value& fresh, bool transpose_flip = false) {
  if (!transpose_flip && w.md == want) return w.mem();
  if (cache && cache->md == want) return cache->mem();
  Napi::Object t = Tensor::Create(env, want);
  auto t0 = std::chrono::steady_clock::now();
  // oneDNN 2.6's reorder into blocked bfloat16 weights with spatial kernels runs at ~4 GB/s
  // here (conv6: 144 ms); pack_weights does it in 94 ms. Every other case (float32, 1×1) its
  // reorder is the faster one.
  const bool spatial_bf16 = want.data_type() == dt::bf16 && want.dims().size() == 4 && want.dims()[2] * want.dims()[3] > 1;
  if (transpose_flip || (spatial_bf16 && is_plain(w.md) && w.md.data_type() == dt::f32 && want.dims() == w.dims() && want.data.format_kind == dnnl_blocked))
    pack_weights(w, *Tensor::Unwrap(t), transpose_flip);
  else
    reorder_into(w.mem(), Tensor::Unwrap(t)->mem());
  static const bool debug = std::getenv("FCN_DEBUG_IMPL") != nullptr;
  if (debug) std::fprintf(stderr, "fcn: %sweights %s in %.1f ms\n", transpose_flip ? "transposed " : "", md_key(want).c_str(), std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  fresh = t;
  return Tensor::Unwrap(t)->mem();
}

template <bool T>
Napi::Value forward(const Napi::CallbackInfo& info, Tensor& x, Tensor& w, Tensor* b, const Napi::Object& o) {
  Napi::Env env = info.Env();
  ConvSpec s = parse_spec(env, x.dims(), w.dims(), b != nullptr, o);
  if (b && b->dims() != memory::dims{s.w[0]}) throw Napi::TypeError::New(env, "conv: bias must have " + std::to_string(s.w[0]) + " values");
  bool training = opt_bool(o, "training", false);
  auto& cp = cached(s.key(training ? "fwdT" : "fwdI"), [&] {
    auto pd = fwd_pd<T>(s, training);
    debug_impl(training ? "fwdT" : "fwdI", s, pd.impl_info_str());
    return CachedPrimitive{pd, typename Prims<T>::fwd(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(x, cp.pd.src_desc(), keep);
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache(env, o),
                                cp.pd.weights_desc(), fresh);
  Napi::Object y = Tensor::Create(env, cp.pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Unwrap(y)->mem()}};
  if (b) args.emplace(DNNL_ARG_BIAS, in_layout(*b, memory::desc({s.w[0]}, dt::f32, tag::a), keep));
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("weightsCache", fresh);
  return out;
}

// A stride-1 convolution's input gradient is itself a convolution: of dy with the weights
// transposed (in ↔ out channels) and flipped in space, padded by k−1−p. Run that way it uses
// oneDNN's forward brgconv kernels, which are faster than its backward-data kernels (conv6's
// 7×7 at 16×16: 2.3× in bf16).
bool input_grad_as_forward(const ConvSpec& s) {
  return !s.transposed && s.stride == memory::dims{1, 1} && s.pad_l == s.pad_r && s.pad_l[0] < s.w[2] && s.pad_l[1] < s.w[3];
}

ConvSpec input_grad_spec(const ConvSpec& s) {
  ConvSpec f = s;
  f.relu = false;
  f.has_bias = false;
  f.x = s.y;
  f.w = {s.w[1], s.w[0], s.w[2], s.w[3]};
  f.y = s.x;
  f.pad_l = f.pad_r = {s.w[2] - 1 - s.pad_l[0], s.w[3] - 1 - s.pad_l[1]};
  return f;
}

// Element offset of index i along dimension d of a blocked descriptor, as oneDNN lays it out
// (outer strides plus the position inside every inner block on d). Offsets are separable
// by dimension, so a table per dimension turns any 4-d index into four lookups.
std::vector<int64_t> offsets_along(const dnnl_memory_desc_t& md, int d) {
  const auto& b = md.format_desc.blocking;
  std::vector<int64_t> t(size_t(md.dims[d]));
  for (int64_t i = 0; i < md.dims[d]; i++) {
    int64_t pos = i, off = 0, blk_stride = 1;
    for (int k = b.inner_nblks - 1; k >= 0; k--) {
      if (b.inner_idxs[k] == d) {
        off += (pos % b.inner_blks[k]) * blk_stride;
        pos /= b.inner_blks[k];
      }
      blk_stride *= b.inner_blks[k];
    }
    t[size_t(i)] = off + pos * b.strides[d];
  }
  return t;
}

// Packs plain float32 weights w (O, I, KH, KW) into dst's blocked layout and data type, in one
// pass with no full-size temporary: dst = w, or with `transpose_flip`
// dst[i][o][kh][kw] = w[o][i][KH−1−kh][KW−1−kw] (the input-gradient convolution's weights).
void pack_weights(const Tensor& w, Tensor& dst, bool transpose_flip) {
  const dnnl_memory_desc_t& md = dst.md.data;
  const auto dims = w.dims();
  const int64_t O = dims[0], I = dims[1], KH = dims[2], KW = dims[3];
  const memory::dims want = transpose_flip ? memory::dims{I, O, KH, KW} : dims;
  if (md.format_kind != dnnl_blocked || !is_plain(w.md) || w.md.data_type() != dt::f32 || dst.dims() != want)
    throw std::runtime_error("conv: cannot pack weights " + md_key(w.md) + " into " + md_key(dst.md));
  if (transpose_flip && KH == 1 && KW == 1) {
    // Nothing to flip: oneDNN's reorder transposes from a strided view of the weights.
    memory::desc view({I, O, 1, 1}, dt::f32, memory::dims{1, I, 1, 1});
    reorder_into(memory(view, cpu_engine(), w.ptr), dst.mem());
    return;
  }
  // Destination offsets of source channel o and i (dims 0 and 1 swap when transposing).
  std::vector<int64_t> to = offsets_along(md, transpose_flip ? 1 : 0), ti = offsets_along(md, transpose_flip ? 0 : 1);
  std::vector<int64_t> th = offsets_along(md, 2), tw = offsets_along(md, 3);
  bool padded = false;
  for (int d = 0; d < md.ndims; d++) padded = padded || md.padded_dims[d] != md.dims[d];
  if (padded) std::memset(dst.ptr, 0, dst.bytes);  // oneDNN expects zeros in the padding
  const float* src = static_cast<const float*>(w.ptr);
  const int64_t off0 = md.offset0;
  const bool bf16 = dst.md.data_type() == dt::bf16;
  // Tiles of 64 output × 32 input channels. Each tile's source is first copied (flipped when
  // asked) into a small buffer ordered [kernel position][out][in], so that both the reads and the
  // destination writes run in order (a single pass in element order spent 3× longer on
  // conv6, missing the TLB on its 256 KB strides).
  // Rows of the buffer are padded by one cache line: at a power-of-two stride every kernel
  // position's row would fall in the same L1 set.
  constexpr int64_t TO = 64, TI = 32, ROW = TO * TI + 16;
  const int64_t KK = KH * KW;
  std::vector<int64_t> hx(static_cast<size_t>(KK));
  for (int64_t h = 0; h < KH; h++)
    for (int64_t x = 0; x < KW; x++) hx[size_t(h * KW + x)] = off0 + th[size_t(h)] + tw[size_t(x)];
#pragma omp parallel
  {
    std::vector<float> tile(size_t(KK * ROW));
#pragma omp for collapse(2) schedule(static)
    for (int64_t o0 = 0; o0 < O; o0 += TO)
      for (int64_t i0 = 0; i0 < I; i0 += TI) {
        const int64_t no = std::min(TO, O - o0), ni = std::min(TI, I - i0);
        for (int64_t o = 0; o < no; o++)
          for (int64_t i = 0; i < ni; i++) {
            const float* k = src + ((o0 + o) * I + i0 + i) * KK;
            if (transpose_flip)
              for (int64_t j = 0; j < KK; j++) tile[size_t(j * ROW + o * TI + i)] = k[KK - 1 - j];  // reversed = flipped in h and w
            else
              for (int64_t j = 0; j < KK; j++) tile[size_t(j * ROW + o * TI + i)] = k[j];
          }
        for (int64_t j = 0; j < KK; j++)
          for (int64_t o = 0; o < no; o++) {
            const float* row = &tile[size_t(j * ROW + o * TI)];
            const int64_t base = hx[size_t(j)] + to[size_t(o0 + o)];
            const int64_t* idx = &ti[size_t(i0)];
            if (bf16) {
              uint16_t* d = static_cast<uint16_t*>(dst.ptr) + base;
              for (int64_t i = 0; i < ni; i++) d[idx[i]] = f32_to_bf16(row[i]);
            } else {
              float* d = static_cast<float*>(dst.ptr) + base;
              for (int64_t i = 0; i < ni; i++) d[idx[i]] = row[i];
            }
          }
      }
  }
}

Napi::Value input_grad_by_forward(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, const Napi::Object& o) {
  ConvSpec f = input_grad_spec(s);
  auto& cp = cached(f.key("bwdDF"), [&] {
    auto pd = fwd_pd<false>(f, false);
    debug_impl("bwdD as fwd", f, pd.impl_info_str());
    return CachedPrimitive{pd, dnnl::convolution_forward(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(dy, cp.pd.src_desc(), keep);
  // The caller's cache for this path holds transposed weights only.
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache(env, o), cp.pd.weights_desc(), fresh, true);
  Napi::Object dx = Tensor::Create(env, cp.pd.dst_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Unwrap(dx)->mem()}});
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  return out;
}

template <bool T>
Napi::Value backward_data(const Napi::CallbackInfo& info, Tensor& dy, Tensor& w, Tensor& x, const Napi::Object& o) {
  Napi::Env env = info.Env();
  ConvSpec s = parse_spec(env, x.dims(), w.dims(), opt_bool(o, "bias", false), o);
  s.relu = false;  // the ReLU's own backward is applied to dy before this
  if (dy.dims() != s.y) throw Napi::TypeError::New(env, "conv backward: dy is " + dims_key(dy.dims()) + ", expected " + dims_key(s.y));
  if (input_grad_as_forward(s) && is_plain(w.md) && w.md.data_type() == dt::f32) return input_grad_by_forward(env, s, dy, w, o);
  auto& cp = cached(s.key("bwdD"), [&] {
    using B = typename Prims<T>::bwd_data;
    auto hint = fwd_pd<T>(s, true);
    auto make = [&](const memory::desc& dx, const memory::desc& dy) {
      typename B::desc d(Prims<T>::alg, dx, any(s.w, s.compute), dy, s.stride, s.pad_l, s.pad_r);
      return typename B::primitive_desc(d, cpu_engine(), hint);
    };
    // Activations in the forward pass's layouts (no reorder of x, y or their gradients
    // between the passes) when an optimised kernel supports them; else oneDNN's choice.
    auto pd = make(hint.src_desc(), hint.dst_desc());
    if (!optimised(pd.impl_info_str())) pd = make(any(s.x, s.compute), any(s.y, s.compute));
    debug_impl("bwdD", s, pd.impl_info_str());
    return CachedPrimitive{pd, B(pd)};
  });
  std::vector<Scratch> keep;
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache(env, o),
                                cp.pd.weights_desc(), fresh);
  Napi::Object dx = Tensor::Create(env, cp.pd.diff_src_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, Tensor::Unwrap(dx)->mem()}});
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  return out;
}

// float32 weight gradients of stride-1 convolutions over at least 64×64 pixels are a matrix
// product, dW (O × KH·KW·I) = dyᵀ (O × P) · im2col(x) (P × KH·KW·I), run by oneDNN's brgemm
// matmul at ~218 GFLOP/s where its backward-weights kernel reaches ~120 (256 → 256 3×3 at
// 128²: 89 vs 164 ms). The im2col matrix is built in chunks of pixels (≤ 32 MB each), each
// chunk's product accumulated into dW.
bool weight_grad_as_matmul(const ConvSpec& s) {
  const int64_t pixels = s.y[0] * s.y[2] * s.y[3];
  return !s.transposed && s.compute == dt::f32 && s.stride == memory::dims{1, 1} && pixels >= 4096;
}

Napi::Value weight_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& dy) {
  const int64_t N = s.x[0], I = s.x[1], H = s.x[2], W = s.x[3];
  const int64_t O = s.w[0], KH = s.w[2], KW = s.w[3], OH = s.y[2], OW = s.y[3];
  const int64_t KKI = KH * KW * I, P = N * OH * OW;
  const int64_t pt = s.pad_l[0], pl = s.pad_l[1];
  std::vector<Scratch> keep;
  // Channels last: a pixel's channels are contiguous in both.
  memory xm = in_layout(x, memory::desc(s.x, dt::f32, tag::nhwc), keep);
  memory dym = in_layout(dy, memory::desc(s.y, dt::f32, tag::nhwc), keep);
  const float* xp = static_cast<const float*>(xm.get_data_handle());
  const float* dyp = static_cast<const float*>(dym.get_data_handle());
  const int64_t chunk = std::min(P, std::max<int64_t>(256, (int64_t(32) << 20) / (KKI * 4)));
  // One size for every layer, so that the pool keeps a single im2col buffer for them all.
  Scratch col(size_t(std::max<int64_t>(int64_t(32) << 20, chunk * KKI * 4)));
  Scratch acc(size_t(O * KKI * 4));  // dW as O × (KH, KW, I)
  memory c_mem(memory::desc({O, KKI}, dt::f32, tag::ab), cpu_engine(), acc.ptr);
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t rows = std::min(chunk, P - p0);
    float* cp = static_cast<float*>(col.ptr);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const int64_t p = p0 + r, n = p / (OH * OW), oh = (p / OW) % OH, ow = p % OW;
      float* row = cp + r * KKI;
      for (int64_t kh = 0; kh < KH; kh++) {
        const int64_t ih = oh + kh - pt;
        for (int64_t kw = 0; kw < KW; kw++) {
          const int64_t iw = ow + kw - pl;
          float* dst = row + (kh * KW + kw) * I;
          if (ih < 0 || ih >= H || iw < 0 || iw >= W) std::memset(dst, 0, size_t(I) * 4);
          else std::memcpy(dst, xp + ((n * H + ih) * W + iw) * I, size_t(I) * 4);
        }
      }
    }
    const bool first = p0 == 0;
    auto& mm = cached("wgradMM|" + std::to_string(O) + "|" + std::to_string(rows) + "|" + std::to_string(KKI) + (first ? "" : "+"), [&] {
      memory::desc a({O, rows}, dt::f32, memory::dims{1, O});  // dyᵀ: dy's pixel rows read transposed
      memory::desc b({rows, KKI}, dt::f32, tag::ab);
      dnnl::primitive_attr attr;
      if (!first) {
        dnnl::post_ops po;
        po.append_sum(1.f);
        attr.set_post_ops(po);
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, memory::desc({O, KKI}, dt::f32, tag::ab)), attr, cpu_engine());
      debug_impl("bwdW as matmul", s, pd.impl_info_str());
      return CachedPrimitive{pd, dnnl::matmul(pd)};
    });
    memory a_mem(mm.pd.src_desc(), cpu_engine(), const_cast<float*>(dyp + p0 * O));
    memory b_mem(mm.pd.weights_desc(), cpu_engine(), col.ptr);
    mm.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    cpu_stream().wait();
  }
  // O × (KH, KW, I) → O, I, KH, KW: a reorder from the permuted strides.
  Napi::Object dw = Tensor::Create(env, plain_desc(s.w, dt::f32));
  memory::desc view(s.w, dt::f32, memory::dims{KKI, 1, KW * I, I});
  reorder_into(memory(view, cpu_engine(), acc.ptr), Tensor::Unwrap(dw)->mem());
  Napi::Value db = env.Null();
  if (s.has_bias) {
    db = Tensor::Create(env, memory::desc({O}, dt::f32, tag::a));
    float* bp = static_cast<float*>(Tensor::Unwrap(db.As<Napi::Object>())->ptr);
    std::fill(bp, bp + O, 0.f);
#pragma omp parallel
    {
      std::vector<double> part(size_t(O), 0.0);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; p++) {
        const float* g = dyp + p * O;
        for (int64_t o = 0; o < O; o++) part[size_t(o)] += g[o];
      }
#pragma omp critical
      for (int64_t o = 0; o < O; o++) bp[o] += float(part[size_t(o)]);
    }
  }
  auto out = Napi::Object::New(env);
  out.Set("dw", dw);
  out.Set("db", db);
  return out;
}

template <bool T>
Napi::Value backward_weights(const Napi::CallbackInfo& info, Tensor& x, Tensor& dy, const Napi::Object& o) {
  Napi::Env env = info.Env();
  auto wd = opt_ints(o, "weightsDims", {});
  if (wd.size() != 4) throw Napi::TypeError::New(env, "conv backward weights: option 'weightsDims' must be [O, I, KH, KW]");
  ConvSpec s = parse_spec(env, x.dims(), memory::dims(wd.begin(), wd.end()), opt_bool(o, "bias", false), o);
  s.relu = false;
  if (dy.dims() != s.y) throw Napi::TypeError::New(env, "conv backward: dy is " + dims_key(dy.dims()) + ", expected " + dims_key(s.y));
  if (weight_grad_as_matmul(s)) return weight_grad_by_matmul(env, s, x, dy);
  // bf16 inputs produce bf16 weight gradients: oneDNN 2.6 fails when asked for f32 ones.
  auto& cp = cached(s.key("bwdW"), [&] {
    using B = typename Prims<T>::bwd_weights;
    auto hint = fwd_pd<T>(s, true);
    auto make = [&](const memory::desc& x, const memory::desc& dy) {
      auto d = s.has_bias ? typename B::desc(Prims<T>::alg, x, any(s.w, s.compute), bias_md(s), dy, s.stride, s.pad_l, s.pad_r)
                          : typename B::desc(Prims<T>::alg, x, any(s.w, s.compute), dy, s.stride, s.pad_l, s.pad_r);
      return typename B::primitive_desc(d, cpu_engine(), hint);
    };
    auto pd = make(hint.src_desc(), hint.dst_desc());
    if (!optimised(pd.impl_info_str())) pd = make(any(s.x, s.compute), any(s.y, s.compute));
    debug_impl("bwdW", s, pd.impl_info_str());
    return CachedPrimitive{pd, B(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(x, cp.pd.src_desc(), keep);
  memory ddst = in_layout(dy, cp.pd.diff_dst_desc(), keep);
  // Gradients leave in the master weights' layout: plain O,I,KH,KW float32.
  Napi::Object dw = Tensor::Create(env, plain_desc(s.w, dt::f32));
  memory dw_mem = Tensor::Unwrap(dw)->mem();
  memory dw_prim = dw_mem;
  if (cp.pd.diff_weights_desc() != dw_mem.get_desc()) {
    keep.emplace_back(cp.pd.diff_weights_desc().get_size());
    dw_prim = memory(cp.pd.diff_weights_desc(), cpu_engine(), keep.back().ptr);
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dw_prim}};
  Napi::Value db = env.Null();
  if (s.has_bias) {
    db = Tensor::Create(env, memory::desc({s.w[0]}, dt::f32, tag::a));
    args.emplace(DNNL_ARG_DIFF_BIAS, Tensor::Unwrap(db.As<Napi::Object>())->mem());
  }
  cp.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
  if (dw_prim.get_data_handle() != dw_mem.get_data_handle()) reorder_into(dw_prim, dw_mem);
  auto out = Napi::Object::New(env);
  out.Set("dw", dw);
  out.Set("db", db);
  return out;
}


}  // namespace

// convForward(x, w, bias|null, {stride, padding, relu, transposed, training, dtype, weightsCache})
//   → {y, weightsCache: Tensor|null}
Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  Tensor& x = Tensor::From(info[0], "x");
  Tensor& w = Tensor::From(info[1], "weights");
  Tensor* b = Tensor::FromOptional(info[2], "bias");
  auto o = opt_object(info, 3);
  return opt_bool(o, "transposed", false) ? forward<true>(info, x, w, b, o) : forward<false>(info, x, w, b, o);
}

// convBackwardData(dy, w, x, {stride, padding, transposed, dtype, weightsCache}) → {dx, weightsCache}
Napi::Value ConvBackwardData(const Napi::CallbackInfo& info) {
  Tensor& dy = Tensor::From(info[0], "dy");
  Tensor& w = Tensor::From(info[1], "weights");
  Tensor& x = Tensor::From(info[2], "x");
  auto o = opt_object(info, 3);
  return opt_bool(o, "transposed", false) ? backward_data<true>(info, dy, w, x, o) : backward_data<false>(info, dy, w, x, o);
}

// convBackwardWeights(x, dy, {weightsDims, bias, stride, padding, transposed, dtype}) → {dw, db|null}
Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info) {
  Tensor& x = Tensor::From(info[0], "x");
  Tensor& dy = Tensor::From(info[1], "dy");
  auto o = opt_object(info, 2);
  return opt_bool(o, "transposed", false) ? backward_weights<true>(info, x, dy, o) : backward_weights<false>(info, x, dy, o);
}

}  // namespace fcn
