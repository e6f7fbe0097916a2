#pragma once
// A BatchSpec as a torch::data dataset, for torch::data's loaders: a batch
// request is a RowBlock, a [B, G] block of row indices (what GroupSampler
// yields), the batch is BatchSpec::gather of it.
//
//   auto loader = torch::data::make_data_loader(
//       rectrain::BatchSpecDataset(spec), std::move(sampler),
//       torch::data::DataLoaderOptions().batch_size(64).workers(2));
//   for (rectrain::Batch& batch : *loader) ...
//
// The loader starts each epoch with sampler.reset(), which moves a
// GroupSampler on to its next epoch. BatchPipeline does the same work with
// pinned memory, device copies, a deterministic order whatever the worker
// count, and per-stage timings; train_epoch takes that.

#include <rectrain/data/batch.hpp>
#include <rectrain/data/batch_sampler.hpp>
#include <rectrain/data/batch_spec.hpp>

#include <torch/torch.h>

#include <cstddef>
#include <utility>

namespace rectrain {

class BatchSpecDataset : public torch::data::datasets::BatchDataset<BatchSpecDataset, Batch, RowBlock> {
 public:
  explicit BatchSpecDataset(BatchSpec spec) : spec_(std::move(spec)) {}

  /// The Batch of `block`'s rows ([B, G] int64, -1 padding).
  Batch get_batch(RowBlock block) override { return spec_.gather(block.rows); }

  /// The rows the spec's per-row columns have.
  compat::optional<size_t> size() const override {
    return spec_.num_rows() < 0 ? size_t{0} : static_cast<size_t>(spec_.num_rows());
  }

  const BatchSpec& spec() const noexcept { return spec_; }

 private:
  BatchSpec spec_;
};

} // namespace rectrain
