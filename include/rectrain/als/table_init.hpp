#pragma once
// The recipe's ALS initialisation of a model's id tables, by name: implicit
// ALS on the binary user x item matrix gives the item table and the user
// table's first part; ALS on user x source (when asked) gives the source
// table and the user table's second part. Rows are L2-normalised, each part
// on its own, with the out-of-vocabulary row zero (embedding_table).
//
//   initialize_tables_from_als(*model, train,
//       AlsTablesOptions(ImplicitAlsOptions(256).iterations(15).seed(seed)).source_factors(128));
//
// The model's tables must have the widths that gives: user factors +
// source_factors, item factors, source source_factors.

#include <rectrain/als/embedding_init.hpp>
#include <rectrain/als/implicit_als.hpp>
#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/nn/id_tables.hpp>

#include <torch/torch.h>

#include <functional>

#include <string>
#include <vector>

namespace rectrain {

struct AlsTablesOptions {
  /* implicit */ AlsTablesOptions(ImplicitAlsOptions als = {}) : als_(std::move(als)) {}
  /// The item factorisation's settings (its factors: the item table's width).
  TORCH_ARG(ImplicitAlsOptions, als);
  /// Width of the user x source factorisation (0: none); it runs with the
  /// same settings and seed + 1.
  TORCH_ARG(int64_t, source_factors) = 0;
  /// The id tables set (set_table's names).
  TORCH_ARG(std::string, user_table) = "user";
  TORCH_ARG(std::string, item_table) = "item";
  TORCH_ARG(std::string, source_table) = "source";
  /// What fits each factorisation: fit_implicit_als when unset; a
  /// data-parallel run passes fit_implicit_als_sharded over its group.
  TORCH_ARG(std::function<AlsFactors(const CsrMatrix&, const ImplicitAlsOptions&)>, fit) = nullptr;
};

/// Fits the factorisations on `train`'s interactions and puts them into
/// `model`'s tables (see the header comment).
inline void initialize_tables_from_als(const torch::nn::Module& model, const Dataset& train,
                                       const AlsTablesOptions& options) {
  const auto fit = [&](const CsrMatrix& m, const ImplicitAlsOptions& o) {
    return options.fit() ? options.fit()(m, o) : fit_implicit_als(m, o);
  };
  const auto items = fit(user_item_matrix(train), options.als());
  std::vector<torch::Tensor> user_parts{items.user};
  if (options.source_factors() > 0) {
    auto source_options = options.als();
    source_options.factors(options.source_factors()).seed(options.als().seed() + 1);
    const auto sources = fit(user_source_matrix(train), source_options);
    user_parts.push_back(sources.user);
    set_table(model, options.source_table(), embedding_table(sources.item));
  }
  set_table(model, options.user_table(), embedding_table(user_parts));
  set_table(model, options.item_table(), embedding_table(items.item));
}

} // namespace rectrain
