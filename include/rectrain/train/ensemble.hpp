#pragma once
// Averaging the scores of models trained with different seeds. A ranking
// head's scores have no fixed scale (a margin loss only orders them), so by
// default each model's scores are standardised before averaging: no member
// dominates because its scores happen to spread wider.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cmath>
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

/// A model's score scale: the mean and standard deviation of its scores
/// on a reference set (its validation rows, say), fixed once it is
/// trained. Standardising with it instead of with the statistics of the
/// rows scored makes a (user, item) pair's ensemble score the same whatever
/// else is scored beside it.
struct ScoreScale {
  double mean = 0;
  double std = 1;

  /// The scale of `scores` (1-D, finite; a constant set gets std 1).
  static ScoreScale of(const torch::Tensor& scores) {
    if (!scores.defined() || scores.dim() != 1 || scores.numel() == 0)
      throw TensorError(detail::concat("ScoreScale::of: expected a non-empty 1-D tensor, got ", detail::shape_of(scores)));
    const auto x = scores.to(torch::kCPU, torch::kFloat64);
    if (!torch::isfinite(x).all().item<bool>()) throw TensorError("ScoreScale::of: scores hold NaN or infinite values");
    ScoreScale s;
    s.mean = x.mean().item<double>();
    const double sd = x.numel() > 1 ? x.std().item<double>() : 0.0;
    s.std = sd > 0 ? sd : 1.0;
    return s;
  }
};

/// The mean over models of (scores - mean) / std with each model's fixed
/// `scales` (one per model).
inline torch::Tensor ensemble_scores(const std::vector<torch::Tensor>& scores, const std::vector<ScoreScale>& scales) {
  if (scales.size() != scores.size())
    throw TensorError(detail::concat("ensemble_scores: ", scores.size(), " models' scores but ", scales.size(),
                                     " scales"));
  std::vector<torch::Tensor> scaled;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!(std::isfinite(scales[i].mean) && std::isfinite(scales[i].std) && scales[i].std > 0))
      throw TensorError(detail::concat("ensemble_scores: model ", i, "'s scale (mean ", scales[i].mean, ", std ",
                                       scales[i].std, ") is not a finite mean and a positive std"));
    scaled.push_back(scores[i].defined() ? (scores[i].to(torch::kFloat64) - scales[i].mean) / scales[i].std : scores[i]);
  }
  return ensemble_scores(scaled, EnsembleScaling::None);
}

} // namespace rectrain
