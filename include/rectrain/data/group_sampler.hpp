#pragma once
// Group sampling: training batches shaped like the test (one user, G items).
// Each epoch shuffles every user's rows, cuts them into groups of G, drops
// short groups and groups whose targets are all equal (each optional),
// shuffles the groups and serves batches of B groups as [B, G] row indices
// (-1 pads short groups). Same (seed, epoch): same batches, whatever the
// thread count, and whatever epochs ran before.
//
// CPU tensors take a linear-time path: a counting sort by user once, then per
// epoch an inside-out Fisher-Yates per user with its own RNG stream, in
// parallel. CUDA tensors (or backend TensorOps) take a path built from
// LibTorch ops (randperm + stable sort), so sampling stays on the device.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace rectrain {

enum class SamplerBackend : uint8_t {
  Auto,       ///< Cpu for CPU tensors, TensorOps otherwise
  Cpu,        ///< linear-time loops over CPU memory
  TensorOps,  ///< LibTorch ops on the tensors' device
};

struct GroupSamplerOptions {
  /* implicit */ GroupSamplerOptions(int64_t group_size = 20) : group_size_(group_size) {}
  /// Rows per group (G).
  TORCH_ARG(int64_t, group_size);
  /// Groups per batch (B) for next_batch(); next(n) takes n instead.
  TORCH_ARG(int64_t, batch_size) = 256;
  /// Drop each user's last group when it has fewer than G rows; kept, it is
  /// padded with -1.
  TORCH_ARG(bool, drop_short) = true;
  /// Drop groups whose targets are all equal (they carry no ranking pair).
  TORCH_ARG(bool, drop_uniform) = true;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(SamplerBackend, backend) = SamplerBackend::Auto;
};

class GroupSampler : public torch::data::samplers::Sampler<torch::Tensor> {
 public:
  /// `users`: [N] int64 dense user index of every row (>= 0). `targets`:
  /// [N] integer target of every row; needed only when drop_uniform.
  /// Both on the same device, which is where batches are produced.
  GroupSampler(torch::Tensor users, torch::Tensor targets, GroupSamplerOptions options = {})
      : options_(std::move(options)) {
    if (options_.group_size() < 1)
      throw Error(detail::concat("GroupSampler: group_size must be >= 1, got ",
                                 options_.group_size()));
    if (options_.batch_size() < 1)
      throw Error(detail::concat("GroupSampler: batch_size must be >= 1, got ",
                                 options_.batch_size()));
    if (!users.defined() || users.dim() != 1 || users.scalar_type() != torch::kInt64)
      throw TensorError(detail::concat("GroupSampler users: expected a 1-D int64 tensor, got ",
                                       users.defined() ? users.toString() : "undefined", " ",
                                       users.defined() ? users.sizes() : at::IntArrayRef{}));
    if (options_.drop_uniform()) {
      if (!targets.defined() || targets.dim() != 1 || targets.size(0) != users.size(0) ||
          at::isFloatingType(targets.scalar_type()))
        throw TensorError(detail::concat(
            "GroupSampler targets: expected a 1-D integer tensor of ", users.size(0),
            " rows (drop_uniform needs them), got ",
            targets.defined() ? detail::concat(targets.toString(), " ", targets.sizes())
                              : std::string("undefined")));
      if (targets.device() != users.device())
        throw TensorError("GroupSampler: users and targets must be on the same device");
    }
    device_ = users.device();
    rows_ = users.size(0);
    if (rows_ > 0 && users.min().item<int64_t>() < 0)
      throw TensorError("GroupSampler users: dense user indices must be >= 0 (unknown users, -1, "
                        "cannot be grouped)");
    use_cpu_ = options_.backend() == SamplerBackend::Cpu ||
               (options_.backend() == SamplerBackend::Auto && device_.is_cpu());
    if (use_cpu_ && !device_.is_cpu())
      throw TensorError("GroupSampler: backend Cpu needs CPU tensors");
    if (use_cpu_ && rows_ >= std::numeric_limits<int32_t>::max())
      throw TensorError(detail::concat("GroupSampler: ", rows_,
                                       " rows exceed the CPU path's 2^31 - 1 row limit"));
    const int64_t users_count = rows_ > 0 ? users.max().item<int64_t>() + 1 : 0;
    if (users_count > 64 * rows_ + (int64_t{1} << 20))
      throw TensorError(detail::concat(
          "GroupSampler users: expected dense user indices 0..n-1, but the largest is ", users_count - 1,
          " for ", rows_, " rows; remap raw ids first (Dataset does; or IdMap::encode)"));
    counts_ = torch::bincount(users, {}, users_count).to(torch::kInt64);
    const int64_t longest = rows_ > 0 ? counts_.max().item<int64_t>() : 0;
    if (options_.drop_short() && longest < options_.group_size())
      throw Error(detail::concat(
          "GroupSampler: group_size ", options_.group_size(),
          " is larger than every user's history (longest: ", longest,
          " rows), so drop_short would drop every group; lower group_size or "
          "set drop_short(false)"));
    if (use_cpu_)
      build_cpu_index(users.contiguous(), options_.drop_uniform() ? targets : torch::Tensor());
    else {
      users_ = users;
      if (options_.drop_uniform()) targets_ = targets.to(torch::kInt64);
    }
  }

  const GroupSamplerOptions& options() const noexcept { return options_; }
  torch::Device device() const noexcept { return device_; }
  /// The epoch prepared, -1 before the first.
  int64_t epoch() const noexcept { return epoch_; }
  /// Groups in the prepared epoch.
  int64_t num_groups() const noexcept { return groups_; }
  /// Batches of `options().batch_size()` groups in the prepared epoch.
  int64_t num_batches() const noexcept {
    return (groups_ + options_.batch_size() - 1) / options_.batch_size();
  }
  /// Bytes of sampling state held besides the input tensors (CPU path: ~9
  /// per row plus 8 per group slot; tensor-ops path: the epoch's [groups, G]
  /// index matrix).
  int64_t state_bytes() const noexcept {
    if (!use_cpu_) return epoch_groups_.defined() ? epoch_groups_.numel() * 8 : 0;
    return static_cast<int64_t>((base_order_.capacity() + epoch_order_.capacity() + group_start_.capacity() +
                                 group_length_.capacity()) * sizeof(int32_t) +
                                base_targets_.capacity() +
                                (offsets_.capacity() + group_offsets_.capacity()) * sizeof(int64_t));
  }

  /// Groups already served in this epoch.
  int64_t position() const noexcept { return cursor_; }

  /// Prepares `epoch` and rewinds to its first batch.
  void set_epoch(int64_t epoch) {
    if (epoch < 0) throw Error(detail::concat("GroupSampler: epoch must be >= 0, got ", epoch));
    epoch_ = epoch;
    cursor_ = 0;
    if (use_cpu_)
      prepare_cpu_epoch();
    else
      prepare_tensor_epoch();
  }

  /// torch::data hook: moves on to the next epoch (the first call prepares
  /// epoch 0). The dataset size is fixed by `users`; a new size throws.
  void reset(compat::optional<size_t> new_size = compat::nullopt) override {
    if (new_size.has_value() && static_cast<int64_t>(*new_size) != rows_)
      throw Error("GroupSampler: the number of rows is fixed by the users tensor");
    set_epoch(epoch_ + 1);
  }

  /// The next `batch_size` groups as [b, G] int64 row indices on device(),
  /// -1 marking padding; nullopt at the end of the epoch.
  compat::optional<torch::Tensor> next(size_t batch_size) override {
    if (epoch_ < 0) set_epoch(0);
    if (cursor_ >= groups_) return compat::nullopt;
    const int64_t b = std::min<int64_t>(static_cast<int64_t>(batch_size), groups_ - cursor_);
    torch::Tensor out = use_cpu_ ? cpu_batch(cursor_, b) : epoch_groups_.slice(0, cursor_, cursor_ + b);
    cursor_ += b;
    return out;
  }

  /// next(options().batch_size()).
  compat::optional<torch::Tensor> next_batch() {
    return next(static_cast<size_t>(options_.batch_size()));
  }

  /// Saves seed-independent progress: the epoch and the position in it.
  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("epoch", torch::tensor(epoch_, torch::kInt64), /*is_buffer=*/true);
    archive.write("cursor", torch::tensor(cursor_, torch::kInt64), /*is_buffer=*/true);
  }

  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor epoch, cursor;
    archive.read("epoch", epoch, /*is_buffer=*/true);
    archive.read("cursor", cursor, /*is_buffer=*/true);
    const int64_t e = epoch.item<int64_t>();
    if (e >= 0) set_epoch(e);
    else epoch_ = -1;
    cursor_ = std::min(cursor.item<int64_t>(), groups_);
  }

 private:
  // ---- CPU path -----------------------------------------------------------

  void build_cpu_index(const torch::Tensor& users, const torch::Tensor& targets) {
    const int64_t users_count = counts_.numel();
    const int64_t* user = users.data_ptr<int64_t>();
    const int64_t* count = counts_.data_ptr<int64_t>();
    offsets_.assign(static_cast<size_t>(users_count + 1), 0);
    group_offsets_.assign(static_cast<size_t>(users_count + 1), 0);
    const int64_t g = options_.group_size();
    for (int64_t u = 0; u < users_count; ++u) {
      offsets_[static_cast<size_t>(u + 1)] = offsets_[static_cast<size_t>(u)] + count[u];
      const int64_t slots = options_.drop_short() ? count[u] / g : (count[u] + g - 1) / g;
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

  void prepare_cpu_epoch() {
    const int64_t g = options_.group_size();
    const bool drop_short = options_.drop_short(), drop_uniform = options_.drop_uniform();
    const uint64_t seed = options_.seed();
    const uint64_t epoch = static_cast<uint64_t>(epoch_);
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
          detail::FastRng rng(detail::stream_seed(seed, epoch, static_cast<uint64_t>(u)));
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
    groups_ = kept;
    detail::FastRng rng(detail::stream_seed(seed, epoch, ~uint64_t{0}));
    for (int64_t i = kept - 1; i > 0; --i) {
      const uint32_t j = rng.below(static_cast<uint32_t>(i + 1));
      std::swap(start[i], start[j]);
      std::swap(length[i], length[j]);
    }
  }

  torch::Tensor cpu_batch(int64_t first, int64_t count) const {
    const int64_t g = options_.group_size();
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

  // ---- Tensor-ops path (any device) ---------------------------------------

  void prepare_tensor_epoch() {
    const int64_t g = options_.group_size();
    const auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    auto gen = compat::make_generator(device_,
                                      detail::stream_seed(options_.seed(), static_cast<uint64_t>(epoch_)));
    // Random order, then a stable sort by user: each user's rows end up
    // contiguous and uniformly shuffled.
    const auto perm = torch::randperm(rows_, gen, long_opts);
    const auto sorted = torch::sort(users_.index_select(0, perm), /*stable=*/compat::optional<bool>(true), /*dim=*/0);
    const auto order = perm.index_select(0, std::get<1>(sorted));

    const auto counts = counts_.to(device_);
    const auto offsets = torch::cumsum(counts, 0) - counts;
    const auto groups_per_user =
        options_.drop_short() ? torch::div(counts, g, "floor") : torch::div(counts + g - 1, g, "floor");
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
    if (options_.drop_uniform()) {
      const auto t = targets_.index_select(0, rows.clamp_min(0).view(-1)).view({total, g});
      const auto big = std::numeric_limits<int64_t>::max();
      const auto lo = torch::where(valid, t, torch::full_like(t, big)).amin(1);
      const auto hi = torch::where(valid, t, torch::full_like(t, -big)).amax(1);
      keep = lo != hi;
    }
    const auto kept = torch::nonzero(keep).view(-1);
    const auto shuffled = kept.index_select(0, torch::randperm(kept.numel(), gen, long_opts));
    epoch_groups_ = rows.index_select(0, shuffled);
    groups_ = epoch_groups_.size(0);
  }

  GroupSamplerOptions options_;
  torch::Device device_{torch::kCPU};
  bool use_cpu_ = true;
  int64_t rows_ = 0;
  int64_t epoch_ = -1;
  int64_t cursor_ = 0;
  int64_t groups_ = 0;
  torch::Tensor counts_;  // rows per user, CPU

  // CPU path: ~9 bytes per row (base order, its targets, epoch order) plus
  // 8 bytes per group slot.
  std::vector<int64_t> offsets_, group_offsets_, part_bounds_;
  std::vector<int32_t> base_order_, epoch_order_, group_start_, group_length_;
  std::vector<int8_t> base_targets_;

  // Tensor-ops path.
  torch::Tensor users_, targets_, epoch_groups_;
};

} // namespace rectrain
