#pragma once
// Losses over (positive, negatives) groups: a row's positive score [B] and
// its k negatives' scores [B, k], an optional validity mask [B, k] (in-batch
// negatives that are the user's own positives are not negatives) and
// optional per-row weights [B].
//
// - bpr_loss: Bayesian personalised ranking, −log σ(s⁺ − s⁻) per valid pair.
// - sampled_softmax_loss: cross-entropy of the positive among itself and its
//   negatives at temperature τ, each logit s/τ − log q (the log-Q correction
//   of sampled softmax, Yi et al. 2019, when log_q is given).
// - group_ranking_loss: any of rectrain's ranking losses (ranking.hpp) on the
//   group [positive, negatives] with targets [1, 0, …, 0].

#include <rectrain/core/error.hpp>
#include <rectrain/loss/ranking.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <limits>

namespace rectrain {

enum class RetrievalLossKind : uint8_t { Bpr, SampledSoftmax };

namespace detail {

inline void check_retrieval_scores(const char* loss, const torch::Tensor& positive, const torch::Tensor& negative,
                                   const torch::Tensor& valid, const torch::Tensor& weight) {
  if (!positive.defined() || positive.dim() != 1 || !positive.is_floating_point())
    throw TensorError(concat(loss, ": positive scores must be a floating [B] tensor, got ", type_and_shape_of(positive)));
  const int64_t b = positive.size(0);
  if (!negative.defined() || negative.dim() != 2 || negative.size(0) != b || negative.size(1) < 1)
    throw TensorError(concat(loss, ": negative scores must be [", b, ", k] with k >= 1, got ", shape_of(negative)));
  if (valid.defined() && valid.sizes() != negative.sizes())
    throw TensorError(concat(loss, ": valid must be shaped like the negatives ", negative.sizes(), ", got ",
                             valid.sizes()));
  if (weight.defined() && (weight.dim() != 1 || weight.size(0) != b))
    throw TensorError(concat(loss, ": weight must be [", b, "], got ", shape_of(weight)));
}

/// Σ_rows weight · row_loss / Σ weight over rows that count.
inline torch::Tensor weighted_row_mean(const torch::Tensor& row_loss, const torch::Tensor& counts,
                                       const torch::Tensor& weight) {
  auto w = counts.to(row_loss.scalar_type());
  if (weight.defined()) w = w * weight.to(row_loss.device(), row_loss.scalar_type());
  return (row_loss * w).sum() / w.sum().clamp_min(std::numeric_limits<float>::min());
}

} // namespace detail

/// Mean over rows (weighted) of the mean over the row's valid negatives of
/// softplus(s⁻ − s⁺) = −log σ(s⁺ − s⁻). Rows without a valid negative do
/// not count.
inline torch::Tensor bpr_loss(const torch::Tensor& positive, const torch::Tensor& negative,
                              const torch::Tensor& valid = {}, const torch::Tensor& weight = {}) {
  detail::check_retrieval_scores("bpr_loss", positive, negative, valid, weight);
  auto pair = torch::softplus(negative - positive.unsqueeze(1));
  if (!valid.defined()) return detail::weighted_row_mean(pair.mean(1), torch::ones_like(positive), weight);
  const auto v = valid.to(negative.device(), negative.scalar_type());
  const auto count = v.sum(1);
  const auto row = (pair * v).sum(1) / count.clamp_min(1);
  return detail::weighted_row_mean(row, (count > 0), weight);
}

struct SampledSoftmaxOptions {
  TORCH_ARG(double, temperature) = 1.0;
};

/// −log softmax of the positive among [positive, valid negatives], logits
/// s / τ − log q. log_q_positive [B] and log_q_negative [B, k] are optional
/// (both or neither): without them no correction is made.
inline torch::Tensor sampled_softmax_loss(const torch::Tensor& positive, const torch::Tensor& negative,
                                          const torch::Tensor& valid = {}, const torch::Tensor& log_q_positive = {},
                                          const torch::Tensor& log_q_negative = {},
                                          const SampledSoftmaxOptions& options = {},
                                          const torch::Tensor& weight = {}) {
  detail::check_retrieval_scores("sampled_softmax_loss", positive, negative, valid, weight);
  if (!(options.temperature() > 0))
    throw Error(detail::concat("sampled_softmax_loss: temperature must be > 0, got ", options.temperature()));
  if (log_q_positive.defined() != log_q_negative.defined())
    throw Error("sampled_softmax_loss: give both log_q_positive and log_q_negative, or neither");
  auto pos = positive / options.temperature();
  auto neg = negative / options.temperature();
  if (log_q_positive.defined()) {
    if (log_q_positive.sizes() != positive.sizes() || log_q_negative.sizes() != negative.sizes())
      throw TensorError(detail::concat("sampled_softmax_loss: log_q must be shaped like the scores ([",
                                       positive.size(0), "] and ", negative.sizes(), "), got ",
                                       log_q_positive.sizes(), " and ", log_q_negative.sizes()));
    pos = pos - log_q_positive.to(pos.device(), pos.scalar_type());
    neg = neg - log_q_negative.to(neg.device(), neg.scalar_type());
  }
  if (valid.defined())
    neg = neg.masked_fill(valid.to(neg.device(), torch::kBool).logical_not(), -std::numeric_limits<double>::infinity());
  const auto logits = torch::cat({pos.unsqueeze(1), neg}, 1);
  const auto row = torch::logsumexp(logits, 1) - pos;
  return detail::weighted_row_mean(row, torch::ones_like(positive), weight);
}

/// rectrain's ranking loss `options` on groups [positive, negatives] with
/// targets [1, 0, …, 0] (invalid negatives masked).
inline torch::Tensor group_ranking_loss(const torch::Tensor& positive, const torch::Tensor& negative,
                                        const torch::Tensor& valid = {}, const RankingLossOptions& options = {}) {
  detail::check_retrieval_scores("group_ranking_loss", positive, negative, valid, {});
  const auto scores = torch::cat({positive.unsqueeze(1), negative}, 1);
  auto targets = torch::zeros_like(scores);
  targets.select(1, 0).fill_(1);
  torch::Tensor mask;
  if (valid.defined())
    mask = torch::cat({torch::ones_like(positive, torch::kBool).unsqueeze(1), valid.to(scores.device(), torch::kBool)}, 1);
  return ranking_loss(scores, targets, mask, options);
}

} // namespace rectrain
