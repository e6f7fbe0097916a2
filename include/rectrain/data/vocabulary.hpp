#pragma once
// The id vocabularies a model was trained with. Its embedding tables are
// indexed by these maps' dense indices, so scoring another dataset (new
// candidates, new users, rows in another order) must go through them, not
// through that dataset's own numbering: a raw id keeps its row, and an id
// the model never saw gets the out-of-vocabulary row (-1).

#include <rectrain/core/id_map.hpp>
#include <rectrain/data/dataset.hpp>

#include <torch/torch.h>

namespace rectrain {

struct Vocabulary {
  IdMap users;
  IdMap items;
  IdMap sources;

  /// The vocabularies of `ds` (what a model trained on it indexes by).
  static Vocabulary of(const Dataset& ds) { return {ds.user_ids, ds.item_ids, ds.source_ids}; }
};

/// Dense indices of `from` (-1 unknown) as dense indices of `to`: the same
/// raw ids, -1 where `to` lacks one.
inline torch::Tensor remap_ids(const torch::Tensor& dense, const IdMap& from, const IdMap& to) {
  auto out = from.decode(dense);
  return to.encode_(out);
}

} // namespace rectrain
