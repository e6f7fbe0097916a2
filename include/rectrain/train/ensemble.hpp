#pragma once
// Averaging the scores of models trained with different seeds. A ranking
// head's scores have no fixed scale (a margin loss only orders them), so by
// default each model's scores are standardised before averaging: no member
// dominates because its scores happen to spread wider.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <vector>

namespace rectrain {

enum class EnsembleScaling : uint8_t {
  None,    ///< plain mean of the raw scores
  ZScore,  ///< (s - mean) / std per model, then the mean
};

/// The mean of `scores` (one 1-D float tensor per model, same length).
inline torch::Tensor ensemble_scores(const std::vector<torch::Tensor>& scores,
                                     EnsembleScaling scaling = EnsembleScaling::ZScore) {
  if (scores.empty()) throw TensorError("ensemble_scores: no scores given");
  torch::Tensor sum;
  for (size_t i = 0; i < scores.size(); ++i) {
    const auto& s = scores[i];
    if (!s.defined() || s.dim() != 1 || !s.is_floating_point() || s.size(0) != scores[0].size(0))
      throw TensorError(detail::concat("ensemble_scores: model ", i, "'s scores must be 1-D floating with ",
                                       scores[0].defined() && scores[0].dim() == 1 ? scores[0].size(0) : 0,
                                       " values, got ", detail::shape_of(s)));
    auto x = s.to(torch::kFloat64);
    if (!torch::isfinite(x).all().item<bool>())
      throw TensorError(detail::concat("ensemble_scores: model ", i, "'s scores hold NaN or infinite values"));
    if (scaling == EnsembleScaling::ZScore && x.numel() > 1) {
      const auto sd = x.std().item<double>();
      x = (x - x.mean()) / (sd > 0 ? sd : 1.0);
    }
    sum = sum.defined() ? sum + x : x;
  }
  return (sum / static_cast<double>(scores.size())).to(torch::kFloat32);
}

} // namespace rectrain
