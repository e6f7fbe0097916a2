#pragma once
// What a BatchPipeline (and train_epoch) takes batches from: per epoch, a
// fixed number of [B, G] blocks of row indices (-1 where a group is
// padded), the same for the same (seed, epoch) whatever ran before, and a
// position that goes through a checkpoint. GroupSampler is one; a sharded
// or a negative sampler implements the same five calls.

#include <rectrain/core/compat.hpp>

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

namespace rectrain {

/// A [B, G] block of row indices as torch::data's loaders request a batch
/// (they ask a request its size(): the groups in it).
struct RowBlock {
  torch::Tensor rows;
  size_t size() const { return rows.defined() ? static_cast<size_t>(rows.size(0)) : 0; }
};

class BatchSampler {
 public:
  virtual ~BatchSampler() = default;
  /// Prepares `epoch` (>= 0) and rewinds to its first batch.
  virtual void set_epoch(int64_t epoch) = 0;
  /// The epoch prepared, -1 before the first.
  virtual int64_t epoch() const = 0;
  /// Batches in the prepared epoch.
  virtual int64_t num_batches() const = 0;
  /// The next [B, G] int64 block of row indices (on the sampler's device),
  /// or nullopt at the end of the epoch.
  virtual compat::optional<torch::Tensor> next_batch() = 0;
  /// The epoch and the position in it (what a resumed run needs to go on
  /// with the next batch).
  virtual void save(torch::serialize::OutputArchive& archive) const = 0;
  virtual void load(torch::serialize::InputArchive& archive) = 0;
};

} // namespace rectrain
