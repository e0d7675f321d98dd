#include "conv_weights.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "eltwise.h"

namespace fcn {

memory prepared_weights(Napi::Env env, Tensor& w, Tensor* cache, const memory::desc& want, Napi::Value& fresh, bool transpose_flip) {
  if (!transpose_flip && w.md == want) return w.mem();
  if (cache && cache->md == want) return cache->mem();
  Napi::Object t = Tensor::Create(env, want);
  auto t0 = std::chrono::steady_clock::now();
  // oneDNN 2.6's reorder into blocked bfloat16 weights with spatial kernels is slower than
  // pack_weights (BENCHMARKS.md); in every other case (float32, 1×1) its reorder is faster.
  const bool spatial_bf16 = want.data_type() == dt::bf16 && want.dims().size() == 4 && want.dims()[2] * want.dims()[3] > 1;
  if (transpose_flip && want.data.format_kind != dnnl_blocked) {
    // Winograd's transformed layout: flipped into a plain copy, then transformed by oneDNN.
    std::vector<Scratch> keep;
    reorder_into(flipped_plain(w, keep), Tensor::Of(t).mem());
  } else if (transpose_flip || (spatial_bf16 && w.md.data_type() == dt::f32 && want.dims() == w.dims() && want.data.format_kind == dnnl_blocked)) {
    pack_weights(w, Tensor::Of(t).mem(), transpose_flip);
  } else {
    // A master kept blocked goes through plain only where oneDNN 2.6 has no reorder between the
    // two layouts (some padded ones): conv6's would be a 411 MB temporary.
    std::vector<Scratch> keep;
    const bool reorderable = bool(dnnl::reorder::primitive_desc(cpu_engine(), w.md, cpu_engine(), want, dnnl::primitive_attr(), true));
    reorder_into(reorderable ? w.mem() : plain_weights(w.mem(), keep), Tensor::Of(t).mem());
  }
  static const bool debug = std::getenv("FCN_DEBUG_IMPL") != nullptr;
  if (debug)
    std::fprintf(stderr, "fcn: %sweights %s in %.1f ms\n", transpose_flip ? "transposed " : "", md_key(want).c_str(),
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  fresh = t;
  return Tensor::Of(t).mem();
}

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

memory flipped_plain(const Tensor& w, std::vector<Scratch>& keep) {
  const memory::dims d = w.dims();
  const memory::desc md({d[1], d[0], d[2], d[3]}, dt::f32, tag::oihw);
  memory flipped(md, cpu_engine(), keep.emplace_back(md.get_size()).ptr);
  pack_weights(w, flipped, true);
  return flipped;
}

memory plain_weights(const memory& w, std::vector<Scratch>& keep) {
  const memory::desc md = w.get_desc();
  if (is_plain(md)) return w;
  const memory::desc plain = plain_desc(md.dims(), md.data_type());
  memory out(plain, cpu_engine(), keep.emplace_back(plain.get_size()).ptr);
  reorder_into(w, out);
  return out;
}

void pack_weights(const Tensor& w, const memory& dst, bool transpose_flip) {
  const memory::desc dst_md = dst.get_desc();
  void* const dst_ptr = dst.get_data_handle();
  const dnnl_memory_desc_t& md = dst_md.data;
  const auto dims = w.dims();
  const int64_t O = dims[0], I = dims[1], KH = dims[2], KW = dims[3];
  const memory::dims want = transpose_flip ? memory::dims{I, O, KH, KW} : dims;
  if (md.format_kind != dnnl_blocked || w.md.data_type() != dt::f32 || dst_md.dims() != want)
    throw std::runtime_error("cannot pack weights " + md_key(w.md) + " into " + md_key(dst_md));
  std::vector<Scratch> keep;
  const float* src = static_cast<const float*>(plain_weights(w.mem(), keep).get_data_handle());
  if (transpose_flip && KH == 1 && KW == 1) {
    // Nothing to flip: oneDNN's reorder transposes from a strided view of the weights.
    memory::desc view({I, O, 1, 1}, dt::f32, memory::dims{1, I, 1, 1});
    reorder_into(memory(view, cpu_engine(), const_cast<float*>(src)), dst);
    return;
  }
  // Destination offsets of source channel o and i (dims 0 and 1 swap when transposing).
  std::vector<int64_t> to = offsets_along(md, transpose_flip ? 1 : 0), ti = offsets_along(md, transpose_flip ? 0 : 1);
  std::vector<int64_t> th = offsets_along(md, 2), tw = offsets_along(md, 3);
  bool padded = false;
  for (int d = 0; d < md.ndims; d++) padded = padded || md.padded_dims[d] != md.dims[d];
  if (padded) std::memset(dst_ptr, 0, dst_md.get_size());  // oneDNN expects zeros in the padding
  const int64_t off0 = md.offset0;
  const bool bf16 = dst_md.data_type() == dt::bf16;
  // Tiles of 64 output × 32 input channels. Each tile's source is first copied (flipped when
  // asked) into a small buffer ordered [kernel position][out][in], so that both the reads and
  // the destination writes run in order (a single pass in element order misses the TLB on
  // conv6's 256 KB strides).
  // Rows of the buffer are padded by one cache line: at a power-of-two stride every kernel
  // position's row would fall in the same L1 set.
  constexpr int64_t TO = 64, TI = 32, ROW = TO * TI + 16;
  const int64_t KK = KH * KW;
  std::vector<int64_t> hx(static_cast<size_t>(KK));
  for (int64_t h = 0; h < KH; h++)
    for (int64_t x = 0; x < KW; x++) hx[size_t(h * KW + x)] = off0 + th[size_t(h)] + tw[size_t(x)];
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> tile;
    errors.capture([&] { tile.resize(size_t(KK * ROW)); });
    // A thread without its tile still meets the loop (every thread must), doing nothing.
#pragma omp for collapse(2) schedule(static)
    for (int64_t o0 = 0; o0 < O; o0 += TO)
      for (int64_t i0 = 0; i0 < I; i0 += TI) {
        if (tile.empty()) continue;
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
              uint16_t* d = static_cast<uint16_t*>(dst_ptr) + base;
              for (int64_t i = 0; i < ni; i++) d[idx[i]] = f32_to_bf16(row[i]);
            } else {
              float* d = static_cast<float*>(dst_ptr) + base;
              for (int64_t i = 0; i < ni; i++) d[idx[i]] = row[i];
            }
          }
      }
  }
  errors.rethrow();
}

}  // namespace fcn
