#pragma once
// A Batch: named feature and label tensors shaped [B, G, ...] plus a [B, G]
// mask, gathered from table columns for a [B, G] block of row indices. A
// BatchSpec says which columns go in and how each is reached from a row:
// directly (a per-row column) or through a key (row -> user or item -> value).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/vocabulary.hpp>

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

/// One column a BatchSpec gathers.
struct BatchColumn {
  std::string name;
  bool is_label = false;
  torch::Tensor values;  ///< [M, ...]: indexed by row, or by key[row]
  torch::Tensor key;     ///< [N] int64 row -> index into values (-1 unknown), or undefined
  compat::optional<torch::ScalarType> dtype;  ///< convert to this type, if set
};

/// Which columns a batch holds. Unknown keys (-1) and padded rows give -1 in
/// integer columns (models map it to an out-of-vocabulary row) and 0 in
/// floating ones.
class BatchSpec {
 public:
  BatchSpec& feature(std::string name, torch::Tensor values, torch::Tensor key = {},
                     compat::optional<torch::ScalarType> dtype = compat::nullopt) {
    return add({std::move(name), false, std::move(values), std::move(key), dtype});
  }
  BatchSpec& label(std::string name, torch::Tensor values, torch::Tensor key = {},
                   compat::optional<torch::ScalarType> dtype = compat::nullopt) {
    return add({std::move(name), true, std::move(values), std::move(key), dtype});
  }

  /// The challenge's full feature set: features user, item, source,
  /// duration, item_embedding, gender, age; labels target (like - dislike)
  /// and every signal (timespent, like, dislike, share, bookmarks, extras)
  /// as float32.
  static BatchSpec standard(const Dataset& ds) {
    auto spec = standard_features(ds, ds.interactions["user"], ds.interactions["item"]);
    spec.label("target", ds.interaction_targets(), {}, torch::kFloat32);
    for (const auto& name : ds.signal_names())
      spec.label(name, ds.interactions[name], {}, torch::kFloat32);
    return spec;
  }

  /// The same features for the rows of ds.candidates (unknown users or
  /// items, -1, reach models as out-of-vocabulary ids), with the label
  /// target when candidates.csv has one.
  static BatchSpec candidates(const Dataset& ds) {
    if (!ds.candidates.contains("user"))
      throw Error("BatchSpec::candidates: the dataset has no candidates (load it with load_candidates)");
    auto spec = standard_features(ds, ds.candidates["user"], ds.candidates["item"]);
    if (ds.candidates.contains("target")) spec.label("target", ds.candidates["target"], {}, torch::kFloat32);
    return spec;
  }

  /// The same for a model trained on other data (or the same data loaded
  /// again, renumbered): the id features (user, item, source) are the
  /// model's dense indices of each candidate's raw ids, -1 where `model`
  /// never saw one; every other feature comes from `ds` (a cold item's
  /// duration and content vector are known even when its id is not).
  static BatchSpec candidates(const Dataset& ds, const Vocabulary& model) {
    if (!ds.candidates.contains("user"))
      throw Error("BatchSpec::candidates: the dataset has no candidates (load it with load_candidates)");
    const auto& c = ds.candidates;
    auto spec = standard_features(ds, c["user"], c["item"], model.users.encode(c["user_id"]),
                                  model.items.encode(c["item_id"]),
                                  remap_ids(ds.items["source"], ds.source_ids, model.sources));
    if (c.contains("target")) spec.label("target", c["target"], {}, torch::kFloat32);
    return spec;
  }

  const std::vector<BatchColumn>& columns() const noexcept { return columns_; }
  /// Rows the per-row columns have (-1 with no columns yet).
  int64_t num_rows() const noexcept { return rows_; }

  /// Gathers the batch for `rows` ([B, G] int64, -1 = padding). With `pin`,
  /// outputs are allocated in pinned memory (for a non_blocking copy to CUDA).
  Batch gather(const torch::Tensor& rows, bool pin = false) const {
    if (rows.dim() != 2 || rows.scalar_type() != torch::kInt64)
      throw TensorError(detail::concat("BatchSpec::gather rows: expected [B, G] int64, got ",
                                       rows.toString(), " ", rows.sizes()));
    Batch batch;
    batch.rows = rows;
    batch.mask = rows >= 0;
    const auto flat = rows.reshape({-1});
    const auto padded = flat < 0;
    const auto safe_rows = flat.clamp_min(0);
    for (const auto& c : columns_) {
      torch::Tensor index = safe_rows, missing = padded;
      if (c.key.defined()) {
        auto key = c.key.index_select(0, safe_rows.to(c.key.device()));
        missing = padded.to(key.device()) | (key < 0);
        index = key.clamp_min(0);
      }
      index = index.to(c.values.device());
      std::vector<int64_t> shape{rows.size(0), rows.size(1)};
      for (int64_t d = 1; d < c.values.dim(); ++d) shape.push_back(c.values.size(d));
      std::vector<int64_t> flat_shape{flat.size(0)};
      for (int64_t d = 1; d < c.values.dim(); ++d) flat_shape.push_back(c.values.size(d));
      const auto dtype = c.dtype.value_or(c.values.scalar_type());
      torch::Tensor out;
      if (dtype == c.values.scalar_type()) {
        out = torch::empty(flat_shape, c.values.options().pinned_memory(pin && c.values.is_cpu()));
        torch::index_select_out(out, c.values, 0, index);
      } else {
        auto gathered = c.values.index_select(0, index);
        out = torch::empty(flat_shape, gathered.options().dtype(dtype).pinned_memory(pin && c.values.is_cpu()));
        out.copy_(gathered);
      }
      if (out.numel() > 0) {
        auto m = missing.to(out.device());
        while (m.dim() < out.dim()) m = m.unsqueeze(-1);
        out.masked_fill_(m, at::isFloatingType(dtype) ? 0 : -1);
      }
      (c.is_label ? batch.labels : batch.features).insert(c.name, out.view(shape));
    }
    return batch;
  }

  /// The spec with every column moved to `device` (to gather on a GPU).
  BatchSpec to(torch::Device device) const {
    BatchSpec out;
    for (const auto& c : columns_)
      out.add({c.name, c.is_label, c.values.to(device), c.key.defined() ? c.key.to(device) : c.key, c.dtype});
    return out;
  }

 private:
  /// `user` and `item`: each row's dense indices in `ds`, which the side
  /// features are gathered by. The id features are those indices too,
  /// unless a model's own are given (`user_ids`, `item_ids` per row,
  /// `item_sources` per item of `ds`).
  static BatchSpec standard_features(const Dataset& ds, const torch::Tensor& user, const torch::Tensor& item,
                                     const torch::Tensor& user_ids = {}, const torch::Tensor& item_ids = {},
                                     const torch::Tensor& item_sources = {}) {
    BatchSpec spec;
    spec.feature("user", user_ids.defined() ? user_ids : user)
        .feature("item", item_ids.defined() ? item_ids : item)
        .feature("source", item_sources.defined() ? item_sources : ds.items["source"], item)
        .feature("duration", ds.items["duration"], item)
        .feature("item_embedding", ds.items["embedding"], item)
        .feature("gender", ds.users["gender"], user)
        .feature("age", ds.users["age"], user);
    return spec;
  }

  BatchSpec& add(BatchColumn column) {
    const auto& per_row = column.key.defined() ? column.key : column.values;
    if (!column.values.defined() || column.values.dim() < 1)
      throw TensorError(detail::concat("BatchSpec column '", column.name, "': values must have a row dimension"));
    if (column.key.defined() && (column.key.dim() != 1 || column.key.scalar_type() != torch::kInt64))
      throw TensorError(detail::concat("BatchSpec column '", column.name,
                                       "': key must be 1-D int64, got ", column.key.sizes()));
    if (rows_ >= 0 && per_row.size(0) != rows_)
      throw TensorError(detail::concat("BatchSpec column '", column.name, "': ",
                                       column.key.defined() ? "key" : "values", " has ", per_row.size(0),
                                       " rows, the other columns ", rows_));
    for (const auto& c : columns_)
      if (c.name == column.name && c.is_label == column.is_label)
        throw TensorError(detail::concat("BatchSpec already has a column '", column.name, "'"));
    rows_ = per_row.size(0);
    columns_.push_back(std::move(column));
    return *this;
  }

  std::vector<BatchColumn> columns_;
  int64_t rows_ = -1;
};

} // namespace rectrain
