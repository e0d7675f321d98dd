#include "conv_input_grad.h"

#include "conv_weights.h"
#include "conv_winograd.h"

#include <algorithm>
#include <cstring>

#include "bf16.h"

namespace fcn {

bool input_grad_as_forward(const ConvSpec& s) {
  return !s.transposed && s.stride == memory::dims{1, 1} && s.pad_l == s.pad_r && s.pad_l[0] < s.w[2] && s.pad_l[1] < s.w[3];
}

namespace {
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
}  // namespace

Napi::Value input_grad_by_forward(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache, bool winograd) {
  ConvSpec f = input_grad_spec(s);
  f.winograd = winograd;
  auto cp = cached(f.key("bwdDF"), [&] {
    auto pd = winograd_fwd_pd<false>(f);
    debug_impl("bwdD as fwd", f, pd.impl_info_str());
    return CachedPrimitive{pd, dnnl::convolution_forward(pd)};
  });
  std::vector<Scratch> keep;
  memory src = in_layout(dy, cp.pd.src_desc(), keep);
  // The caller's cache for this path holds transposed weights only.
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache, cp.pd.weights_desc(), fresh, true);
  Napi::Object dx = Tensor::Create(env, cp.pd.dst_desc());
  cp.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, Tensor::Of(dx).mem()}});
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  out.Set("weightsFlipped", true);
  return out;
}

Napi::Value input_grad_by_winograd_gemm(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache) {
  const ConvSpec f = input_grad_spec(s);
  if (!winograd_gemm_fits(f)) return winograd_gemm_forward(env, f, dy, w.mem(), nullptr, weights_cache);  // its own error
  // The engine's Winograd transforms a plain kernel: the transposed, flipped one is made plain
  // first. (In training its transform is stale after every update, so this runs every step.)
  std::vector<Scratch> keep;
  Napi::Object out = winograd_gemm_forward(env, f, dy, flipped_plain(w, keep), nullptr, weights_cache).As<Napi::Object>();
  Napi::Object result = Napi::Object::New(env);
  result.Set("dx", out.Get("y"));
  result.Set("weightsCache", out.Get("weightsCache"));
  result.Set("weightsFlipped", true);
  return result;
}

bool input_grad_matmul_possible(const ConvSpec& s) { return !s.transposed && s.stride == memory::dims{1, 1}; }

namespace {
// dx[n, ih, iw, :] += cols[p, (kh, kw), :] for every output pixel p = (n, oh, ow) of the chunk
// [p0, p0 + rows) with ih = oh + kh − pt, iw = ow + kw − pl. Parallel over input pixels, each
// summing its own terms: no two threads write one element.
void col2im(const ConvSpec& s, const float* cols, int64_t p0, int64_t rows, float* dx) {
  const int64_t I = s.x[1], H = s.x[2], W = s.x[3];
  const int64_t KH = s.w[2], KW = s.w[3], OH = s.y[2], OW = s.y[3], KKI = KH * KW * I;
  const int64_t pt = s.pad_l[0], pl = s.pad_l[1];
  // The input rows this chunk reaches: from its first output row's, to its last one's.
  const int64_t first = p0 / OW, last = (p0 + rows - 1) / OW;  // (n, oh) rows, flattened
  const int64_t n0 = first / OH, n1 = last / OH;
  const int64_t r0 = n0 * H + std::max<int64_t>(0, first % OH - pt), r1 = n1 * H + std::min(H - 1, last % OH + KH - 1 - pt);
#pragma omp parallel for schedule(static)
  for (int64_t q = r0 * W; q < (r1 + 1) * W; q++) {
    const int64_t n = q / (H * W), ih = (q / W) % H, iw = q % W;
    float* d = dx + q * I;
    for (int64_t kh = 0; kh < KH; kh++) {
      const int64_t oh = ih + pt - kh;
      if (oh < 0 || oh >= OH) continue;
      for (int64_t kw = 0; kw < KW; kw++) {
        const int64_t ow = iw + pl - kw, p = (n * OH + oh) * OW + ow;
        if (ow < 0 || ow >= OW || p < p0 || p >= p0 + rows) continue;
        const float* c = cols + (p - p0) * KKI + (kh * KW + kw) * I;
#pragma omp simd
        for (int64_t i = 0; i < I; i++) d[i] += c[i];
      }
    }
  }
}

// The kernel as the product's B (O × KH·KW·I) in the layout the matmul chose for it, written
// as a descriptor of the O,I,KH,KW kernel (so the layer keeps it and the update rewrites it
// like any packed copy). Possible when B's column blocks fall within one kernel position's I
// channels; otherwise (or for a layout this does not recognise) null: B stays plain.
bool kernel_desc_of(const memory::desc& b2, const memory::dims& wd, memory::desc& out) {
  const dnnl_memory_desc_t& m = b2.data;
  if (m.format_kind != dnnl_blocked || m.ndims != 2 || m.offset0 != 0) return false;
  const auto& bk = m.format_desc.blocking;
  int64_t bn = 1;
  for (int k = 0; k < bk.inner_nblks; k++)
    if (bk.inner_idxs[k] == 1) bn *= bk.inner_blks[k];
  const int64_t I = wd[1], KW = wd[3];
  if (I % bn != 0 || m.padded_dims[1] != m.dims[1]) return false;
  dnnl_memory_desc_t d = m;
  d.ndims = 4;
  for (int k = 0; k < 4; k++) d.dims[k] = d.padded_dims[k] = wd[size_t(k)], d.padded_offsets[k] = 0;
  d.padded_dims[0] = m.padded_dims[0];
  // Column n = (kh·KW + kw)·I + i lies in block n / bn = (kh·KW + kw)·(I / bn) + i / bn.
  const int64_t sn = bk.strides[1];
  d.format_desc.blocking.strides[0] = bk.strides[0];
  d.format_desc.blocking.strides[1] = sn;
  d.format_desc.blocking.strides[3] = (I / bn) * sn;
  d.format_desc.blocking.strides[2] = KW * (I / bn) * sn;
  const memory::desc four(d);
  if (four.get_size() != b2.get_size()) return false;
  out = four;
  return true;
}
}  // namespace

Napi::Value input_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& dy, Tensor& w, Tensor* weights_cache) {
  const int64_t I = s.x[1], O = s.w[0], KH = s.w[2], KW = s.w[3], KKI = KH * KW * I;
  const int64_t P = s.y[0] * s.y[2] * s.y[3], Q = s.x[0] * s.x[2] * s.x[3];
  const dt et = s.compute;
  std::vector<Scratch> keep;
  memory dym = in_layout(dy, memory::desc(s.y, et, tag::nhwc), keep);
  const char* dyp = static_cast<const char*>(dym.get_data_handle());
  const int64_t esz = et == dt::bf16 ? 2 : 4;
  // Chunks of output pixels whose cols fit in 32 MB (conv6 at 512²: one chunk).
  const int64_t chunk = std::min(P, std::max<int64_t>(64, (int64_t(32) << 20) / (KKI * 4)));
  // In one chunk the matmul may pick B's layout (conv6's: ~10% faster than plain); over
  // several, the last chunk's product could pick another, so B stays plain.
  memory::desc b_plain({O, KKI}, et, tag::ab), b_any({O, KKI}, et, tag::any);
  auto product = [&](int64_t rows, const memory::desc& b) {
    return cached(std::string("bwdDMM|") + (et == dt::bf16 ? "bf16|" : "f32|") + std::to_string(rows) + "|" + std::to_string(O) + "|" + std::to_string(KKI) + (b == b_any ? "|any" : ""), [&] {
      memory::desc a({rows, O}, et, tag::ab), c({rows, KKI}, dt::f32, tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), cpu_engine());
      debug_impl("bwdD as matmul", s, pd.impl_info_str());
      return CachedPrimitive{pd, dnnl::matmul(pd)};
    });
  };
  memory::desc kernel_md(s.w, et, memory::dims{KKI, 1, KW * I, I});  // O,KH,KW,I: plain B
  const bool b_chosen = chunk == P && kernel_desc_of(product(P, b_any).pd.weights_desc(), s.w, kernel_md);
  Napi::Value fresh = env.Null();
  memory wei = prepared_weights(env, w, weights_cache, kernel_md, fresh);
  Napi::Object dx = Tensor::Create(env, memory::desc(s.x, et, tag::nhwc));
  // float32 sums: into dx itself, or for bfloat16 into a float32 image rounded once at the end.
  float* sum = static_cast<float*>(et == dt::f32 ? Tensor::Of(dx).ptr : keep.emplace_back(size_t(Q * I * 4)).ptr);
  std::memset(sum, 0, size_t(Q * I * 4));
  Scratch cols(size_t(chunk * KKI * 4));
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t rows = std::min(chunk, P - p0);
    auto mm = product(rows, b_chosen ? b_any : b_plain);
    memory a_mem(mm.pd.src_desc(), cpu_engine(), const_cast<char*>(dyp + p0 * O * esz));
    memory b_mem(mm.pd.weights_desc(), cpu_engine(), wei.get_data_handle());
    memory c_mem(mm.pd.dst_desc(), cpu_engine(), cols.ptr);
    mm.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    cpu_stream().wait();
    col2im(s, static_cast<const float*>(cols.ptr), p0, rows, sum);
  }
  if (et == dt::bf16) {
    uint16_t* d = static_cast<uint16_t*>(Tensor::Of(dx).ptr);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < Q * I; k++) d[k] = f32_to_bf16(sum[k]);
  }
  auto out = Napi::Object::New(env);
  out.Set("dx", dx);
  out.Set("weightsCache", fresh);
  out.Set("weightsFlipped", false);
  return out;
}

}  // namespace fcn
