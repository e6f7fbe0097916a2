#pragma once
// Internals shared by the per-user view structures (ViewHistory,
// ContentAffinity): the checks every view log needs before it is indexed,
// and the stable counting sort that groups its rows by a key. Rows are
// stored as int32, hence the 2^31 bound.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

namespace rectrain {
namespace detail {

/// A view log's user and item columns as contiguous int64 CPU tensors.
struct ViewIndices {
  torch::Tensor users, items;
};

/// Checks that `users` and `items` are [N] integer indices in
/// [0, num_users) and [0, num_items), N below 2^31 - 1; `who` names the
/// caller in the error. Returns them as int64.
inline ViewIndices checked_view_indices(const char* who, const torch::Tensor& users, const torch::Tensor& items,
                                        int64_t num_users, int64_t num_items) {
  if (num_users < 0 || num_items < 0)
    throw Error(concat(who, ": num_users and num_items must be >= 0, got ", num_users, " and ", num_items));
  for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor*>{"users", &users}, {"items", &items}})
    if (!t->defined() || t->dim() != 1 || at::isFloatingType(t->scalar_type()))
      throw TensorError(concat(who, ": ", name, " must be [N] integer indices, got ", type_and_shape_of(*t)));
  const int64_t n = users.numel();
  if (items.numel() != n)
    throw TensorError(concat(who, ": items must be [", n, "] like users, got ", shape_of(items)));
  if (n >= std::numeric_limits<int32_t>::max())
    throw Error(concat(who, ": ", n, " views; at most 2^31 - 2 are supported"));
  ViewIndices v{users.to(torch::kCPU, torch::kInt64).contiguous(), items.to(torch::kCPU, torch::kInt64).contiguous()};
  for (const auto& [name, t, bound] : {std::tuple<const char*, const torch::Tensor*, int64_t>{"users", &v.users, num_users},
                                       {"items", &v.items, num_items}}) {
    if (n == 0 || (t->min().item<int64_t>() >= 0 && t->max().item<int64_t>() < bound)) continue;
    const int64_t row = ((*t < 0) | (*t >= bound)).nonzero()[0][0].item<int64_t>();
    throw TensorError(concat(who, ": ", name, " must be in [0, ", bound, "), got ", (*t)[row].item<int64_t>(),
                             " at row ", row));
  }
  return v;
}

/// Stable counting sort of rows [0, n) by key(row) in [0, keys): `offsets`
/// gets [keys + 1] segment starts, `rows` the row indices, each segment in
/// row order.
template <class KeyOfRow>
void group_rows_by_key(int64_t n, int64_t keys, KeyOfRow key, std::vector<int64_t>& offsets,
                       std::vector<int32_t>& rows) {
  offsets.assign(static_cast<size_t>(keys + 1), 0);
  for (int64_t r = 0; r < n; ++r) ++offsets[static_cast<size_t>(key(r) + 1)];
  for (size_t k = 1; k < offsets.size(); ++k) offsets[k] += offsets[k - 1];
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  rows.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) rows[static_cast<size_t>(next[static_cast<size_t>(key(r))]++)] = static_cast<int32_t>(r);
}

} // namespace detail
} // namespace rectrain
