#pragma once
// Group sampling: training batches shaped like the test (one user, G items).
// Each epoch shuffles every user's rows, cuts them into groups of G, drops
// short groups and groups whose targets are all equal (each optional),
// shuffles the groups and serves batches of B groups as [B, G] row indices
// (-1 pads short groups). Same (seed, epoch): same batches, whatever the
// thread count, and whatever epochs ran before.
//
// CPU tensors take a linear-time path, CUDA tensors (or backend TensorOps)
// one built from LibTorch ops, so sampling stays on the device: two index
// implementations (group_index.hpp) behind this one front.
//
// A BatchSampler (batch_sampler.hpp) for BatchPipeline and train_epoch,
// and a torch::data sampler of RowBlocks for torch::data's loaders (with
// BatchSpecDataset, batch_dataset.hpp).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch_sampler.hpp>
#include <rectrain/data/group_index.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <memory>

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

class GroupSampler : public torch::data::samplers::Sampler<RowBlock>, public BatchSampler {
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
      throw TensorError(
          detail::concat("GroupSampler users: expected a 1-D int64 tensor, got ", detail::type_and_shape_of(users)));
    if (options_.drop_uniform()) {
      if (!targets.defined() || targets.dim() != 1 || targets.size(0) != users.size(0) ||
          at::isFloatingType(targets.scalar_type()))
        throw TensorError(detail::concat(
            "GroupSampler targets: expected a 1-D integer tensor of ", users.size(0),
            " rows (drop_uniform needs them), got ",
            detail::type_and_shape_of(targets)));
      if (targets.device() != users.device())
        throw TensorError("GroupSampler: users and targets must be on the same device");
    }
    device_ = users.device();
    rows_ = users.size(0);
    if (rows_ > 0 && users.min().item<int64_t>() < 0)
      throw TensorError("GroupSampler users: dense user indices must be >= 0 (unknown users, -1, "
                        "cannot be grouped)");
    const bool use_cpu = options_.backend() == SamplerBackend::Cpu ||
                         (options_.backend() == SamplerBackend::Auto && device_.is_cpu());
    if (use_cpu && !device_.is_cpu())
      throw TensorError("GroupSampler: backend Cpu needs CPU tensors");
    if (use_cpu && rows_ >= std::numeric_limits<int32_t>::max())
      throw TensorError(detail::concat("GroupSampler: ", rows_,
                                       " rows exceed the CPU path's 2^31 - 1 row limit"));
    const int64_t users_count = rows_ > 0 ? users.max().item<int64_t>() + 1 : 0;
    if (users_count > 64 * rows_ + (int64_t{1} << 20))
      throw TensorError(detail::concat(
          "GroupSampler users: expected dense user indices 0..n-1, but the largest is ", users_count - 1,
          " for ", rows_, " rows; remap raw ids first (Dataset does; or IdMap::encode)"));
    auto counts = torch::bincount(users, {}, users_count).to(torch::kInt64);
    const int64_t longest = rows_ > 0 ? counts.max().item<int64_t>() : 0;
    if (options_.drop_short() && longest < options_.group_size())
      throw Error(detail::concat(
          "GroupSampler: group_size ", options_.group_size(),
          " is larger than every user's history (longest: ", longest,
          " rows), so drop_short would drop every group; lower group_size or "
          "set drop_short(false)"));
    const detail::GroupRules rules{options_.group_size(), options_.drop_short(), options_.drop_uniform()};
    if (!options_.drop_uniform()) targets = torch::Tensor();
    if (use_cpu)
      index_ = std::make_unique<detail::CpuGroupIndex>(users.contiguous(), targets, std::move(counts), rules);
    else
      index_ = std::make_unique<detail::TensorGroupIndex>(users, targets, std::move(counts), rules);
  }

  const GroupSamplerOptions& options() const noexcept { return options_; }
  torch::Device device() const noexcept { return device_; }
  /// The epoch prepared, -1 before the first.
  int64_t epoch() const noexcept override { return epoch_; }
  /// Groups in the prepared epoch.
  int64_t num_groups() const noexcept { return groups_; }
  /// Changes the groups per batch (a trainer that sizes its batches from
  /// num_groups()); takes effect at the next batch.
  void set_batch_size(int64_t groups) {
    if (groups < 1) throw Error(detail::concat("GroupSampler: batch_size must be >= 1, got ", groups));
    options_.batch_size(groups);
  }
  /// Batches of `options().batch_size()` groups in the prepared epoch.
  int64_t num_batches() const noexcept override {
    return (groups_ + options_.batch_size() - 1) / options_.batch_size();
  }
  /// Bytes of sampling state held besides the input tensors (CPU path: ~9
  /// per row plus 8 per group slot; tensor-ops path: the epoch's [groups, G]
  /// index matrix).
  int64_t state_bytes() const noexcept { return index_->state_bytes(); }

  /// Groups already served in this epoch.
  int64_t position() const noexcept { return cursor_; }

  /// Prepares `epoch` and rewinds to its first batch.
  void set_epoch(int64_t epoch) override {
    if (epoch < 0) throw Error(detail::concat("GroupSampler: epoch must be >= 0, got ", epoch));
    epoch_ = epoch;
    cursor_ = 0;
    groups_ = index_->prepare(options_.seed(), static_cast<uint64_t>(epoch));
  }

  /// torch::data hook: moves on to the next epoch (the first call prepares
  /// epoch 0). The dataset size is fixed by `users`; a new size throws.
  void reset(compat::optional<size_t> new_size = compat::nullopt) override {
    if (new_size.has_value() && static_cast<int64_t>(*new_size) != rows_)
      throw Error("GroupSampler: the number of rows is fixed by the users tensor");
    set_epoch(epoch_ + 1);
  }

  /// The next `groups` groups as [b, G] int64 row indices on device(), -1
  /// marking padding; nullopt at the end of the epoch.
  compat::optional<torch::Tensor> next_groups(int64_t groups) {
    if (groups < 1) throw Error(detail::concat("GroupSampler: groups per batch must be >= 1, got ", groups));
    if (epoch_ < 0) set_epoch(0);
    if (cursor_ >= groups_) return compat::nullopt;
    const int64_t b = std::min<int64_t>(groups, groups_ - cursor_);
    torch::Tensor out = index_->groups(cursor_, b);
    cursor_ += b;
    return out;
  }

  /// next_groups(options().batch_size()).
  compat::optional<torch::Tensor> next_batch() override { return next_groups(options_.batch_size()); }

  /// torch::data hook: next_groups(batch_size) as a RowBlock.
  compat::optional<RowBlock> next(size_t batch_size) override {
    auto rows = next_groups(static_cast<int64_t>(batch_size));
    if (!rows) return compat::nullopt;
    return RowBlock{std::move(*rows)};
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
  GroupSamplerOptions options_;
  torch::Device device_{torch::kCPU};
  int64_t rows_ = 0;
  int64_t epoch_ = -1;
  int64_t cursor_ = 0;
  int64_t groups_ = 0;
  std::unique_ptr<detail::GroupIndex> index_;
};

} // namespace rectrain
