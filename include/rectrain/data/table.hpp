#pragma once
// A table: named columns of CPU tensors sharing their first dimension.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rectrain {

class Table {
 public:
  Table() = default;

  /// Number of rows; 0 for a table without columns.
  int64_t num_rows() const noexcept { return rows_ < 0 ? 0 : rows_; }
  int64_t num_columns() const noexcept { return static_cast<int64_t>(columns_.size()); }

  /// Adds a column; its first dimension must match the other columns'.
  Table& add(const std::string& name, torch::Tensor column) {
    if (!column.defined() || column.dim() < 1)
      throw TensorError(detail::concat("Table column '", name,
                                       "': expected a tensor with at least one dimension"));
    if (columns_.contains(name))
      throw TensorError(detail::concat("Table already has a column '", name, "'"));
    if (rows_ >= 0 && column.size(0) != rows_)
      throw TensorError(detail::concat("Table column '", name, "' has shape ", column.sizes(),
                                       ", expected ", rows_, " rows like the other columns"));
    rows_ = column.size(0);
    columns_.insert(name, std::move(column));
    return *this;
  }

  /// Replaces an existing column (same number of rows).
  void set(const std::string& name, torch::Tensor column) {
    if (!columns_.contains(name)) {
      add(name, std::move(column));
      return;
    }
    if (!column.defined() || column.dim() < 1 || column.size(0) != rows_)
      throw TensorError(detail::concat("Table column '", name, "': replacement must have ",
                                       rows_, " rows"));
    columns_[name] = std::move(column);
  }

  bool contains(const std::string& name) const noexcept { return columns_.contains(name); }

  const torch::Tensor& operator[](const std::string& name) const {
    if (const auto* found = columns_.find(name)) return *found;
    throw Error(detail::concat("Table has no column '", name, "' (columns: ", detail::join_names(columns_.keys()), ")"));
  }

  std::vector<std::string> names() const { return columns_.keys(); }

  /// A new table holding `rows` (1-D int64 indices) of every column, in that
  /// order.
  Table select(const torch::Tensor& rows) const {
    if (!rows.defined() || rows.dim() != 1 || rows.scalar_type() != torch::kInt64)
      throw TensorError(detail::concat("Table::select rows: expected a 1-D int64 tensor, got ", detail::shape_of(rows)));
    if (rows.numel() > 0 && (rows.min().item<int64_t>() < 0 || rows.max().item<int64_t>() >= num_rows()))
      throw TensorError(detail::concat("Table::select rows: indices must lie in [0, ", num_rows(), "), got [",
                                       rows.min().item<int64_t>(), ", ", rows.max().item<int64_t>(), "]"));
    Table out;
    for (const auto& column : columns_) out.add(column.key(), column.value().index_select(0, rows));
    return out;
  }
  const torch::OrderedDict<std::string, torch::Tensor>& columns() const noexcept {
    return columns_;
  }

 private:
  torch::OrderedDict<std::string, torch::Tensor> columns_{"Table column"};
  int64_t rows_ = -1;
};

} // namespace rectrain
