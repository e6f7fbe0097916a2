#pragma once
// Ranking losses over groups: scores, targets and a validity mask, each
// [B, G] (B groups of G items, e.g. one user's 20 candidates).
// - pairwise_margin_loss: relu(margin − (s_hi − s_lo)), the recipe's.
// - ranknet_loss: log(1 + exp(−(s_hi − s_lo))), pairwise logistic.
// - listwise_softmax_loss: cross-entropy between the softmax of the scores
//   and the targets' gains normalised over the group.
// Only pairs inside one group whose targets differ count, both items valid
// (mask true); padding never contributes. A group without such a pair adds
// nothing and makes no NaN, in the value or in the gradient. Everything is
// a handful of [B, G, G] tensor ops: no loop over pairs, any device.
//
// Graded targets (like 1 > neutral 0 > dislike −1) may be negative: gains
// are 2^(t − min_t) − 1 with min_t the group's lowest valid target.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <limits>

namespace rectrain {

/// How per-pair (or per-group) losses become one number.
enum class RankingReduction : uint8_t {
  MeanOverPairs,   ///< Σ pair losses / number of valid pairs in the batch
  MeanOverGroups,  ///< mean over groups with a valid pair of each group's mean
  Sum,             ///< Σ pair losses (listwise: Σ group losses)
};

struct PairwiseLossOptions {
  /// The margin of pairwise_margin_loss (ignored by RankNet).
  TORCH_ARG(double, margin) = 1.0;
  /// Weight each pair by |ΔNDCG|, the change in the group's NDCG if the two
  /// items swapped places in the current ranking (LambdaRank). The weights
  /// are constants: no gradient flows through the ranking.
  TORCH_ARG(bool, lambda_weights) = false;
  TORCH_ARG(RankingReduction, reduction) = RankingReduction::MeanOverPairs;
};

struct ListwiseLossOptions {
  /// MeanOverPairs is read as MeanOverGroups here.
  TORCH_ARG(RankingReduction, reduction) = RankingReduction::MeanOverGroups;
};

namespace detail {

struct RankingInput {
  torch::Tensor scores;   ///< [B, G] floating
  torch::Tensor targets;  ///< [B, G] in the scores' dtype
  torch::Tensor mask;     ///< [B, G] bool
};

inline RankingInput ranking_input(const char* loss, const torch::Tensor& scores, const torch::Tensor& targets,
                                  const torch::Tensor& mask) {
  if (!scores.defined() || scores.dim() != 2 || !scores.is_floating_point())
    throw TensorError(concat(loss, ": scores must be a floating [B, G] tensor, got ",
                             type_and_shape_of(scores)));
  if (!targets.defined() || targets.sizes() != scores.sizes())
    throw TensorError(concat(loss, ": targets must be shaped like scores ", scores.sizes(), ", got ",
                             shape_of(targets)));
  if (mask.defined() && mask.sizes() != scores.sizes())
    throw TensorError(concat(loss, ": mask must be shaped like scores ", scores.sizes(), ", got ", mask.sizes()));
  RankingInput in;
  in.scores = scores;
  in.targets = targets.to(scores.device(), scores.scalar_type());
  in.mask = mask.defined() ? mask.to(scores.device(), torch::kBool) : torch::ones_like(scores, torch::kBool);
  // A NaN target would silently turn every comparison false: refuse it.
  if (!(torch::isfinite(in.targets) | ~in.mask).all().item<bool>())
    throw TensorError(concat(loss, ": targets have NaN or infinite values at valid positions"));
  return in;
}

/// [B, G, G]: true where i and j are valid, in one group, and t_i > t_j.
inline torch::Tensor ordered_pairs(const RankingInput& in) {
  // One comparison over the grid: padding is −∞ as the higher item and +∞
  // as the lower one, so no pair with a padded item compares true.
  const double inf = std::numeric_limits<double>::infinity();
  const auto as_hi = in.targets.masked_fill(~in.mask, -inf);
  const auto as_lo = in.targets.masked_fill(~in.mask, inf);
  return as_hi.unsqueeze(2) > as_lo.unsqueeze(1);
}

/// Gains 2^(t − min_t) − 1 per group (0 on padding).
inline torch::Tensor group_gains(const RankingInput& in) {
  const auto big = torch::full_like(in.targets, std::numeric_limits<double>::infinity());
  auto low = torch::where(in.mask, in.targets, big).amin(1, true);
  low = torch::where(torch::isfinite(low), low, torch::zeros_like(low));  // groups without valid items
  const auto gains = torch::exp2(in.targets - low) - 1;
  return torch::where(in.mask, gains, torch::zeros_like(gains));
}

/// |ΔNDCG| of swapping i and j in the ranking by the current scores
/// (valid items only, ties broken by position), [B, G, G], no gradient.
inline torch::Tensor lambda_weights(const RankingInput& in) {
  torch::NoGradGuard no_grad;
  const auto s = in.scores.detach();
  const int64_t g = s.size(1);
  const auto position = torch::arange(g, s.options().dtype(torch::kLong));
  // j ranks above i: valid, and a higher score or an equal score earlier.
  const auto above = in.mask.unsqueeze(1) &
                     ((s.unsqueeze(1) > s.unsqueeze(2)) |
                      ((s.unsqueeze(1) == s.unsqueeze(2)) & (position.view({1, 1, g}) < position.view({1, g, 1}))));
  const auto rank = above.sum(2).to(s.scalar_type()) + 1;  // 1-based, [B, G]
  const auto discount = 1 / torch::log2(rank + 1);
  const auto gains = group_gains(in);
  // Ideal DCG: gains sorted descending against discounts of ranks 1..G.
  const auto ideal_discount = 1 / torch::log2(torch::arange(2, g + 2, s.options()));
  const auto idcg = (std::get<0>(gains.sort(1, true)) * ideal_discount).sum(1, true);
  const auto delta = (gains.unsqueeze(2) - gains.unsqueeze(1)) * (discount.unsqueeze(2) - discount.unsqueeze(1));
  return (delta.abs() / torch::where(idcg > 0, idcg, torch::ones_like(idcg)).unsqueeze(2));
}

/// MeanOverGroups from per-group loss sums and pair counts ([B] each): the
/// mean of each group's pair mean, over the groups with a pair.
inline torch::Tensor mean_of_group_means(const torch::Tensor& group_sum, const torch::Tensor& group_pairs) {
  const auto has = group_pairs > 0;
  const auto per_group = group_sum / torch::where(has, group_pairs, torch::ones_like(group_pairs));
  return per_group.sum() / has.sum().clamp_min(1).to(group_sum.scalar_type());
}

inline torch::Tensor reduce_pairs(const torch::Tensor& loss, const torch::Tensor& pairs, RankingReduction reduction) {
  const auto weighted = torch::where(pairs, loss, torch::zeros_like(loss));
  const auto dtype = loss.scalar_type();
  switch (reduction) {
    case RankingReduction::Sum:
      return weighted.sum();
    case RankingReduction::MeanOverGroups:
      return mean_of_group_means(weighted.sum({1, 2}), pairs.sum({1, 2}).to(dtype));
    case RankingReduction::MeanOverPairs:
    default:
      return weighted.sum() / pairs.sum().clamp_min(1).to(dtype);
  }
}

/// The pairwise losses over the list of valid pairs only: pairs.nonzero()
/// gives (b, i, j) for every counted pair, typically a few percent of the
/// G² grid (one like among 20 views gives 19 of 400), so the loss and its
/// backward touch P elements instead of B·G².
template <class PairLoss>
torch::Tensor compact_pairwise_loss(const RankingInput& in, const torch::Tensor& pairs,
                                    const PairwiseLossOptions& options, PairLoss&& pair_loss) {
  const int64_t b = in.scores.size(0), g = in.scores.size(1);
  const auto index = pairs.nonzero();  // [P, 3]
  const auto group = index.select(1, 0);
  const auto hi = group * g + index.select(1, 1);
  const auto lo = group * g + index.select(1, 2);
  const auto flat = in.scores.reshape({-1});
  auto loss = pair_loss(flat.index_select(0, hi) - flat.index_select(0, lo));
  if (options.lambda_weights()) loss = loss * lambda_weights(in).reshape({-1}).index_select(0, hi * g + index.select(1, 2));
  switch (options.reduction()) {
    case RankingReduction::Sum:
      return loss.sum();
    case RankingReduction::MeanOverGroups:
      return mean_of_group_means(torch::zeros({b}, loss.options()).index_add(0, group, loss),
                                 torch::zeros({b}, loss.options()).index_add(0, group, torch::ones_like(loss)));
    case RankingReduction::MeanOverPairs:
    default:
      return loss.sum() / static_cast<double>(std::max<int64_t>(1, index.size(0)));
  }
}

/// The same over the whole [B, G, G] grid, pairs masked: no data-dependent
/// shapes, hence no host synchronisation on a GPU, where the grid is cheap.
template <class PairLoss>
torch::Tensor dense_pairwise_loss(const RankingInput& in, const torch::Tensor& pairs,
                                  const PairwiseLossOptions& options, PairLoss&& pair_loss) {
  auto loss = pair_loss(in.scores.unsqueeze(2) - in.scores.unsqueeze(1));  // s_i − s_j for every (i, j)
  if (options.lambda_weights()) loss = loss * lambda_weights(in);
  return reduce_pairs(loss, pairs, options.reduction());
}

enum class PairLayout : uint8_t { Auto, Compact, Dense };

template <class PairLoss>
torch::Tensor pairwise_loss(const char* name, const torch::Tensor& scores, const torch::Tensor& targets,
                            const torch::Tensor& mask, const PairwiseLossOptions& options, PairLoss&& pair_loss,
                            PairLayout layout = PairLayout::Auto) {
  const RankingInput in = ranking_input(name, scores, targets, mask);
  const auto pairs = ordered_pairs(in);
  if (layout == PairLayout::Auto) layout = in.scores.is_cpu() ? PairLayout::Compact : PairLayout::Dense;
  return layout == PairLayout::Compact ? compact_pairwise_loss(in, pairs, options, pair_loss)
                                       : dense_pairwise_loss(in, pairs, options, pair_loss);
}

} // namespace detail

/// The recipe's loss: Σ over ordered pairs of relu(margin − (s_hi − s_lo)).
inline torch::Tensor pairwise_margin_loss(const torch::Tensor& scores, const torch::Tensor& targets,
                                          const torch::Tensor& mask = {}, const PairwiseLossOptions& options = {}) {
  if (!(options.margin() >= 0)) throw Error(detail::concat("pairwise_margin_loss: margin must be >= 0, got ", options.margin()));
  const double margin = options.margin();
  return detail::pairwise_loss("pairwise_margin_loss", scores, targets, mask, options,
                               [margin](const torch::Tensor& diff) { return torch::relu(margin - diff); });
}

/// RankNet: Σ over ordered pairs of log(1 + exp(−(s_hi − s_lo))).
inline torch::Tensor ranknet_loss(const torch::Tensor& scores, const torch::Tensor& targets,
                                  const torch::Tensor& mask = {}, const PairwiseLossOptions& options = {}) {
  return detail::pairwise_loss("ranknet_loss", scores, targets, mask, options,
                               [](const torch::Tensor& diff) { return torch::softplus(-diff); });
}

/// Listwise softmax cross-entropy: −Σ_i (gain_i / Σ gain) log softmax(s)_i
/// over each group's valid items; groups whose targets are all equal add
/// nothing.
inline torch::Tensor listwise_softmax_loss(const torch::Tensor& scores, const torch::Tensor& targets,
                                           const torch::Tensor& mask = {}, const ListwiseLossOptions& options = {}) {
  const auto in = detail::ranking_input("listwise_softmax_loss", scores, targets, mask);
  const auto gains = detail::group_gains(in);
  const auto total = gains.sum(1, true);
  const auto has = total.squeeze(1) > 0;
  // Padding gets a score 1e4 below the group's best: its exp underflows to
  // 0, yet stays finite, so a group without valid items makes no NaN that a
  // where() would carry into the gradient.
  torch::Tensor floor;
  {
    torch::NoGradGuard no_grad;
    auto best = torch::where(in.mask, in.scores, torch::full_like(in.scores, -std::numeric_limits<double>::infinity()))
                    .amax(1, true);
    best = torch::where(torch::isfinite(best), best, torch::zeros_like(best));
    floor = (best - 1e4).expand_as(in.scores);
  }
  const auto log_p = torch::log_softmax(torch::where(in.mask, in.scores, floor), 1);
  const auto per_group = -(gains / torch::where(total > 0, total, torch::ones_like(total)) * log_p).sum(1);
  const auto kept = torch::where(has, per_group, torch::zeros_like(per_group));
  if (options.reduction() == RankingReduction::Sum) return kept.sum();
  return kept.sum() / has.sum().clamp_min(1).to(kept.scalar_type());
}

/// Which ranking loss a RankingHead (or ranking_loss()) applies.
enum class RankingLossKind : uint8_t { PairwiseMargin, RankNet, ListwiseSoftmax };

struct RankingLossOptions {
  /* implicit */ RankingLossOptions(RankingLossKind kind = RankingLossKind::PairwiseMargin) : kind_(kind) {}
  TORCH_ARG(RankingLossKind, kind);
  TORCH_ARG(PairwiseLossOptions, pairwise) = {};
  TORCH_ARG(ListwiseLossOptions, listwise) = {};
};

/// The loss `options.kind()` names, with its options.
inline torch::Tensor ranking_loss(const torch::Tensor& scores, const torch::Tensor& targets,
                                  const torch::Tensor& mask = {}, const RankingLossOptions& options = {}) {
  switch (options.kind()) {
    case RankingLossKind::PairwiseMargin: return pairwise_margin_loss(scores, targets, mask, options.pairwise());
    case RankingLossKind::RankNet: return ranknet_loss(scores, targets, mask, options.pairwise());
    case RankingLossKind::ListwiseSoftmax: return listwise_softmax_loss(scores, targets, mask, options.listwise());
  }
  throw Error("ranking_loss: unknown RankingLossKind");
}

} // namespace rectrain
