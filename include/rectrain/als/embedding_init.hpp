#pragma once
// ALS factors as embedding tables: optionally L2-normalised rows, parts
// concatenated (the recipe's user table is item-ALS factors ‖ source-ALS
// factors), and an out-of-vocabulary row appended last, so that index
// `vocabulary size` stands for an id never seen in training.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rectrain {

struct EmbeddingInitOptions {
  /// Scale every row to unit L2 norm (each part on its own); all-zero rows
  /// (ids without interactions) stay zero.
  TORCH_ARG(bool, normalize) = true;
  /// Append one all-zero row for unknown ids.
  TORCH_ARG(bool, oov_row) = true;
};

/// A [rows (+ 1), Σ part widths] float32 table from factor matrices with
/// the same number of rows, concatenated along columns in order.
inline torch::Tensor embedding_table(const std::vector<torch::Tensor>& parts, const EmbeddingInitOptions& options = {}) {
  if (parts.empty()) throw TensorError("embedding_table: no factor matrices given");
  std::vector<torch::Tensor> columns;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = parts[i];
    if (!p.defined() || p.dim() != 2 || p.size(0) != parts[0].size(0) || !p.is_floating_point())
      throw TensorError(detail::concat("embedding_table: part ", i, " must be a 2-D floating tensor with ",
                                       parts[0].defined() && parts[0].dim() > 0 ? parts[0].size(0) : 0,
                                       " rows, got ", detail::shape_of(p)));
    auto t = p.detach().to(torch::kFloat32);
    if (!torch::isfinite(t).all().item<bool>())
      throw TensorError(detail::concat("embedding_table: part ", i, " ", p.sizes(), " has NaN or infinite values"));
    if (options.normalize()) {
      const auto norm = t.norm(2, 1, true);
      t = t / torch::where(norm > 0, norm, torch::ones_like(norm));
    }
    columns.push_back(t);
  }
  auto table = torch::cat(columns, 1);
  if (options.oov_row()) table = torch::cat({table, torch::zeros({1, table.size(1)}, table.options())});
  return table.contiguous();
}

inline torch::Tensor embedding_table(const torch::Tensor& factors, const EmbeddingInitOptions& options = {}) {
  return embedding_table(std::vector<torch::Tensor>{factors}, options);
}

/// Copies `table` into an embedding's weight, on the embedding's device and
/// dtype, outside autograd. Shapes must match exactly.
inline void copy_into(torch::nn::Embedding& embedding, const torch::Tensor& table) {
  auto& weight = embedding->weight;
  if (!table.defined() || table.sizes() != weight.sizes())
    throw TensorError(detail::concat("copy_into: embedding weight is ", weight.sizes(), " but the table is ",
                                     detail::shape_of(table)));
  torch::NoGradGuard no_grad;
  weight.copy_(table);
}

} // namespace rectrain
