#pragma once
// Synthetic positives with structure a retrieval model can learn, at any
// scale in O(interactions): items fall into clusters (tastes) and have a
// Zipf popularity within their cluster; each user likes a few clusters and
// draws each positive from one of them (by popularity), or, with
// probability `noise`, from the whole catalogue uniformly. Repeats are
// kept in the log (positives_matrix merges them).

#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/retrieval/interactions.hpp>
#include <rectrain/retrieval/negative_sampler.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace rectrain {

struct SyntheticInteractionsOptions {
  SyntheticInteractionsOptions(int64_t users, int64_t items) : users_(users), items_(items) {}
  TORCH_ARG(int64_t, users);
  TORCH_ARG(int64_t, items);
  /// Mean positives per user (each user draws 1 + a geometric count).
  TORCH_ARG(double, per_user) = 50;
  TORCH_ARG(int64_t, clusters) = 50;
  TORCH_ARG(int64_t, clusters_per_user) = 3;
  /// Popularity ∝ 1 / rank^zipf within a cluster.
  TORCH_ARG(double, zipf) = 1.0;
  /// Share of positives drawn uniformly from the whole catalogue.
  TORCH_ARG(double, noise) = 0.1;
  TORCH_ARG(uint64_t, seed) = 0;
};

inline InteractionLog synthetic_interactions(const SyntheticInteractionsOptions& o) {
  if (o.users() < 1 || o.items() < 1 || o.clusters() < 1 || o.clusters() > o.items() || o.clusters_per_user() < 1 ||
      !(o.per_user() >= 1) || !(o.noise() >= 0 && o.noise() <= 1) || !(o.zipf() >= 0))
    throw Error(detail::concat("synthetic_interactions: need users, items >= 1, 1 <= clusters <= items, "
                               "clusters_per_user >= 1, per_user >= 1, noise in [0, 1] and zipf >= 0; got users ",
                               o.users(), ", items ", o.items(), ", clusters ", o.clusters(), ", per_user ",
                               o.per_user(), ", noise ", o.noise()));
  // Item i is in cluster i % clusters, with rank i / clusters there; the
  // clusters' members are ids spread over the catalogue.
  const int64_t c = o.clusters();
  std::vector<detail::AliasTable> within(static_cast<size_t>(c));
  for (int64_t k = 0; k < c; ++k) {
    std::vector<double> w;
    for (int64_t i = k; i < o.items(); i += c) w.push_back(1.0 / std::pow(static_cast<double>(i / c + 1), o.zipf()));
    within[static_cast<size_t>(k)] = detail::AliasTable(w);
  }
  // Counts first (to size the output), then the draws, a stream per user.
  std::vector<int64_t> count(static_cast<size_t>(o.users())), start(static_cast<size_t>(o.users()) + 1, 0);
  const double p = 1.0 / o.per_user();  // geometric on {0, 1, ...} with mean per_user - 1
  for (int64_t u = 0; u < o.users(); ++u) {
    FastRng rng(stream_seed(o.seed(), 1, static_cast<uint64_t>(u)));
    const double x = std::max(rng.uniform(), 1e-300);
    count[static_cast<size_t>(u)] = 1 + (p >= 1 ? 0 : static_cast<int64_t>(std::floor(std::log(x) / std::log1p(-p))));
    start[static_cast<size_t>(u) + 1] = start[static_cast<size_t>(u)] + count[static_cast<size_t>(u)];
  }
  const int64_t n = start.back();
  InteractionLog log;
  log.user_id = torch::empty({n}, torch::kInt64);
  log.item_id = torch::empty({n}, torch::kInt64);
  log.source = "synthetic";
  int64_t* uid = log.user_id.data_ptr<int64_t>();
  int64_t* iid = log.item_id.data_ptr<int64_t>();
  at::parallel_for(0, o.users(), 1024, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> liked(static_cast<size_t>(o.clusters_per_user()));
    for (int64_t u = begin; u < end; ++u) {
      FastRng rng(stream_seed(o.seed(), 2, static_cast<uint64_t>(u)));
      for (auto& k : liked) k = static_cast<int64_t>(rng.below(static_cast<uint32_t>(c)));
      for (int64_t j = start[static_cast<size_t>(u)]; j < start[static_cast<size_t>(u) + 1]; ++j) {
        uid[j] = u;
        if (rng.uniform() < o.noise()) {
          iid[j] = static_cast<int64_t>(rng.below(static_cast<uint32_t>(o.items())));
        } else {
          const int64_t k = liked[rng.below(static_cast<uint32_t>(liked.size()))];
          iid[j] = k + c * within[static_cast<size_t>(k)].draw(rng);
        }
      }
    }
  });
  return log;
}

} // namespace rectrain
