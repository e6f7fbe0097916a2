#pragma once
// The VK RecSys Challenge's columns as BatchSpecs over a Dataset: the
// features user, item, source, duration, item_embedding, gender and age
// (side features reached through each row's user and item), and the labels
// target (like - dislike) and every signal. A model of other columns builds
// its own BatchSpec instead.

#include <rectrain/core/error.hpp>
#include <rectrain/data/batch_spec.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/vocabulary.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

namespace rectrain {

namespace detail {

/// `user` and `item`: each row's dense indices in `ds`, which the side
/// features are gathered by. The id features are those indices too, unless
/// a model's own are given (`user_ids`, `item_ids` per row, `item_sources`
/// per item of `ds`).
inline BatchSpec challenge_features(const Dataset& ds, const torch::Tensor& user, const torch::Tensor& item,
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

inline void check_has_candidates(const Dataset& ds) {
  if (!ds.candidates.contains("user"))
    throw Error("candidate_batch_spec: the dataset has no candidates (load it with load_candidates)");
}

} // namespace detail

/// The interactions' rows: the features, and as float32 labels target and
/// every signal (timespent, like, dislike, share, bookmarks, extras).
inline BatchSpec standard_batch_spec(const Dataset& ds) {
  auto spec = detail::challenge_features(ds, ds.interactions["user"], ds.interactions["item"]);
  spec.label("target", ds.interaction_targets(), {}, torch::kFloat32);
  for (const auto& name : ds.signal_names()) spec.label(name, ds.interactions[name], {}, torch::kFloat32);
  return spec;
}

/// The rows of ds.candidates (unknown users or items, -1, reach models as
/// out-of-vocabulary ids), with the label target when candidates.csv has
/// one.
inline BatchSpec candidate_batch_spec(const Dataset& ds) {
  detail::check_has_candidates(ds);
  auto spec = detail::challenge_features(ds, ds.candidates["user"], ds.candidates["item"]);
  if (ds.candidates.contains("target")) spec.label("target", ds.candidates["target"], {}, torch::kFloat32);
  return spec;
}

/// The same for a model trained on other data (or the same data loaded
/// again, renumbered): the id features (user, item, source) are the model's
/// dense indices of each candidate's raw ids, -1 where `model` never saw
/// one; every other feature comes from `ds` (a cold item's duration and
/// content vector are known even when its id is not).
inline BatchSpec candidate_batch_spec(const Dataset& ds, const Vocabulary& model) {
  detail::check_has_candidates(ds);
  const auto& c = ds.candidates;
  auto spec = detail::challenge_features(ds, c["user"], c["item"], model.users.encode(c["user_id"]),
                                         model.items.encode(c["item_id"]),
                                         remap_ids(ds.items["source"], ds.source_ids, model.sources));
  if (c.contains("target")) spec.label("target", c["target"], {}, torch::kFloat32);
  return spec;
}

/// The signals of `train` a head can learn beside the target: each standard
/// signal its interactions really record (a constant column, like
/// mlsmall's share and bookmarks, is left out) and, with `extra`, each other
/// numeric column that varies, as "name:binary" (a 0/1 column) or
/// "name:regression" (add_signal_head's names). `unused` collects the
/// non-standard columns left out.
inline std::vector<std::string> trainable_signals(const Dataset& train, bool extra = false,
                                                  std::vector<std::string>* unused = nullptr) {
  std::vector<std::string> out;
  const auto& standard = standard_signals();
  for (const auto& name : train.signal_names()) {
    const auto& column = train.interactions[name];
    const bool varies = column.numel() > 0 && (column.max() > column.min()).item<bool>();
    const bool is_standard = std::find(standard.begin(), standard.end(), name) != standard.end();
    if (is_standard) {
      if (varies) out.push_back(name);
    } else if (extra && varies) {
      const bool binary = ((column == 0) | (column == 1)).all().item<bool>();
      out.push_back(name + (binary ? ":binary" : ":regression"));
    } else if (unused) {
      unused->push_back(name);
    }
  }
  return out;
}

} // namespace rectrain
