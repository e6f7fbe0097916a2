#pragma once
// A Batch: named feature and label tensors shaped [B, G, ...] plus a [B, G]
// mask, for a [B, G] block of row indices (-1 where padded). A value type,
// like torch::data::Example: models and heads read it, BatchSpec
// (batch_spec.hpp) gathers it from table columns.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rectrain {

struct Batch {
  torch::Tensor rows;  ///< [B, G] int64 row indices, -1 where padded
  torch::Tensor mask;  ///< [B, G] bool, true on real rows
  torch::OrderedDict<std::string, torch::Tensor> features{"Batch feature"};
  torch::OrderedDict<std::string, torch::Tensor> labels{"Batch label"};

  int64_t num_groups() const { return rows.size(0); }
  int64_t group_size() const { return rows.size(1); }

  const torch::Tensor& feature(const std::string& name) const { return lookup(features, name, "feature"); }
  const torch::Tensor& label(const std::string& name) const { return lookup(labels, name, "label"); }

  /// The batch on `device` (a no-op for tensors already there).
  Batch to(torch::Device device, bool non_blocking = false) const {
    Batch out;
    out.rows = rows.to(device, non_blocking);
    out.mask = mask.to(device, non_blocking);
    for (const auto& f : features) out.features.insert(f.key(), f.value().to(device, non_blocking));
    for (const auto& l : labels) out.labels.insert(l.key(), l.value().to(device, non_blocking));
    return out;
  }

 private:
  static const torch::Tensor& lookup(const torch::OrderedDict<std::string, torch::Tensor>& dict,
                                     const std::string& name, const char* kind) {
    if (const auto* t = dict.find(name)) return *t;
    throw Error(detail::concat("Batch has no ", kind, " '", name, "' (", kind, "s: ", detail::join_names(dict.keys()),
                               ")"));
  }
};

} // namespace rectrain
