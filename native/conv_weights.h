// Convolution weights in the layout a primitive wants. The caller (a layer) keeps the
// prepared copy until its weights change: reordering conv6's 400 MB on every call would cost
// more than the convolution.
#pragma once
#include <vector>

#include "tensor.h"

namespace fcn {

// The caller's prepared copy of the weights (option 'weightsCache'), if it matches `want`,
// else a fresh one, handed back in `fresh` so the caller can cache it. With `transpose_flip`
// the copy holds the input-gradient convolution's weights (see pack_weights), never w itself.
memory prepared_weights(Napi::Env env, Tensor& w, Tensor* cache, const memory::desc& want, Napi::Value& fresh, bool transpose_flip = false);

// w itself if plain, else a plain copy of it in a pool buffer kept in `keep`: for the passes that
// read a kernel in the O,I,KH,KW order (a master the optimiser keeps in its gradient's blocked
// layout reaches them only when a copy must be made afresh).
memory plain_weights(const memory& w, std::vector<Scratch>& keep);

// Packs float32 weights w (O, I, KH, KW) into dst's blocked layout and data type, in one pass
// with no full-size temporary when w is plain (else through plain_weights): dst = w, or with `transpose_flip`
// dst[i][o][kh][kw] = w[o][i][KH−1−kh][KW−1−kw] (the input-gradient convolution's weights).
void pack_weights(const Tensor& w, const memory& dst, bool transpose_flip);

// The input-gradient convolution's weights (pack_weights with transpose_flip) as a plain float32
// I,O,KH,KW copy in a pool buffer kept in `keep`: for the Winograd transforms, which start from
// a plain kernel.
memory flipped_plain(const Tensor& w, std::vector<Scratch>& keep);

// Element offset of index i along dimension d of a blocked descriptor, for every i (outer
// strides plus the position inside every inner block on d). Offsets are separable by
// dimension: any 4-d index's offset is offset0 plus one lookup per dimension.
std::vector<int64_t> offsets_along(const dnnl_memory_desc_t& md, int d);

}  // namespace fcn
