#pragma once
// The two ways GroupSampler (group_sampler.hpp) builds an epoch's groups,
// behind one interface: linear-time loops over CPU memory (a counting sort
// by user once, then per epoch an inside-out Fisher-Yates per user with its
// own RNG stream, in parallel), or LibTorch ops on the tensors' device
// (randperm + stable sort), so sampling stays on a GPU. Internals: use
// GroupSampler.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/random.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace rectrain {
namespace detail {

/// The rows per group and what to drop, as GroupSamplerOptions says.
struct GroupRules {
  int64_t group_size;
  bool drop_short;
  bool drop_uniform;
};

class GroupIndex {
 public:
  virtual ~GroupIndex() = default;
  /// Builds the groups of (seed, epoch); returns how many there are.
  virtual int64_t prepare(uint64_t seed, uint64_t epoch) = 0;
  /// Groups [first, first + count) of the prepared epoch as [count, G]
  /// int64 row indices, -1 padding.
  virtual torch::Tensor groups(int64_t first, int64_t count) const = 0;
  /// Bytes held besides the input tensors.
  virtual int64_t state_bytes() const = 0;
};

/// CPU tensors: ~9 bytes per row (base order, its targets, epoch order)
/// plus 8 per group slot.
class CpuGroupIndex : public GroupIndex {
 public:
  /// `users` [N] contiguous int64 >= 0; `counts` rows per user; `targets`
  /// [N] integer, or undefined without drop_uniform.
  CpuGroupIndex(const torch::Tensor& users, const torch::Tensor& targets, torch::Tensor counts, GroupRules rules)
      : rules_(rules), rows_(users.size(0)), counts_(std::move(counts)) {
    build(users, targets);
  }

  int64_t state_bytes() const override {
    return static_cast<int64_t>((base_order_.capacity() + epoch_order_.capacity() + group_start_.capacity() +
                                 group_length_.capacity()) * sizeof(int32_t) +
                                base_targets_.capacity() +
                                (offsets_.capacity() + group_offsets_.capacity()) * sizeof(int64_t));
  }

  void build(const torch::Tensor& users, const torch::Tensor& targets) {
    const int64_t users_count = counts_.numel();
    const int64_t* user = users.data_ptr<int64_t>();
    const int64_t* count = counts_.data_ptr<int64_t>();
    offsets_.assign(static_cast<size_t>(users_count + 1), 0);
    group_offsets_.assign(static_cast<size_t>(users_count + 1), 0);
    const int64_t g = rules_.group_size;
    for (int64_t u = 0; u < users_count; ++u) {
      offsets_[static_cast<size_t>(u + 1)] = offsets_[static_cast<size_t>(u)] + count[u];
      const int64_t slots = rules_.drop_short ? count[u] / g : (count[u] + g - 1) / g;
      group_offsets_[static_cast<size_t>(u + 1)] = group_offsets_[static_cast<size_t>(u)] + slots;
    }
    // Counting sort by user, stable: rows of a user stay in file order.
    base_order_.resize(static_cast<size_t>(rows_));
    std::vector<int64_t> next(offsets_.begin(), offsets_.end() - 1);
    for (int64_t r = 0; r < rows_; ++r)
      base_order_[static_cast<size_t>(next[static_cast<size_t>(user[r])]++)] =
          static_cast<int32_t>(r);
    if (targets.defined()) {
      const auto t = targets.to(torch::kInt8).contiguous();
      const int8_t* tp = t.data_ptr<int8_t>();
      base_targets_.resize(static_cast<size_t>(rows_));
      for (int64_t i = 0; i < rows_; ++i)
        base_targets_[static_cast<size_t>(i)] = tp[base_order_[static_cast<size_t>(i)]];
    }
    epoch_order_.resize(static_cast<size_t>(rows_));
    const int64_t slots = group_offsets_.back();
    group_start_.resize(static_cast<size_t>(slots));
    group_length_.resize(static_cast<size_t>(slots));
    // Work split by rows, not users: histories are heavy-tailed.
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(users_count, 256));
    part_bounds_.assign(1, 0);
    for (int64_t k = 1; k < parts; ++k) {
      const int64_t target_row = rows_ * k / parts;
      const auto it = std::lower_bound(offsets_.begin(), offsets_.end(), target_row);
      part_bounds_.push_back(std::max<int64_t>(part_bounds_.back(), it - offsets_.begin()));
    }
    part_bounds_.push_back(users_count);
  }

  int64_t prepare(uint64_t seed, uint64_t epoch) override {
    const int64_t g = rules_.group_size;
    const bool drop_short = rules_.drop_short, drop_uniform = rules_.drop_uniform;
    const int64_t parts = static_cast<int64_t>(part_bounds_.size()) - 1;
    const int32_t* base = base_order_.data();
    const int8_t* base_t = base_targets_.data();
    int32_t* order = epoch_order_.data();
    int32_t* start = group_start_.data();
    int32_t* length = group_length_.data();
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      std::vector<int8_t> shuffled_targets;
      for (int64_t part = begin; part < end; ++part) {
        for (int64_t u = part_bounds_[static_cast<size_t>(part)];
             u < part_bounds_[static_cast<size_t>(part + 1)]; ++u) {
          const int64_t off = offsets_[static_cast<size_t>(u)];
          const int64_t n = offsets_[static_cast<size_t>(u + 1)] - off;
          if (n == 0) continue;
          FastRng rng(stream_seed(seed, epoch, static_cast<uint64_t>(u)));
          int32_t* out = order + off;
          // Inside-out Fisher-Yates: one pass, reading the base order.
          if (drop_uniform) {
            shuffled_targets.resize(static_cast<size_t>(n));
            int8_t* tout = shuffled_targets.data();
            for (int64_t i = 0; i < n; ++i) {
              const uint32_t j = rng.below(static_cast<uint32_t>(i + 1));
              out[i] = out[j];
              tout[i] = tout[j];
              out[j] = base[off + i];
              tout[j] = base_t[off + i];
            }
          } else {
            for (int64_t i = 0; i < n; ++i) {
              const uint32_t j = rng.below(static_cast<uint32_t>(i + 1));
              out[i] = out[j];
              out[j] = base[off + i];
            }
          }
          int64_t slot = group_offsets_[static_cast<size_t>(u)];
          for (int64_t first = 0; first < n; first += g) {
            const int64_t len = std::min(g, n - first);
            if (len < g && drop_short) break;
            bool keep = true;
            if (drop_uniform) {
              const int8_t* t = shuffled_targets.data() + first;
              keep = false;
              for (int64_t k = 1; k < len; ++k)
                if (t[k] != t[0]) {
                  keep = true;
                  break;
                }
            }
            start[slot] = keep ? static_cast<int32_t>(off + first) : -1;
            length[slot] = static_cast<int32_t>(len);
            ++slot;
          }
        }
      }
    });
    // Compact the kept groups, then shuffle them.
    const int64_t slots = group_offsets_.back();
    int64_t kept = 0;
    for (int64_t s = 0; s < slots; ++s)
      if (start[s] >= 0) {
        start[kept] = start[s];
        length[kept] = length[s];
        ++kept;
      }
    FastRng rng(stream_seed(seed, epoch, ~uint64_t{0}));
    for (int64_t i = kept - 1; i > 0; --i) {
      const uint32_t j = rng.below(static_cast<uint32_t>(i + 1));
      std::swap(start[i], start[j]);
      std::swap(length[i], length[j]);
    }
    return kept;
  }

  torch::Tensor groups(int64_t first, int64_t count) const override {
    const int64_t g = rules_.group_size;
    auto out = torch::empty({count, g}, torch::kInt64);
    int64_t* dst = out.data_ptr<int64_t>();
    for (int64_t b = 0; b < count; ++b) {
      const int32_t* src = epoch_order_.data() + group_start_[static_cast<size_t>(first + b)];
      const int64_t len = group_length_[static_cast<size_t>(first + b)];
      int64_t* row = dst + b * g;
      for (int64_t k = 0; k < len; ++k) row[k] = src[k];
      for (int64_t k = len; k < g; ++k) row[k] = -1;
    }
    return out;
  }

 private:
  GroupRules rules_;
  int64_t rows_;
  torch::Tensor counts_;
  std::vector<int64_t> offsets_, group_offsets_, part_bounds_;
  std::vector<int32_t> base_order_, epoch_order_, group_start_, group_length_;
  std::vector<int8_t> base_targets_;
};

/// Any device: the epoch's [groups, G] index matrix, built by LibTorch ops.
class TensorGroupIndex : public GroupIndex {
 public:
  TensorGroupIndex(torch::Tensor users, const torch::Tensor& targets, torch::Tensor counts, GroupRules rules)
      : rules_(rules), device_(users.device()), rows_(users.size(0)), counts_(std::move(counts)),
        users_(std::move(users)) {
    if (rules_.drop_uniform) targets_ = targets.to(torch::kInt64);
  }

  int64_t state_bytes() const override { return epoch_groups_.defined() ? epoch_groups_.numel() * 8 : 0; }

  int64_t prepare(uint64_t seed, uint64_t epoch) override {
    const int64_t g = rules_.group_size;
    const auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    auto gen = compat::make_generator(device_,
                                      stream_seed(seed, epoch));
    // Random order, then a stable sort by user: each user's rows end up
    // contiguous and uniformly shuffled.
    const auto perm = torch::randperm(rows_, gen, long_opts);
    const auto sorted = torch::sort(users_.index_select(0, perm), /*stable=*/compat::optional<bool>(true), /*dim=*/0);
    const auto order = perm.index_select(0, std::get<1>(sorted));

    const auto counts = counts_.to(device_);
    const auto offsets = torch::cumsum(counts, 0) - counts;
    const auto groups_per_user =
        rules_.drop_short ? torch::div(counts, g, "floor") : torch::div(counts + g - 1, g, "floor");
    const int64_t total = groups_per_user.sum().item<int64_t>();
    const auto group_user =
        torch::repeat_interleave(torch::arange(counts.numel(), long_opts), groups_per_user);
    const auto group_offsets = torch::cumsum(groups_per_user, 0) - groups_per_user;
    const auto local = torch::arange(total, long_opts) - group_offsets.index_select(0, group_user);
    const auto start = offsets.index_select(0, group_user) + local * g;
    const auto length = torch::clamp_max(counts.index_select(0, group_user) - local * g, g);

    const auto columns = torch::arange(g, long_opts).unsqueeze(0);
    const auto valid = columns < length.unsqueeze(1);
    const auto positions = torch::where(valid, start.unsqueeze(1) + columns, torch::zeros_like(columns));
    auto rows = order.index_select(0, positions.view(-1)).view({total, g});
    rows = torch::where(valid, rows, torch::full_like(rows, -1));

    auto keep = torch::ones({total}, torch::TensorOptions().dtype(torch::kBool).device(device_));
    if (rules_.drop_uniform) {
      const auto t = targets_.index_select(0, rows.clamp_min(0).view(-1)).view({total, g});
      const auto big = std::numeric_limits<int64_t>::max();
      const auto lo = torch::where(valid, t, torch::full_like(t, big)).amin(1);
      const auto hi = torch::where(valid, t, torch::full_like(t, -big)).amax(1);
      keep = lo != hi;
    }
    const auto kept = torch::nonzero(keep).view(-1);
    const auto shuffled = kept.index_select(0, torch::randperm(kept.numel(), gen, long_opts));
    epoch_groups_ = rows.index_select(0, shuffled);
    return epoch_groups_.size(0);
  }

  torch::Tensor groups(int64_t first, int64_t count) const override {
    return epoch_groups_.slice(0, first, first + count);
  }

 private:
  GroupRules rules_;
  torch::Device device_;
  int64_t rows_;
  torch::Tensor counts_, users_, targets_, epoch_groups_;
};

} // namespace detail
} // namespace rectrain
