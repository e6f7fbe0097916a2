#pragma once
// ALS factors of a dataset as one torch.save file (a dict of tensors that
// Python reads with torch.load): user_item_factors and item_factors with
// the raw ids of their rows (user_id, item_id), and, when given, the
// user x source factorisation (user_source_factors, source_factors,
// source_id). load_tensor_dict reads it back in C++.
//
//   save_als_factors(out + "/als.pt", ds, fit_implicit_als(user_item_matrix(ds), options));

#include <rectrain/als/implicit_als.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/tensor_file.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

/// Writes the dict (atomically). `sources` may be nullptr.
inline void save_als_factors(const std::string& path, const Dataset& ds, const AlsFactors& items,
                             const AlsFactors* sources = nullptr) {
  // Tensors of different lengths: a plain dict, not a Table.
  c10::impl::GenericDict saved(c10::StringType::get(), c10::TensorType::get());
  saved.insert("user_item_factors", items.user.cpu());
  saved.insert("item_factors", items.item.cpu());
  saved.insert("user_id", ds.user_ids.decode(torch::arange(ds.num_users())));
  saved.insert("item_id", ds.item_ids.decode(torch::arange(ds.num_items())));
  if (sources) {
    saved.insert("user_source_factors", sources->user.cpu());
    saved.insert("source_factors", sources->item.cpu());
    saved.insert("source_id", ds.source_ids.decode(torch::arange(ds.num_sources())));
  }
  save_pickle(c10::IValue(saved), path);
}

} // namespace rectrain
