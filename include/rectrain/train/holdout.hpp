#pragma once
// A validation set shaped like the test: some users' last views held out as
// one group each (the test has each user's next 20 videos), the rest left
// for training. Interactions are in time order (oldest first), so "last" is
// file order within a user.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

struct HoldoutOptions {
  /// Views held out per chosen user (the test's group size).
  TORCH_ARG(int64_t, views) = 20;
  /// Only users with at least this many views are chosen, so each keeps
  /// min_views - views in training (the shared datasets use 40).
  TORCH_ARG(int64_t, min_views) = 40;
  /// Share of the eligible users held out...
  TORCH_ARG(double, fraction) = 0.1;
  /// ...but at most this many (validation cost stays bounded at full scale).
  TORCH_ARG(int64_t, max_users) = 20000;
  TORCH_ARG(uint64_t, seed) = 0;
};

struct Holdout {
  /// Interaction rows left for training, ascending.
  torch::Tensor train_rows;
  /// [users, views] interaction rows held out: one row per chosen user,
  /// oldest view first. A group for BatchSpec::gather as it is.
  torch::Tensor valid_rows;
  /// [users] dense index of each chosen user, ascending.
  torch::Tensor valid_users;
};

/// Chooses round(fraction x eligible) users (at least one, at most
/// max_users) at random with `seed` and holds out their last `views` views.
/// Throws when no user has min_views views.
inline Holdout holdout_last_views(const Dataset& ds, const HoldoutOptions& options = {}) {
  if (options.views() < 1 || options.min_views() <= options.views())
    throw Error(detail::concat("holdout_last_views: need views >= 1 and min_views > views (each held-out user keeps "
                               "some training views), got views ", options.views(), ", min_views ",
                               options.min_views()));
  if (!(options.fraction() > 0 && options.fraction() <= 1) || options.max_users() < 1)
    throw Error(detail::concat("holdout_last_views: fraction must be in (0, 1] and max_users >= 1, got ",
                               options.fraction(), " and ", options.max_users()));
  const auto users = ds.interactions["user"].contiguous();
  const int64_t n = users.size(0), num_users = ds.num_users();
  const auto counts = torch::bincount(users, {}, num_users);
  const auto eligible = torch::nonzero(counts >= options.min_views()).view(-1);
  if (eligible.numel() == 0)
    throw Error(detail::concat("holdout_last_views: no user has ", options.min_views(),
                               " views (the most any user has: ", counts.max().item<int64_t>(),
                               "); lower min_views or views"));
  const int64_t chosen_count = std::clamp<int64_t>(
      static_cast<int64_t>(std::llround(options.fraction() * static_cast<double>(eligible.numel()))), 1,
      std::min(options.max_users(), eligible.numel()));
  auto gen = compat::make_generator(torch::kCPU, options.seed());
  const auto pick = torch::randperm(eligible.numel(), gen, torch::TensorOptions().dtype(torch::kInt64));
  const auto chosen = std::get<0>(eligible.index_select(0, pick.slice(0, 0, chosen_count)).sort());

  // Slot of each chosen user (-1 otherwise); walk rows newest first.
  std::vector<int64_t> slot(static_cast<size_t>(num_users), -1), taken(static_cast<size_t>(chosen_count), 0);
  const int64_t* c = chosen.data_ptr<int64_t>();
  for (int64_t k = 0; k < chosen_count; ++k) slot[static_cast<size_t>(c[k])] = k;
  const int64_t views = options.views();
  auto valid = torch::empty({chosen_count, views}, torch::kInt64);
  int64_t* v = valid.data_ptr<int64_t>();
  std::vector<uint8_t> held(static_cast<size_t>(n), 0);
  const int64_t* u = users.data_ptr<int64_t>();
  for (int64_t row = n - 1; row >= 0; --row) {
    const int64_t k = slot[static_cast<size_t>(u[row])];
    if (k < 0 || taken[static_cast<size_t>(k)] == views) continue;
    v[k * views + (views - 1 - taken[static_cast<size_t>(k)]++)] = row;
    held[static_cast<size_t>(row)] = 1;
  }
  auto keep = torch::empty({n - chosen_count * views}, torch::kInt64);
  int64_t* out = keep.data_ptr<int64_t>();
  for (int64_t row = 0; row < n; ++row)
    if (!held[static_cast<size_t>(row)]) *out++ = row;
  return {keep, valid, chosen};
}

/// A copy of `ds` whose interactions are only `rows` (ids, users, items and
/// candidates unchanged, so dense indices keep their meaning).
inline Dataset with_interactions(const Dataset& ds, const torch::Tensor& rows) {
  Dataset out = ds;
  out.interactions = ds.interactions.select(rows);
  return out;
}

/// A dataset split for training with validation: the held-out users' last
/// views in a dataset of their own, one group per user, and the rest.
struct HoldoutSplit {
  /// The interactions left for training (the rest of the dataset as it was).
  Dataset train;
  /// The held-out views only; valid_rows indexes its interactions.
  Dataset valid;
  /// [users, views] rows of valid.interactions: each held-out user's group,
  /// oldest view first (score_groups takes it as it is).
  torch::Tensor valid_rows;
  /// The held-out users' dense indices and the targets of their views, in
  /// the order of valid.interactions: gauc() of them against the scores.
  torch::Tensor valid_users, valid_targets;
};

/// Splits `ds` (taken: the training rows replace its interactions, so the
/// whole set is never held twice) with holdout_last_views. Throws when no
/// held-out user has two different targets among their held-out views:
/// validation GAUC would be undefined.
inline HoldoutSplit split_holdout(Dataset ds, const HoldoutOptions& options = {}) {
  Holdout holdout = holdout_last_views(ds, options);
  HoldoutSplit split;
  split.valid = with_interactions(ds, holdout.valid_rows.reshape(-1));
  split.valid_rows = torch::arange(split.valid.num_interactions()).view(holdout.valid_rows.sizes());
  split.valid_users = split.valid.interactions["user"];
  split.valid_targets = split.valid.interaction_targets();
  if (gauc_users(split.valid_users, split.valid_targets) == 0)
    throw Error(detail::concat("validation: none of the ", holdout.valid_users.numel(),
                               " held-out users has two different targets (like, neutral, dislike) in their last ",
                               options.views(), " views, so validation GAUC is undefined; hold out more users "
                               "(a larger fraction or max_users), or check the like and dislike columns"));
  split.train = std::move(ds);
  split.train.interactions = split.train.interactions.select(holdout.train_rows);
  return split;
}

} // namespace rectrain
