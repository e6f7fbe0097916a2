#pragma once
// Retrieval models are TwoTower models whose towers read columns of dense
// ids ("user_id", "item_id") and any side features of those ids. The side
// features live in EntityColumns: a table per column, one row per dense id,
// gathered for the ids of a batch.
//
// - matrix_factorization: MF as a TwoTower of two id tables (no MLP): the
//   score is ⟨p_u, q_i⟩. Tables may start from ALS factors.
// - content_two_tower: the item vector is [id embedding; source embedding;
//   W · content vector] and the user vector one table of the same width, so
//   the score adds a user's affinity to the item, to its source and to its
//   content; an item with few positives still gets its source's and
//   content's part.

#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/nn/categorical_feature.hpp>
#include <rectrain/nn/dense_feature.hpp>
#include <rectrain/nn/tower.hpp>
#include <rectrain/nn/two_tower.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace rectrain {

/// Side columns of one entity (users or items): name -> [n, ...] tensor,
/// row i for dense id i. gather() returns the id column under `id_column`
/// and every side column at the given ids.
class EntityColumns {
 public:
  explicit EntityColumns(std::string id_column, int64_t size = -1) : id_column_(std::move(id_column)), size_(size) {}

  EntityColumns& add(const std::string& name, torch::Tensor values) {
    if (name == id_column_ || columns_.contains(name))
      throw Error(detail::concat("EntityColumns: column '", name, "' is already there"));
    if (!values.defined() || values.dim() < 1 || (size_ >= 0 && values.size(0) != size_))
      throw TensorError(detail::concat("EntityColumns '", name, "': expected [", size_, ", ...], got ",
                                       detail::shape_of(values)));
    columns_.insert(name, std::move(values));
    return *this;
  }

  const std::string& id_column() const { return id_column_; }

  /// The columns of the ids `ids` (int64 dense indices, any shape), on `device`.
  torch::OrderedDict<std::string, torch::Tensor> gather(const torch::Tensor& ids, torch::Device device) const {
    torch::OrderedDict<std::string, torch::Tensor> out("EntityColumns");
    out.insert(id_column_, ids.to(device));
    for (const auto& c : columns_) {
      auto rows = c.value().index({ids.to(c.value().device()).reshape(-1)});
      auto shape = ids.sizes().vec();
      for (int64_t d = 1; d < c.value().dim(); ++d) shape.push_back(c.value().size(d));
      out.insert(c.key(), rows.reshape(shape).to(device));
    }
    return out;
  }

 private:
  std::string id_column_;
  int64_t size_;
  torch::OrderedDict<std::string, torch::Tensor> columns_{"EntityColumns"};
};

/// Both sides' columns.
struct RetrievalColumns {
  EntityColumns users{"user_id"};
  EntityColumns items{"item_id"};
};

/// The vectors of `ids` under `tower`'s side of `model` (ids any shape S ->
/// [S..., d]).
inline torch::Tensor user_vectors(TwoTower& model, const RetrievalColumns& columns, const torch::Tensor& users,
                                  torch::Device device) {
  Batch batch;
  batch.features = columns.users.gather(users, device);
  return model->user_vectors(batch);
}
inline torch::Tensor item_vectors(TwoTower& model, const RetrievalColumns& columns, const torch::Tensor& items,
                                  torch::Device device) {
  Batch batch;
  batch.features = columns.items.gather(items, device);
  return model->item_vectors(batch);
}

/// Every user's and every item's vector, in chunks, without gradient:
/// what export and full-catalogue evaluation need. [n, d] on `device`.
inline torch::Tensor all_vectors(TwoTower& model, const RetrievalColumns& columns, bool users, int64_t n,
                                 torch::Device device, int64_t chunk = 65536) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < n; start += chunk) {
    const auto ids = torch::arange(start, std::min(n, start + chunk), torch::kInt64);
    parts.push_back(users ? user_vectors(model, columns, ids, device) : item_vectors(model, columns, ids, device));
  }
  model->train(was_training);
  return parts.empty() ? torch::empty({0, model->user_tower->output_dim()}) : torch::cat(parts);
}

struct MatrixFactorizationOptions {
  MatrixFactorizationOptions(int64_t num_users, int64_t num_items, int64_t dim)
      : num_users_(num_users), num_items_(num_items), dim_(dim) {}
  TORCH_ARG(int64_t, num_users);
  TORCH_ARG(int64_t, num_items);
  TORCH_ARG(int64_t, dim);
  /// Initial tables ([n, dim] or [n + 1, dim]), e.g. ALS factors; undefined:
  /// N(0, init_std²).
  TORCH_ARG(torch::Tensor, user_init) = {};
  TORCH_ARG(torch::Tensor, item_init) = {};
  TORCH_ARG(double, init_std) = 0.1;
  /// Sparse gradients for the tables (TableOptimizers, SparseAdam).
  TORCH_ARG(bool, sparse) = false;
};

/// ⟨p_u, q_i⟩ as a TwoTower over the columns "user_id" and "item_id"; its
/// tables are named "user_id" and "item_id" (for set_table, freeze and
/// table_parameter_names).
inline TwoTower matrix_factorization(const MatrixFactorizationOptions& o) {
  Tower users, items;
  users->add("user_id", CategoricalFeature(CategoricalFeatureOptions(o.num_users(), o.dim())
                                               .weight(o.user_init())
                                               .init_std(o.init_std())
                                               .sparse(o.sparse())));
  items->add("item_id", CategoricalFeature(CategoricalFeatureOptions(o.num_items(), o.dim())
                                               .weight(o.item_init())
                                               .init_std(o.init_std())
                                               .sparse(o.sparse())));
  return TwoTower(users, items);
}

struct ContentTwoTowerOptions {
  ContentTwoTowerOptions(MatrixFactorizationOptions ids) : ids_(std::move(ids)) {}
  /// The id tables (their dim is the id part's width).
  TORCH_ARG(MatrixFactorizationOptions, ids);
  /// Distinct sources (column "item_source", dense ids 0..n-1, -1 unknown); 0: none.
  TORCH_ARG(int64_t, num_sources) = 0;
  TORCH_ARG(int64_t, source_dim) = 16;
  /// Width of the content vectors (column "item_content"); 0: none.
  TORCH_ARG(int64_t, content_dim) = 0;
  TORCH_ARG(int64_t, content_projection) = 16;
};

/// The item tower reads "item_id", and "item_source" and "item_content" when
/// their sizes are set; the user tower one table as wide as the item vector.
inline TwoTower content_two_tower(const ContentTwoTowerOptions& o) {
  const auto& ids = o.ids();
  Tower items;
  items->add("item_id", CategoricalFeature(CategoricalFeatureOptions(ids.num_items(), ids.dim())
                                               .weight(ids.item_init())
                                               .init_std(ids.init_std())
                                               .sparse(ids.sparse())));
  int64_t width = ids.dim();
  if (o.num_sources() > 0) {
    items->add("item_source", CategoricalFeature(CategoricalFeatureOptions(o.num_sources(), o.source_dim())
                                                     .init_std(ids.init_std())
                                                     .sparse(ids.sparse())));
    width += o.source_dim();
  }
  if (o.content_dim() > 0) {
    items->add("item_content",
               DenseFeature(DenseFeatureOptions(o.content_dim()).projection(o.content_projection()).bias(false)));
    width += o.content_projection();
  }
  torch::Tensor user_init;
  if (ids.user_init().defined()) {  // ALS factors fill the id part; the rest starts small
    user_init = torch::randn({ids.user_init().size(0), width}) * ids.init_std();
    user_init.narrow(1, 0, ids.dim()).copy_(ids.user_init());
  }
  Tower users;
  users->add("user_id", CategoricalFeature(CategoricalFeatureOptions(ids.num_users(), width)
                                               .weight(user_init)
                                               .init_std(ids.init_std())
                                               .sparse(ids.sparse())));
  return TwoTower(users, items);
}

} // namespace rectrain
