#pragma once
// The recipe's settings and its model, built from rectrain modules. The
// settings are saved beside every model as key=value lines, so `predict`
// rebuilds exactly the model that was trained.

#include <rectrain/rectrain.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace vk {

/// The values of RecipeConfig::table_update, for the parser and the
/// settings reader alike.
inline const std::vector<std::string>& table_updates() {
  static const std::vector<std::string> names{"sparse", "adam", "lazy"};
  return names;
}

/// Everything `train` is told. 0 / empty means "choose from the data size"
/// (see adapt_to()).
struct RecipeConfig {
  // model
  int64_t item_factors = 0;    ///< item-ALS width = item id embedding (recipe: 256)
  int64_t source_factors = 0;  ///< source-ALS width = source embedding (recipe: 128)
  std::vector<int64_t> hidden{512, 256};
  double dropout = 0.1;
  std::string normalization = "layernorm";  ///< layernorm | batchnorm | none
  double margin = 1.0;                      ///< pairwise margin of the target head
  /// An item feature beside the recipe's: log1p of the item's view count in
  /// the training interactions (label-free; 0 for items never seen). ALS
  /// rows are normalised, which removes the popularity their norm carried.
  bool popularity = true;
  // schedule
  int64_t frozen_epochs = 5;
  int64_t unfrozen_epochs = 1;
  bool freeze = true;  ///< --no-freeze: every epoch unfrozen
  bool als = true;     ///< --no-als: random id embeddings
  int64_t als_iterations = 15;
  double als_regularization = 0.01;
  // optimisation
  double lr = 3e-3;
  double weight_decay = 0;
  int64_t group_size = 20;
  int64_t batch_groups = 0;  ///< groups per batch
  double clip_grad_norm = 0;
  /// How unfrozen id tables are updated: "sparse" (sparse gradients and
  /// SparseAdam over every row: Adam's update in one pass over the table),
  /// "adam" (dense gradients and torch::optim::Adam, as the reference
  /// implementation: the same update, many passes) or "lazy" (SparseAdam
  /// on the rows each batch used: no pass over the table, a slightly lower
  /// GAUC on every dataset measured; see docs/performance.md).
  std::string table_update = "sparse";
  bool bf16 = false;
  // validation
  double holdout_fraction = 0.1;
  int64_t holdout_users = 20000;

  int64_t epochs() const { return frozen_epochs + unfrozen_epochs; }
  bool frozen_in(int64_t epoch) const { return freeze && epoch < frozen_epochs; }

  /// Fills the sizes left at 0 from the dataset. Small data gets narrower
  /// ALS factors (a 256-wide factorisation of a few hundred users is mostly
  /// noise) and smaller batches (enough optimiser steps per epoch).
  void adapt_to(const rectrain::Dataset& ds, int64_t train_groups) {
    auto pow2_floor = [](double x) {
      int64_t p = 1;
      while (static_cast<double>(p * 2) <= x) p *= 2;
      return p;
    };
    const double users = static_cast<double>(ds.num_users());
    if (item_factors == 0) item_factors = std::clamp<int64_t>(pow2_floor(users / 8), 16, 256);
    if (source_factors == 0) source_factors = ds.num_sources() > 0 ? std::max<int64_t>(8, item_factors / 2) : 0;
    if (ds.num_sources() == 0) source_factors = 0;
    if (batch_groups == 0)
      batch_groups = std::clamp<int64_t>(pow2_floor(static_cast<double>(train_groups) / 250.0), 16, 1024);
  }

  std::string to_text() const {
    std::ostringstream out;
    out.precision(17);
    out << "item_factors=" << item_factors << "\nsource_factors=" << source_factors << "\nhidden=";
    for (size_t i = 0; i < hidden.size(); ++i) out << (i ? "," : "") << hidden[i];
    out << "\ndropout=" << dropout << "\nnormalization=" << normalization << "\nmargin=" << margin << "\npopularity=" << popularity
        << "\nfrozen_epochs=" << frozen_epochs << "\nunfrozen_epochs=" << unfrozen_epochs << "\nfreeze=" << freeze
        << "\nals=" << als << "\nals_iterations=" << als_iterations << "\nals_regularization=" << als_regularization
        << "\nlr=" << lr << "\nweight_decay=" << weight_decay << "\ngroup_size=" << group_size
        << "\nbatch_groups=" << batch_groups << "\nclip_grad_norm=" << clip_grad_norm << "\ntable_update=" << table_update
        << "\nbf16=" << bf16
        << "\nholdout_fraction=" << holdout_fraction << "\nholdout_users=" << holdout_users << "\n";
    return out.str();
  }

  static RecipeConfig from_text(const std::string& text, const std::string& where) {
    std::map<std::string, std::string> kv;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto eq = line.find('=');
      if (eq == std::string::npos) throw rectrain::Error(where + ": bad configuration line '" + line + "'");
      kv[line.substr(0, eq)] = line.substr(eq + 1);
    }
    auto get = [&](const char* key) -> const std::string& {
      auto it = kv.find(key);
      if (it == kv.end()) throw rectrain::Error(where + ": configuration lacks '" + key + "'");
      return it->second;
    };
    auto i64 = [&](const char* key) { return std::stoll(get(key)); };
    auto f64 = [&](const char* key) { return std::stod(get(key)); };
    RecipeConfig c;
    c.item_factors = i64("item_factors");
    c.source_factors = i64("source_factors");
    c.hidden.clear();
    std::istringstream widths(get("hidden"));
    for (std::string w; std::getline(widths, w, ',');) c.hidden.push_back(std::stoll(w));
    c.dropout = f64("dropout");
    c.normalization = get("normalization");
    c.margin = f64("margin");
    c.popularity = i64("popularity") != 0;
    c.frozen_epochs = i64("frozen_epochs");
    c.unfrozen_epochs = i64("unfrozen_epochs");
    c.freeze = i64("freeze") != 0;
    c.als = i64("als") != 0;
    c.als_iterations = i64("als_iterations");
    c.als_regularization = f64("als_regularization");
    c.lr = f64("lr");
    c.weight_decay = f64("weight_decay");
    c.group_size = i64("group_size");
    c.batch_groups = i64("batch_groups");
    c.clip_grad_norm = f64("clip_grad_norm");
    c.table_update = get("table_update");
    if (std::find(table_updates().begin(), table_updates().end(), c.table_update) == table_updates().end())
      throw rectrain::Error(where + ": table_update must be sparse, adam or lazy; got '" + c.table_update + "'");
    c.bf16 = i64("bf16") != 0;
    c.holdout_fraction = f64("holdout_fraction");
    c.holdout_users = i64("holdout_users");
    return c;
  }
};

inline rectrain::Normalization parse_normalization(const std::string& name) {
  if (name == "layernorm") return rectrain::Normalization::LayerNorm;
  if (name == "batchnorm") return rectrain::Normalization::BatchNorm;
  if (name == "none") return rectrain::Normalization::None;
  throw rectrain::Error("--normalization must be layernorm, batchnorm or none; got '" + name + "'");
}

/// The signals a dataset really records: a column that is constant over the
/// training rows (mlsmall's share and bookmarks are all 0) gets no head.
inline std::vector<std::string> known_signals(const rectrain::Dataset& train) {
  std::vector<std::string> out;
  for (const auto& name : train.signal_names()) {
    const auto& column = train.interactions[name];
    if (column.numel() > 0 && (column.max() > column.min()).item<bool>()) out.push_back(name);
  }
  return out;
}

/// The recipe's model: user tower (id, gender, age), item tower (id, source,
/// duration, content vector), shared MLP, one head per known signal plus the
/// target's ranking head. Numeric features are fitted on `train`.
inline rectrain::Ranker build_model(const rectrain::Dataset& train, const RecipeConfig& c,
                                    const std::vector<std::string>& signals) {
  using namespace rectrain;
  // Random tables start with rows of about unit norm, like normalised ALS
  // rows, so --no-als changes the initial values and nothing else.
  auto id_table = [&c](int64_t n, int64_t dim) {
    return CategoricalFeature(CategoricalFeatureOptions(n, dim)
                                  .init_std(1.0 / std::sqrt(static_cast<double>(dim)))
                                  .sparse(c.table_update != "adam"));
  };
  NumericFeature age, duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  age->fit(train.users["age"]);
  duration->fit(train.items["duration"]);
  Tower user;
  user->add("user", id_table(train.num_users(), c.item_factors + c.source_factors))
      .add("gender", CategoricalFeature(3, 4))
      .add("age", age);
  Tower item;
  item->add("item", id_table(train.num_items(), c.item_factors));
  if (c.source_factors > 0) item->add("source", id_table(train.num_sources(), c.source_factors));
  item->add("duration", duration);
  if (train.embedding_dim() > 0) item->add("item_embedding", DenseFeature(train.embedding_dim()));
  if (c.popularity) {
    NumericFeature views(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
    views->fit(item_view_counts(train));
    item->add("item_views", views);
  }
  Ranker ranker(user, item,
                RankerOptions(
                    MlpBlocks(c.hidden).normalization(parse_normalization(c.normalization)).dropout(c.dropout)));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(RankingHeadOptions(h).loss(
                                 RankingLossOptions(RankingLossKind::PairwiseMargin)
                                     .pairwise(PairwiseLossOptions().margin(c.margin)))));
  for (const auto& s : signals) {
    if (s == "timespent")
      ranker->add_head(s, RegressionHead(RegressionHeadOptions(h, s).log1p_label(true)));
    else if (s == "like" || s == "dislike" || s == "share" || s == "bookmarks")
      ranker->add_head(s, BinaryHead(h, s));
  }
  return ranker;
}

/// `spec` (the standard columns of some rows, whose items are `items`) plus
/// the columns only this recipe reads: item_views (`views`, from
/// item_view_counts over the interactions the model may know of), when the
/// view-count feature is on.
inline rectrain::BatchSpec with_recipe_columns(rectrain::BatchSpec spec, const RecipeConfig& c,
                                               const torch::Tensor& views, const torch::Tensor& items) {
  if (c.popularity) spec.feature("item_views", views, items);
  return spec;
}

/// The id tables the schedule freezes.
inline std::vector<rectrain::CategoricalFeature> id_tables(const rectrain::Ranker& model) {
  std::vector<rectrain::CategoricalFeature> out;
  for (auto* tower : {&model->user_tower, &model->item_tower})
    for (const auto& column : {"user", "item", "source"})
      if ((*tower)->features->contains(column))
        out.emplace_back((*tower)->feature<rectrain::CategoricalFeatureImpl>(column));
  return out;
}

/// The weights of `tables`, and every other parameter of `model`: with
/// sparse tables the two go to different optimizers.
inline std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> split_table_parameters(
    const rectrain::Ranker& model, const std::vector<rectrain::CategoricalFeature>& tables) {
  std::vector<torch::Tensor> table_weights, rest;
  for (const auto& table : tables) table_weights.push_back(table->weight);
  for (const auto& p : model->parameters()) {
    const bool is_table = std::any_of(table_weights.begin(), table_weights.end(),
                                      [&](const torch::Tensor& w) { return w.is_same(p); });
    if (!is_table) rest.push_back(p);
  }
  return {table_weights, rest};
}

} // namespace vk
