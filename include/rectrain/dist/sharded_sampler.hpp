#pragma once
// ShardedSampler: one rank's share of a GroupSampler's epoch, without any
// communication. Every rank runs the same GroupSampler (same seed, so the
// same shuffled groups); each step takes the next world_size × B groups of
// that order (a global batch) and this rank keeps its contiguous part of
// them. So for (seed, epoch, world size) the batches are fixed, every rank
// has the same number of them, and over the ranks an epoch covers every
// group exactly once, as one process with batches of world_size × B
// groups would see them.
//
// The last step of an epoch may hold fewer groups; its groups are split
// as evenly as the count allows (shares differ by at most one group), and
// when it holds fewer groups than there are ranks it joins the step before
// it, so that no rank gets an empty batch. share_of_batch() says what part
// of a step's groups this rank had: DataParallel weighs each rank's
// gradient by it, so an uneven step still gives the gradient of the step's
// mean loss over all its groups.

#include <rectrain/core/error.hpp>
#include <rectrain/data/batch_sampler.hpp>
#include <rectrain/data/group_sampler.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>

namespace rectrain {

class ShardedSampler : public BatchSampler {
 public:
  /// `sampler`'s batch_size is the groups per rank per step (B); it must
  /// outlive this object and be used through it only.
  ShardedSampler(GroupSampler& sampler, int64_t rank, int64_t world_size)
      : sampler_(sampler), rank_(rank), world_size_(world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw Error(detail::concat("ShardedSampler: rank must be in 0..world_size-1, got rank ", rank,
                                 " of world size ", world_size));
  }

  int64_t rank() const noexcept { return rank_; }
  int64_t world_size() const noexcept { return world_size_; }
  /// Groups per step over all ranks (world_size × B), but for an epoch's
  /// last step (see above).
  int64_t global_batch_size() const noexcept { return world_size_ * sampler_.options().batch_size(); }
  /// Groups in the prepared epoch, over all ranks.
  int64_t num_groups() const noexcept { return sampler_.num_groups(); }

  void set_epoch(int64_t epoch) override {
    sampler_.set_epoch(epoch);
    plan();
    step_ = 0;
  }
  int64_t epoch() const override { return sampler_.epoch(); }
  int64_t num_batches() const override { return steps_; }

  /// [first, first + count) of step `batch`'s groups in the global order,
  /// and this rank's part of them.
  struct Step {
    int64_t first = 0, count = 0;          ///< the step's groups, all ranks
    int64_t local_first = 0, local_count = 0;  ///< this rank's
  };
  Step step(int64_t batch) const {
    if (batch < 0 || batch >= steps_)
      throw Error(detail::concat("ShardedSampler: batch ", batch, " is not in the epoch's ", steps_, " batches"));
    Step s;
    const int64_t size = global_batch_size();
    s.first = batch * size;
    s.count = batch + 1 == steps_ ? groups_ - s.first : size;
    const int64_t begin = s.count * rank_ / world_size_, end = s.count * (rank_ + 1) / world_size_;
    s.local_first = s.first + begin;
    s.local_count = end - begin;
    return s;
  }
  /// This rank's share of step `batch`'s groups (1 / world_size when even).
  double share_of_batch(int64_t batch) const {
    const Step s = step(batch);
    return static_cast<double>(s.local_count) / static_cast<double>(s.count);
  }

  compat::optional<torch::Tensor> next_batch() override {
    if (sampler_.epoch() < 0) set_epoch(0);
    if (step_ >= steps_) return compat::nullopt;
    const Step s = step(step_++);
    auto block = sampler_.next_groups(s.count);
    if (!block || block->size(0) != s.count)
      throw Error("ShardedSampler: the group sampler was advanced outside this sampler");
    return block->narrow(0, s.local_first - s.first, s.local_count);
  }

  /// The epoch and the step; the group sampler's position follows from them.
  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("epoch", torch::tensor(sampler_.epoch(), torch::kInt64), /*is_buffer=*/true);
    archive.write("step", torch::tensor(step_, torch::kInt64), /*is_buffer=*/true);
    archive.write("world_size", torch::tensor(world_size_, torch::kInt64), /*is_buffer=*/true);
  }

  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor epoch, step, world;
    archive.read("epoch", epoch, /*is_buffer=*/true);
    archive.read("step", step, /*is_buffer=*/true);
    archive.read("world_size", world, /*is_buffer=*/true);
    if (world.item<int64_t>() != world_size_ && step.item<int64_t>() > 0)
      throw Error(detail::concat("ShardedSampler: the checkpoint stopped mid-epoch with ", world.item<int64_t>(),
                                 " ranks; it can resume only with as many (this run has ", world_size_, ")"));
    const int64_t e = epoch.item<int64_t>();
    if (e < 0) {  // saved before the first epoch: next_batch() starts epoch 0
      step_ = steps_ = 0;
      return;
    }
    set_epoch(e);
    const int64_t target = std::min(step.item<int64_t>(), steps_);
    while (step_ < target) next_batch();
  }

 private:
  void plan() {
    groups_ = sampler_.num_groups();
    if (groups_ < world_size_)
      throw Error(detail::concat("ShardedSampler: epoch ", sampler_.epoch(), " has ", groups_,
                                 " groups, fewer than the ", world_size_,
                                 " ranks; every rank needs at least one group per step"));
    const int64_t size = global_batch_size();
    steps_ = (groups_ + size - 1) / size;
    const int64_t last = groups_ - (steps_ - 1) * size;
    if (last < world_size_ && steps_ > 1) --steps_;  // the short tail joins the step before
  }

  GroupSampler& sampler_;
  int64_t rank_, world_size_;
  int64_t groups_ = 0, steps_ = 0, step_ = 0;
};

} // namespace rectrain
