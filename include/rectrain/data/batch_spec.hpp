#pragma once
// BatchSpec: which columns a Batch holds and how each is reached from a row:
// directly (a per-row column) or through a key (row -> user or item ->
// value), or computed from the row indices when a batch is gathered (a
// feature too large to keep per row: a user's history before each row).
// gather() builds the Batch of a [B, G] block of row indices. The
// challenge's columns are in challenge_schema.hpp.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// A computed column: [n] int64 row indices (>= 0) -> [n, ...], one row of
/// output per index. Called from the pipeline's workers, possibly at once
/// from several: it must be safe to call concurrently.
using ComputedColumn = std::function<torch::Tensor(const torch::Tensor& rows)>;

/// One column a BatchSpec gathers.
struct BatchColumn {
  std::string name;
  bool is_label = false;
  torch::Tensor values;  ///< [M, ...]: indexed by row, or by key[row]
  torch::Tensor key;     ///< [N] int64 row -> index into values (-1 unknown), or undefined
  compat::optional<torch::ScalarType> dtype;  ///< convert to this type, if set
  ComputedColumn compute;  ///< set: the column is computed from the rows (values, key unused)
};

/// Which columns a batch holds. Unknown keys (-1) and padded rows give -1 in
/// integer columns (models map it to an out-of-vocabulary row) and 0 in
/// floating ones.
class BatchSpec {
 public:
  BatchSpec& feature(std::string name, torch::Tensor values, torch::Tensor key = {},
                     compat::optional<torch::ScalarType> dtype = compat::nullopt) {
    return add({std::move(name), false, std::move(values), std::move(key), dtype, nullptr});
  }
  BatchSpec& label(std::string name, torch::Tensor values, torch::Tensor key = {},
                   compat::optional<torch::ScalarType> dtype = compat::nullopt) {
    return add({std::move(name), true, std::move(values), std::move(key), dtype, nullptr});
  }

  /// A feature computed from the rows of each batch by `compute`.
  BatchSpec& computed_feature(std::string name, ComputedColumn compute) {
    if (!compute) throw Error(detail::concat("BatchSpec column '", name, "': no function given"));
    return add({std::move(name), false, {}, {}, compat::nullopt, std::move(compute)});
  }

  const std::vector<BatchColumn>& columns() const noexcept { return columns_; }
  /// Rows the per-row columns have (-1 with no columns yet).
  int64_t num_rows() const noexcept { return rows_; }

  /// Gathers the batch for `rows` ([B, G] int64, -1 = padding). With `pin`,
  /// outputs are allocated in pinned memory (for a non_blocking copy to CUDA).
  Batch gather(const torch::Tensor& rows, bool pin = false) const {
    if (rows.dim() != 2 || rows.scalar_type() != torch::kInt64)
      throw TensorError(detail::concat("BatchSpec::gather rows: expected [B, G] int64, got ",
                                       detail::type_and_shape_of(rows)));
    Batch batch;
    batch.rows = rows;
    batch.mask = rows >= 0;
    const auto flat = rows.reshape({-1});
    const auto padded = flat < 0;
    const auto safe_rows = flat.clamp_min(0);
    for (const auto& c : columns_) {
      if (c.compute) {
        auto out = c.compute(safe_rows);
        if (!out.defined() || out.dim() < 1 || out.size(0) != flat.size(0))
          throw TensorError(detail::concat("BatchSpec column '", c.name, "': its function returned ",
                                           detail::type_and_shape_of(out), " for ", flat.size(0), " rows"));
        if (out.device() != rows.device()) out = out.to(rows.device());  // a device spec's batch stays there
        if (pin && out.is_cpu()) out = out.pin_memory();
        if (out.numel() > 0) {
          auto m = padded.to(out.device());
          while (m.dim() < out.dim()) m = m.unsqueeze(-1);
          out.masked_fill_(m, at::isFloatingType(out.scalar_type()) ? 0 : -1);
        }
        std::vector<int64_t> shape{rows.size(0), rows.size(1)};
        for (int64_t d = 1; d < out.dim(); ++d) shape.push_back(out.size(d));
        (c.is_label ? batch.labels : batch.features).insert(c.name, out.view(shape));
        continue;
      }
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
    for (const auto& c : columns_) {
      if (c.compute) out.add(c);  // computes where its function does
      else
        out.add({c.name, c.is_label, c.values.to(device), c.key.defined() ? c.key.to(device) : c.key, c.dtype, nullptr});
    }
    return out;
  }

 private:
  BatchSpec& add(BatchColumn column) {
    if (column.compute) {
      check_new_name(column);
      columns_.push_back(std::move(column));
      return *this;
    }
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
    check_new_name(column);
    rows_ = per_row.size(0);
    columns_.push_back(std::move(column));
    return *this;
  }

  void check_new_name(const BatchColumn& column) const {
    for (const auto& c : columns_)
      if (c.name == column.name && c.is_label == column.is_label)
        throw TensorError(detail::concat("BatchSpec already has a column '", column.name, "'"));
  }

  std::vector<BatchColumn> columns_;
  int64_t rows_ = -1;
};

} // namespace rectrain
