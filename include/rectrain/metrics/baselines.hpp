#pragma once
// Baseline scorers every model must beat: random, item popularity and a
// smoothed like rate. Each scores the dataset's candidates (cold items get
// the score of an item never seen).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>

#include <torch/torch.h>

namespace rectrain {

/// Uniform random scores, deterministic for `seed`.
inline torch::Tensor random_scores(int64_t n, uint64_t seed) {
  auto gen = compat::make_generator(torch::kCPU, seed);
  return torch::rand({n}, gen, torch::kFloat32);
}

/// Views of each dense item in the interactions, [items] float32.
inline torch::Tensor item_view_counts(const Dataset& ds) {
  return torch::bincount(ds.interactions["item"], {}, ds.num_items()).to(torch::kFloat32);
}

/// Score of each candidate: how often its item was viewed (0 when cold).
inline torch::Tensor popularity_scores(const Dataset& ds) {
  const auto counts = torch::cat({item_view_counts(ds), torch::zeros({1})});
  const auto item = ds.candidates["item"];
  return counts.index_select(0, torch::where(item < 0, torch::full_like(item, ds.num_items()), item));
}

/// Score of each candidate: (likes + m p) / (views + m), its item's like
/// rate shrunk towards the global rate p with `strength` m pseudo-views.
inline torch::Tensor like_rate_scores(const Dataset& ds, double strength = 2.0) {
  if (!(strength > 0)) throw Error(detail::concat("like_rate_scores: strength must be > 0, got ", strength));
  const auto views = item_view_counts(ds).to(torch::kFloat64);
  const auto likes = torch::zeros({ds.num_items()}, torch::kFloat64)
                         .index_add_(0, ds.interactions["item"], ds.interactions["like"].to(torch::kFloat64));
  const double p = likes.sum().item<double>() / std::max(1.0, views.sum().item<double>());
  const auto rate = torch::cat({(likes + strength * p) / (views + strength), torch::full({1}, p, torch::kFloat64)});
  const auto item = ds.candidates["item"];
  return rate.index_select(0, torch::where(item < 0, torch::full_like(item, ds.num_items()), item))
      .to(torch::kFloat32);
}

} // namespace rectrain
