// Winograd's minimal filtering F(m×m, r×r) for float32 inference convolutions (stride 1):
// kernel transform U = G g Gᵀ once per weights, input transform V = Bᵀ d B per tile, α² = (m+r−1)²
// independent matrix products M_ξ = V_ξ · U_ξ in one batched oneDNN matmul (its brgemm runs near
// the fp32 peak), and the output transform Aᵀ M A with bias and ReLU. oneDNN 2.6's own Winograd
// (jit_wino_4x3) is 2.5–9× slower than its direct kernel on FCN's 512-channel layers and has no
// 7×7 form; this one serves those (conv6 as F(4×4, 7×7)).
#pragma once
#include "conv_spec.h"

namespace fcn {

// Output tile size m for kernel size r (0: no Winograd form for r here).
int winograd_tile(int64_t r);

// Whether s can run as winograd_gemm_forward: float32, not transposed, stride 1, a square
// kernel with a Winograd form.
bool winograd_gemm_fits(const ConvSpec& s);

// The Cook–Toom transform matrices of F(m, r) (α = m + r − 1 points: 0, ±1, ±2, ±1/2, … and ∞),
// computed in double precision: Aᵀ (m×α), G (α×r), Bᵀ (α×α), row-major. For 1-D correlation,
// y = Aᵀ[(G g) ⊙ (Bᵀ d)] with d of α samples gives y_i = Σ_k g_k d_{i+k}.
struct WinogradMatrices {
  int m, r, alpha;
  std::vector<double> AT, G, BT;
};
WinogradMatrices winograd_matrices(int m, int r);

// y (N,C,H,W in the channels-last layout) = the convolution s of x with the kernel w (float32
// plain O,I,KH,KW: a tensor's, or a flipped copy for an input gradient) plus bias, ReLU'd when s.relu. weights_cache: a previous call's transformed weights
// (returned as weightsCache), used when it matches.
Napi::Value winograd_gemm_forward(Napi::Env env, const ConvSpec& s, Tensor& x, const memory& w, Tensor* b, Tensor* weights_cache);

}  // namespace fcn
