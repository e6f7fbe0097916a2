#pragma once
// Work over n rows split between the ranks of a ProcessGroup: each rank
// computes its contiguous share, and every rank gets all the results, in
// row order. Validation and candidate scoring run this way in a
// data-parallel run, so a metric over all users (GAUC) is the same on every
// rank and as in one process.
//
//   const auto scores = rectrain::compute_sharded(*group, rows, [&](int64_t first, int64_t count) {
//     return score_groups(model, spec, groups.narrow(0, first, count));
//   });

#include <rectrain/core/error.hpp>
#include <rectrain/dist/process_group.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <utility>

namespace rectrain {

/// This rank's contiguous share of `n` rows: {first, count}; shares differ
/// by at most one row, in rank order.
inline std::pair<int64_t, int64_t> rank_rows(int64_t n, int64_t rank, int64_t world_size) {
  const int64_t first = n * rank / world_size;
  return {first, n * (rank + 1) / world_size - first};
}

/// `compute(first, count)` on this rank's share of `n` rows (a tensor of
/// `count` rows, the rest of its shape the same on every rank), all ranks'
/// results concatenated in row order.
inline torch::Tensor compute_sharded(ProcessGroup& group, int64_t n,
                                     const std::function<torch::Tensor(int64_t first, int64_t count)>& compute,
                                     const std::string& what = "sharded results") {
  const auto [first, count] = rank_rows(n, group.rank(), group.world_size());
  auto mine = compute(first, count);
  if (!mine.defined() || mine.dim() < 1 || mine.size(0) != count)
    throw TensorError(detail::concat("compute_sharded: expected ", count, " rows from rows [", first, ", ",
                                     first + count, "), got ", detail::type_and_shape_of(mine)));
  const auto on_device = mine.to(group.device()).contiguous();
  return group.all_gather_rows(on_device, nullptr, "all-gather of the " + what).to(mine.device());
}

} // namespace rectrain
