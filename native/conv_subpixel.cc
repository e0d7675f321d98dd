#include "conv_subpixel.h"

#include <algorithm>

namespace fcn {

namespace {

// Phase r of an output pixel (o = a·stride + r) reads input a + t through kernel tap
// k = r + pad − t·stride for every t with 0 ≤ k < K: the taps t span [lo, hi] over all phases.
struct Taps {
  int64_t lo, hi;
};

Taps taps_of(int64_t K, int64_t st, int64_t pad) {
  Taps t{0, 0};
  for (int64_t r = 0; r < st; r++)
    for (int64_t k = 0; k < K; k++)
      if ((r + pad - k) % st == 0) {
        const int64_t tap = (r + pad - k) / st;
        t.lo = std::min(t.lo, tap);
        t.hi = std::max(t.hi, tap);
      }
  return t;
}

// The phase convolution's weights, plain (O·st², I, KT, KT): channel o·st² + ry·st + rx holds
// tap (jy, jx) = w[o][i][ry + pad − (jy + lo)·st][rx + pad − (jx + lo)·st], 0 outside w.
std::vector<float> phase_weights(const float* w, const memory::dims& wd, int64_t st, int64_t pad, const Taps& t) {
  const int64_t O = wd[0], I = wd[1], K = wd[2], KT = t.hi - t.lo + 1;
  std::vector<float> out(size_t(O * st * st * I * KT * KT), 0.f);
  for (int64_t o = 0; o < O; o++)
    for (int64_t ry = 0; ry < st; ry++)
      for (int64_t rx = 0; rx < st; rx++)
        for (int64_t i = 0; i < I; i++)
          for (int64_t jy = 0; jy < KT; jy++)
            for (int64_t jx = 0; jx < KT; jx++) {
              const int64_t ky = ry + pad - (jy + t.lo) * st, kx = rx + pad - (jx + t.lo) * st;
              if (ky < 0 || ky >= K || kx < 0 || kx >= K) continue;
              const int64_t oc = (o * st + ry) * st + rx;
              out[size_t(((oc * I + i) * KT + jy) * KT + jx)] = w[((o * I + i) * K + ky) * K + kx];
            }
  return out;
}

}  // namespace

bool subpixel_fits(const ConvSpec& s) {
  const int64_t st = s.stride[0];
  return s.transposed && st == s.stride[1] && s.w[2] == s.w[3] && s.pad_l[0] == s.pad_l[1] && s.pad_l == s.pad_r && s.y[2] == s.x[2] * st &&
         s.y[3] == s.x[3] * st;
}

Napi::Value subpixel_forward(Napi::Env env, const ConvSpec& s, Tensor& x, Tensor& w, Tensor* b) {
  if (!subpixel_fits(s))
    throw_range_error("algorithm 'subpixel' is for transposed convolutions whose output is stride × input with equal strides and padding (x " + dims_key(s.x) +
                      ", weights " + dims_key(s.w) + ", stride " + dims_key(s.stride) + ")");
  if (w.md.data_type() != dt::f32 || !is_plain(w.md)) throw_type_error("algorithm 'subpixel' needs float32 weights in the plain layout (O,I,KH,KW)");
  const int64_t st = s.stride[0], pad = s.pad_l[0], O = s.w[0], I = s.w[1];
  const Taps t = taps_of(s.w[2], st, pad);
  const int64_t KT = t.hi - t.lo + 1, C = O * st * st;
  ConvSpec p;
  p.relu = s.relu;
  p.has_bias = s.has_bias;
  p.compute = s.compute;
  p.x = s.x;
  p.w = {C, I, KT, KT};
  p.y = {s.x[0], C, s.x[2], s.x[3]};
  p.pad_l = {-t.lo, -t.lo};
  p.pad_r = {t.hi, t.hi};
  // The phase map channels-last, so that depth-to-space is one strided reorder.
  auto cp = cached(p.key("fwdSubpixel"), [&] {
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
    F::primitive_desc pd(d, attr, cpu_engine());
    debug_impl("fwdSubpixel", p, pd.impl_info_str());
    return CachedPrimitive{pd, F(pd)};
  });
  dnnl::convolution_forward::primitive_desc pd(cp.pd.get());
  std::vector<Scratch> keep;
  memory src = in_layout(x, pd.src_desc(), keep);
  std::vector<float> plain = phase_weights(static_cast<const float*>(w.mem().get_data_handle()), s.w, st, pad, t);
  memory plain_mem(memory::desc(p.w, dt::f32, tag::oihw), cpu_engine(), plain.data());
  memory wei(pd.weights_desc(), cpu_engine());
  dnnl::reorder(plain_mem, wei).execute(cpu_stream(), plain_mem, wei);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}};
  std::vector<float> phase_bias;
  memory bias_mem;
  if (b) {
    memory bm = in_layout(*b, memory::desc({O}, dt::f32, tag::a), keep);
    const float* bv = static_cast<const float*>(bm.get_data_handle());
    phase_bias.resize(size_t(C));
    for (int64_t c = 0; c < C; c++) phase_bias[size_t(c)] = bv[c / (st * st)];
    bias_mem = memory(bias_md(p), cpu_engine(), phase_bias.data());
    args.emplace(DNNL_ARG_BIAS, bias_mem);
  }
  memory z(pd.dst_desc(), cpu_engine());
  args.emplace(DNNL_ARG_DST, z);
  cp.prim.execute(cpu_stream(), args);
  // Depth to space: y[n][o][a·st + ry][c·st + rx] = z[n][a][c][(o·st + ry)·st + rx], as two
  // 6-d views (n, o, a, ry, c, rx) of the same elements.
  const int64_t N = s.x[0], H = s.x[2], W = s.x[3];
  const memory::dims d6{N, O, H, st, W, st};
  const memory::desc z6(d6, s.compute, memory::dims{H * W * C, st * st, W * C, st, C, 1});
  const memory::desc y6(d6, s.compute, memory::dims{O * H * st * W * st, H * st * W * st, st * W * st, W * st, st, 1});
  Napi::Object y = Tensor::Create(env, memory::desc(s.y, s.compute, tag::nchw));
  memory zm(z6, cpu_engine(), z.get_data_handle()), ym(y6, cpu_engine(), Tensor::Of(y).mem().get_data_handle());
  dnnl::reorder(zm, ym).execute(cpu_stream(), zm, ym);
  cpu_stream().wait();
  auto out = Napi::Object::New(env);
  out.Set("y", y);
  out.Set("weightsCache", env.Null());
  return out;
}

}  // namespace fcn
