#include "conv_weight_grad.h"

#include <algorithm>
#include <cstring>

#include "bf16.h"

namespace fcn {

bool weight_grad_matmul_possible(const ConvSpec& s) { return !s.transposed && s.stride == memory::dims{1, 1}; }

bool weight_grad_as_matmul(const ConvSpec& s) {
  const int64_t pixels = s.y[0] * s.y[2] * s.y[3];
  return weight_grad_matmul_possible(s) && s.compute == dt::f32 && pixels >= 4096;
}

namespace {
float as_f32(float v) { return v; }
float as_f32(uint16_t v) { return bf16_to_f32(v); }

// db[o] = Σ over pixels of dy (P × O, channels last), summed in double per thread.
template <class E>
void bias_grad(const E* dyp, int64_t P, int64_t O, float* bp) {
  std::fill(bp, bp + O, 0.f);
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<double> part;
    errors.capture([&] { part.assign(size_t(O), 0.0); });
    // A thread without its partial sums still meets the loop (every thread must), doing nothing.
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; p++) {
      if (part.empty()) continue;
      const E* g = dyp + p * O;
      for (int64_t o = 0; o < O; o++) part[size_t(o)] += as_f32(g[o]);
    }
#pragma omp critical
    for (size_t o = 0; o < part.size(); o++) bp[o] += float(part[o]);
  }
  errors.rethrow();
}
}  // namespace

Napi::Value weight_grad_by_matmul(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& dy, bool any_layout) {
  const int64_t I = s.x[1], H = s.x[2], W = s.x[3];
  const int64_t O = s.w[0], KH = s.w[2], KW = s.w[3], OH = s.y[2], OW = s.y[3];
  const int64_t KKI = KH * KW * I, P = s.y[0] * OH * OW;
  const int64_t pt = s.pad_l[0], pl = s.pad_l[1];
  // bfloat16 operands (2 bytes) multiply into a float32 dW as float32 ones do.
  const dt et = s.compute;
  const int64_t esz = et == dt::bf16 ? 2 : 4;
  std::vector<Scratch> keep;
  // Channels last: a pixel's channels are contiguous in both.
  memory xm = in_layout(x, memory::desc(s.x, et, tag::nhwc), keep);
  memory dym = in_layout(dy, memory::desc(s.y, et, tag::nhwc), keep);
  const char* xp = static_cast<const char*>(xm.get_data_handle());
  const char* dyp = static_cast<const char*>(dym.get_data_handle());
  const int64_t chunk = std::min(P, std::max<int64_t>(256, (int64_t(32) << 20) / (KKI * esz)));
  // One size for every layer, so that the pool keeps a single im2col buffer for them all.
  Scratch col(size_t(std::max<int64_t>(int64_t(32) << 20, chunk * KKI * esz)));
  // dW as O × (KH, KW, I): the gradient itself when any layout will do.
  memory::desc ohwi(s.w, dt::f32, memory::dims{KKI, 1, KW * I, I});
  Napi::Object dw = Tensor::Create(env, any_layout ? ohwi : plain_desc(s.w, dt::f32));
  std::vector<Scratch> acc;
  if (!any_layout) acc.emplace_back(size_t(O * KKI * 4));
  memory c_mem(memory::desc({O, KKI}, dt::f32, tag::ab), cpu_engine(), any_layout ? Tensor::Of(dw).ptr : acc.back().ptr);
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t rows = std::min(chunk, P - p0);
    char* cp = static_cast<char*>(col.ptr);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const int64_t p = p0 + r, n = p / (OH * OW), oh = (p / OW) % OH, ow = p % OW;
      char* row = cp + r * KKI * esz;
      for (int64_t kh = 0; kh < KH; kh++) {
        const int64_t ih = oh + kh - pt;
        for (int64_t kw = 0; kw < KW; kw++) {
          const int64_t iw = ow + kw - pl;
          char* dst = row + (kh * KW + kw) * I * esz;
          if (ih < 0 || ih >= H || iw < 0 || iw >= W) std::memset(dst, 0, size_t(I * esz));
          else std::memcpy(dst, xp + ((n * H + ih) * W + iw) * I * esz, size_t(I * esz));
        }
      }
    }
    const bool first = p0 == 0;
    auto mm = cached(std::string(et == dt::bf16 ? "wgradMMbf16|" : "wgradMM|") + std::to_string(O) + "|" + std::to_string(rows) + "|" + std::to_string(KKI) + (first ? "" : "+"), [&] {
      memory::desc a({O, rows}, et, memory::dims{1, O});  // dyᵀ: dy's pixel rows read transposed
      memory::desc b({rows, KKI}, et, tag::ab);
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
    memory a_mem(mm.pd.src_desc(), cpu_engine(), const_cast<char*>(dyp + p0 * O * esz));
    memory b_mem(mm.pd.weights_desc(), cpu_engine(), col.ptr);
    mm.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    cpu_stream().wait();
  }
  // O × (KH, KW, I) → O, I, KH, KW: a reorder from the permuted strides.
  if (!any_layout) reorder_into(memory(ohwi, cpu_engine(), acc.back().ptr), Tensor::Of(dw).mem());
  Napi::Value db = env.Null();
  if (s.has_bias) {
    db = Tensor::Create(env, memory::desc({O}, dt::f32, tag::a));
    float* bp = static_cast<float*>(Tensor::Of(db.As<Napi::Object>()).ptr);
    if (et == dt::bf16) bias_grad(reinterpret_cast<const uint16_t*>(dyp), P, O, bp);
    else bias_grad(reinterpret_cast<const float*>(dyp), P, O, bp);
  }
  auto out = Napi::Object::New(env);
  out.Set("dw", dw);
  out.Set("db", db);
  return out;
}

}  // namespace fcn
