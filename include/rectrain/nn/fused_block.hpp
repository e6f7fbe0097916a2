#pragma once
// The tail of the recipe's MLP block, bias -> ReLU -> LayerNorm -> dropout,
// as one CPU kernel with its own backward (the block's product runs as a
// plain mm: addmm would first copy the bias into every output row).
// Separately, the ops and their backwards make about a dozen passes over
// the [rows, width] activations; fused, a row stays in L1 and the forward
// and the backward each read and write the activations once. The dropout mask is
// not stored: the backward recomputes it from the seed (see dropout.hpp).
// Mlp uses it for float32 CPU tensors; anything else takes the plain ops.

#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/nn/dropout.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace rectrain {
namespace detail {

/// Rows per work item. Fixed, so the per-chunk partial sums of the weight
/// gradients (and their total) do not depend on how threads split the work.
constexpr int64_t fused_block_rows = 32;

/// The sum of term(j) over j in [0, d), in 16 interleaved partial sums
/// added pairwise at the end. A single running sum is a chain of dependent
/// adds the compiler may not reorder (and so cannot vectorise): on a row of
/// 512 it took as long as the rest of the block. The order is fixed, so the
/// result does not depend on the machine's vector width.
template <typename Term>
RECTRAIN_ALWAYS_INLINE float row_sum(int64_t d, Term&& term) {
  constexpr int64_t lanes = 16;
  float acc[lanes] = {};
  int64_t j = 0;
  for (; j + lanes <= d; j += lanes)
    for (int64_t l = 0; l < lanes; ++l) acc[l] += term(j + l);
  float tail = 0;
  for (; j < d; ++j) tail += term(j);
  for (int64_t width = lanes / 2; width > 0; width /= 2)
    for (int64_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0] + tail;
}

/// `value` where `keep`, else 0, as a mask of its bits. Written `keep ?
/// value : 0`, GCC keeps the multiply that makes `value` under the branch
/// (a float operation may trap, so it is not speculated) and the loop stays
/// scalar, half its branches mispredicted, on every ISA without masked
/// operations (AVX2 and older): the backward ran 4x slower on Zen 3.
RECTRAIN_ALWAYS_INLINE float value_or_zero(bool keep, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits &= 0u - static_cast<uint32_t>(keep);
  std::memcpy(&value, &bits, sizeof bits);
  return value;
}

/// The forward's pointers and constants: x, bias, gamma, beta in; out
/// [N, D] and each row's mean and 1/std out.
struct FusedBlockForward {
  const float *x, *bias, *gamma, *beta;
  float *out, *mean, *rstd;
  int64_t d;
  float eps;
  bool drop;
  uint32_t threshold;
  uint64_t seed;
  float scale;
};

/// Rows [begin, end) of the forward. Plain loops the compiler vectorises,
/// inlined into one entry point per ISA (cpu_isa.hpp), so each is
/// vectorised for its own.
RECTRAIN_ALWAYS_INLINE void fused_block_forward_body(const FusedBlockForward& a, int64_t begin, int64_t end) {
  const int64_t d = a.d;
  const float *pbias = a.bias, *pg = a.gamma, *pb = a.beta;
  const float scale = a.scale;
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = a.x + r * d;
    float* o = a.out + r * d;
    const float mu =
        row_sum(d, [xr, pbias](int64_t j) { return std::max(xr[j] + pbias[j], 0.0f); }) / static_cast<float>(d);
    const float sq = row_sum(d, [xr, pbias, mu](int64_t j) {
      const float c = std::max(xr[j] + pbias[j], 0.0f) - mu;
      return c * c;
    });
    const float rs = 1.0f / std::sqrt(sq / static_cast<float>(d) + a.eps);
    for (int64_t j = 0; j < d; ++j) o[j] = (std::max(xr[j] + pbias[j], 0.0f) - mu) * rs * pg[j] + pb[j];
    if (a.drop)
      for_each_kept(a.seed, r * d, d, a.threshold,
                    [o, scale](int64_t j, bool kept) { o[j] = value_or_zero(kept, o[j] * scale); });
    a.mean[r] = mu;
    a.rstd[r] = rs;
  }
}

/// The backward's pointers: the forward's inputs and statistics, the
/// output gradient, dx [N, D] and the per-chunk partial sums of the bias,
/// gamma and beta gradients ([chunks, D] each).
struct FusedBlockBackward {
  const float *x, *bias, *gamma, *grad, *mean, *rstd;
  float *dx, *dbias, *dgamma, *dbeta;
  int64_t n, d;
  bool drop;
  uint32_t threshold;
  uint64_t seed;
  float scale;
};

/// Chunks [chunk_begin, chunk_end) of fused_block_rows rows of the backward.
RECTRAIN_ALWAYS_INLINE void fused_block_backward_body(const FusedBlockBackward& a, int64_t chunk_begin,
                                                      int64_t chunk_end) {
  const int64_t n = a.n, d = a.d;
  const float *pbias = a.bias, *pg = a.gamma;
  const float scale = a.scale;
  std::vector<float> gy(static_cast<size_t>(d)), yhat(static_cast<size_t>(d));
  for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    // __restrict: none of these overlap; without it the compiler will
    // not vectorise loops that store through several of them.
    float* __restrict dbias = a.dbias + chunk * d;
    float* __restrict dg = a.dgamma + chunk * d;
    float* __restrict db = a.dbeta + chunk * d;
    float* __restrict gyr = gy.data();
    float* __restrict yh = yhat.data();
    const int64_t stop = std::min(n, (chunk + 1) * fused_block_rows);
    for (int64_t r = chunk * fused_block_rows; r < stop; ++r) {
      const float* xr = a.x + r * d;
      const float* gr = a.grad + r * d;
      const float mu = a.mean[r], rs = a.rstd[r];
      // Through dropout, then LayerNorm's affine part.
      if (a.drop)
        for_each_kept(a.seed, r * d, d, a.threshold,
                      [out = gyr, gr, scale](int64_t j, bool kept) { out[j] = value_or_zero(kept, gr[j] * scale); });
      else
        for (int64_t j = 0; j < d; ++j) gyr[j] = gr[j];
      // Three loops, not one: storing through three pointers at once,
      // the loop stayed scalar.
      for (int64_t j = 0; j < d; ++j) yh[j] = (std::max(xr[j] + pbias[j], 0.0f) - mu) * rs;
      for (int64_t j = 0; j < d; ++j) dg[j] += gyr[j] * yh[j];
      for (int64_t j = 0; j < d; ++j) db[j] += gyr[j];
      const float mean_dy = row_sum(d, [gyr, pg](int64_t j) { return gyr[j] * pg[j]; }) / static_cast<float>(d);
      const float mean_dy_y =
          row_sum(d, [gyr, pg, yh](int64_t j) { return gyr[j] * pg[j] * yh[j]; }) / static_cast<float>(d);
      // Normalisation, then ReLU (gradient 0 where x <= 0, as LibTorch's).
      float* __restrict o = a.dx + r * d;
      for (int64_t j = 0; j < d; ++j)
        o[j] = value_or_zero(xr[j] + pbias[j] > 0, rs * (gyr[j] * pg[j] - mean_dy - yh[j] * mean_dy_y));
      // (A loop of its own: folded into the one above, it ran at half speed.)
      for (int64_t j = 0; j < d; ++j) dbias[j] += o[j];
    }
  }
}

using FusedBlockForwardKernel = void (*)(const FusedBlockForward&, int64_t, int64_t);
using FusedBlockBackwardKernel = void (*)(const FusedBlockBackward&, int64_t, int64_t);

inline void fused_block_forward_generic(const FusedBlockForward& a, int64_t begin, int64_t end) {
  fused_block_forward_body(a, begin, end);
}
inline void fused_block_backward_generic(const FusedBlockBackward& a, int64_t begin, int64_t end) {
  fused_block_backward_body(a, begin, end);
}
#if RECTRAIN_X86_DISPATCH
RECTRAIN_TARGET_AVX2 inline void fused_block_forward_avx2(const FusedBlockForward& a, int64_t begin, int64_t end) {
  fused_block_forward_body(a, begin, end);
}
RECTRAIN_TARGET_AVX2 inline void fused_block_backward_avx2(const FusedBlockBackward& a, int64_t begin, int64_t end) {
  fused_block_backward_body(a, begin, end);
}
RECTRAIN_TARGET_AVX512 inline void fused_block_forward_avx512(const FusedBlockForward& a, int64_t begin,
                                                              int64_t end) {
  fused_block_forward_body(a, begin, end);
}
RECTRAIN_TARGET_AVX512 inline void fused_block_backward_avx512(const FusedBlockBackward& a, int64_t begin,
                                                               int64_t end) {
  fused_block_backward_body(a, begin, end);
}
#endif

inline FusedBlockForwardKernel fused_block_forward_for(CpuIsa isa) {
  return RECTRAIN_KERNEL_FOR(isa, &fused_block_forward_generic, &fused_block_forward_avx2,
                             &fused_block_forward_avx512);
}
inline FusedBlockBackwardKernel fused_block_backward_for(CpuIsa isa) {
  return RECTRAIN_KERNEL_FOR(isa, &fused_block_backward_generic, &fused_block_backward_avx2,
                             &fused_block_backward_avx512);
}

class ReluLayerNormDropout : public torch::autograd::Function<ReluLayerNormDropout> {
 public:
  /// x [N, D] (x + bias is the pre-activation); bias, gamma, beta [D];
  /// each output kept with probability `keep` (1: no dropout) and scaled by
  /// 1 / keep.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& bias_in, const torch::Tensor& gamma_in,
                               const torch::Tensor& beta_in, double eps, double keep, int64_t seed) {
    const auto x = x_in.contiguous();
    const auto bias = bias_in.contiguous(), gamma = gamma_in.contiguous(), beta = beta_in.contiguous();
    const int64_t n = x.size(0), d = x.size(1);
    auto out = torch::empty_like(x);
    auto mean = torch::empty({n}, x.options()), rstd = torch::empty({n}, x.options());
    const float *px = x.data_ptr<float>(), *pbias = bias.data_ptr<float>(), *pg = gamma.data_ptr<float>(),
                *pb = beta.data_ptr<float>();
    float *po = out.data_ptr<float>(), *pm = mean.data_ptr<float>(), *pr = rstd.data_ptr<float>();
    const bool drop = keep < 1;
    const uint32_t threshold = drop ? keep_threshold(keep) : 0;
    const auto useed = static_cast<uint64_t>(seed);
    const float scale = static_cast<float>(1.0 / keep);
    const FusedBlockForward args{px, pbias, pg, pb, po, pm, pr, d, static_cast<float>(eps), drop, threshold, useed,
                                 scale};
    const auto kernel = fused_block_forward_for(cpu_isa());
    at::parallel_for(0, n, fused_block_rows, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
    ctx->save_for_backward({x, bias, gamma, mean, rstd});
    ctx->saved_data["keep"] = keep;
    ctx->saved_data["seed"] = seed;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &bias = saved[1], &gamma = saved[2], &mean = saved[3], &rstd = saved[4];
    const double keep = ctx->saved_data["keep"].toDouble();
    const auto useed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
    const auto g = grads[0].contiguous();
    const int64_t n = x.size(0), d = x.size(1);
    const int64_t chunks = (n + fused_block_rows - 1) / fused_block_rows;
    auto dx = torch::empty_like(x);
    // Per-chunk partial sums of the [D] gradients: [3, chunks, D] for bias,
    // gamma and beta.
    auto parts = torch::zeros({3, chunks, d}, x.options());
    const float *px = x.data_ptr<float>(), *pbias = bias.data_ptr<float>(), *pg = gamma.data_ptr<float>(),
                *pgrad = g.data_ptr<float>();
    const float *pm = mean.data_ptr<float>(), *pr = rstd.data_ptr<float>();
    float *pdx = dx.data_ptr<float>(), *pdbias = parts[0].data_ptr<float>(), *pdg = parts[1].data_ptr<float>(),
          *pdb = parts[2].data_ptr<float>();
    const bool drop = keep < 1;
    const uint32_t threshold = drop ? keep_threshold(keep) : 0;
    const float scale = static_cast<float>(1.0 / keep);
    const FusedBlockBackward args{px, pbias, pg, pgrad, pm, pr, pdx, pdbias, pdg, pdb, n, d, drop, threshold, useed,
                                  scale};
    const auto kernel = fused_block_backward_for(cpu_isa());
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
    const auto sums = parts.sum(1);
    return {dx, sums[0], sums[1], sums[2], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

} // namespace detail

/// layer_norm(relu(x + bias)) then dropout(p) in training, over [N, D]
/// float32 CPU rows; the same values as LibTorch's ops (up to float
/// rounding), with the dropout mask of rectrain::dropout's hash.
inline torch::Tensor relu_layer_norm_dropout(const torch::Tensor& x, const torch::Tensor& bias,
                                             const torch::Tensor& gamma, const torch::Tensor& beta, double eps,
                                             double p, bool training) {
  auto vector_ok = [&](const torch::Tensor& v) {
    return v.defined() && v.dim() == 1 && v.size(0) == x.size(-1) && v.device().is_cpu() &&
           v.scalar_type() == torch::kFloat;
  };
  if (x.dim() != 2 || !x.device().is_cpu() || x.scalar_type() != torch::kFloat || !vector_ok(bias) ||
      !vector_ok(gamma) || !vector_ok(beta))
    throw TensorError(detail::concat(
        "relu_layer_norm_dropout: expected float32 CPU x [N, D] and bias, gamma, beta [D], got ", detail::shape_of(x),
        ", ", detail::shape_of(bias), ", ", detail::shape_of(gamma), ", ", detail::shape_of(beta)));
  if (!(p >= 0 && p < 1)) throw Error(detail::concat("relu_layer_norm_dropout: p must be in [0, 1), got ", p));
  const bool drop = training && p > 0;
  const int64_t seed = drop ? static_cast<int64_t>(detail::draw_dropout_seed()) : 0;
  return detail::ReluLayerNormDropout::apply(x, bias, gamma, beta, eps, drop ? 1 - p : 1.0, seed);
}

} // namespace rectrain
