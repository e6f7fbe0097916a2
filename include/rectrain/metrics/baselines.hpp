#pragma once
// Baseline scorers every model must beat: random, item popularity and a
// smoothed like rate. Each scores the dataset's candidates (cold items get
// the score of an item never seen).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// Uniform random scores, deterministic for `seed`.
inline torch::Tensor random_scores(int64_t n, uint64_t seed) {
  auto gen = compat::make_generator(torch::kCPU, seed);
  return torch::rand({n}, gen, torch::kFloat32);
}

namespace detail {
/// Each candidate's entry of a per-item score, `unknown` for cold items.
inline torch::Tensor candidate_item_scores(const Dataset& ds, const torch::Tensor& per_item, double unknown) {
  const auto table = torch::cat({per_item, torch::full({1}, unknown, per_item.options())});
  const auto item = ds.candidates["item"];
  return table.index_select(0, torch::where(item < 0, torch::full_like(item, ds.num_items()), item));
}
} // namespace detail

/// Views of each dense item in the interactions, [items] float32.
inline torch::Tensor item_view_counts(const Dataset& ds) {
  return torch::bincount(ds.interactions["item"], {}, ds.num_items()).to(torch::kFloat32);
}

/// Score of each candidate: how often its item was viewed (0 when cold).
inline torch::Tensor popularity_scores(const Dataset& ds) {
  return detail::candidate_item_scores(ds, item_view_counts(ds), 0.0);
}

/// Score of each candidate: (likes + m p) / (views + m), its item's like
/// rate shrunk towards the global rate p with `strength` m pseudo-views.
inline torch::Tensor like_rate_scores(const Dataset& ds, double strength = 2.0) {
  if (!(strength > 0)) throw Error(detail::concat("like_rate_scores: strength must be > 0, got ", strength));
  const auto views = item_view_counts(ds).to(torch::kFloat64);
  const auto likes = torch::zeros({ds.num_items()}, torch::kFloat64)
                         .index_add_(0, ds.interactions["item"], ds.interactions["like"].to(torch::kFloat64));
  const double p = likes.sum().item<double>() / std::max(1.0, views.sum().item<double>());
  return detail::candidate_item_scores(ds, (likes + strength * p) / (views + strength), p).to(torch::kFloat32);
}

/// The three baselines' candidate scores by name: random (with `seed`),
/// popularity, like_rate.
inline std::vector<std::pair<std::string, torch::Tensor>> baseline_scores(const Dataset& ds, uint64_t seed) {
  return {{"random", random_scores(ds.candidates.num_rows(), seed)},
          {"popularity", popularity_scores(ds)},
          {"like_rate", like_rate_scores(ds)}};
}

/// GAUC of scores for every candidates row against their target column,
/// users by raw id (so users the interactions never saw count too). An
/// Error when the candidates have no target.
inline GroupMetric candidate_gauc(const Dataset& ds, const torch::Tensor& scores) {
  if (!ds.candidates.contains("target")) throw Error("candidate_gauc: the candidates have no target column");
  return gauc(ds.candidates["user_id"], ds.candidates["target"], scores);
}

} // namespace rectrain
