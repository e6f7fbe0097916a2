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

inline rectrain::Normalization parse_normalization(const std::string& name) {
  if (name == "layernorm") return rectrain::Normalization::LayerNorm;
  if (name == "batchnorm") return rectrain::Normalization::BatchNorm;
  if (name == "none") return rectrain::Normalization::None;
  throw rectrain::Error("--normalization must be layernorm, batchnorm or none; got '" + name + "'");
}

inline std::vector<int64_t> parse_widths(const std::string& text, const std::string& what) {
  return rectrain::parse_width_list(text, what);
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
  /// Train a head on every extra numeric column of interactions.csv too
  /// (binary for 0/1 columns, regression otherwise); off: they are listed
  /// as unused.
  bool extra_heads = false;
  // validation
  double holdout_fraction = 0.1;
  int64_t holdout_users = 20000;

  int64_t epochs() const { return frozen_epochs + unfrozen_epochs; }

  /// Throws, naming the flag, on any setting out of its range; run before
  /// any work, so a bad flag costs nothing.
  void validate() const {
    auto need = [](bool ok, const std::string& what) {
      if (!ok) throw rectrain::Error(what);
    };
    auto finite = [](double v) { return std::isfinite(v); };
    auto show = [](double v) {
      std::ostringstream out;
      out << v;
      return out.str();
    };
    need(item_factors >= 0 && item_factors <= 4096, "--item-factors must be in [0, 4096] (0: from the data size), got " +
                                                         std::to_string(item_factors));
    need(source_factors >= 0 && source_factors <= 4096,
         "--source-factors must be in [0, 4096] (0: half the item factors), got " + std::to_string(source_factors));
    for (const auto w : hidden) need(w >= 1, "--hidden: every width must be >= 1, got " + std::to_string(w));
    need(finite(dropout) && dropout >= 0 && dropout < 1, "--dropout must be in [0, 1), got " + show(dropout));
    parse_normalization(normalization);
    need(finite(margin) && margin >= 0, "--margin must be a finite number >= 0, got " + show(margin));
    need(frozen_epochs >= 0, "--frozen-epochs must be >= 0, got " + std::to_string(frozen_epochs));
    need(unfrozen_epochs >= 0, "--unfrozen-epochs must be >= 0, got " + std::to_string(unfrozen_epochs));
    need(epochs() >= 1, "--frozen-epochs and --unfrozen-epochs are both 0: nothing would be trained");
    need(als_iterations >= 1, "--als-iterations must be >= 1, got " + std::to_string(als_iterations));
    need(finite(als_regularization) && als_regularization >= 0,
         "--als-regularization must be a finite number >= 0, got " + show(als_regularization));
    need(finite(lr) && lr > 0, "--lr must be a finite number > 0, got " + show(lr));
    need(finite(weight_decay) && weight_decay >= 0, "--weight-decay must be a finite number >= 0, got " + show(weight_decay));
    need(group_size >= 2, "--group-size must be >= 2 (the target head ranks views within a group), got " +
                              std::to_string(group_size));
    need(batch_groups >= 0, "--batch-groups must be >= 0 (0: from the data size), got " + std::to_string(batch_groups));
    need(finite(clip_grad_norm) && clip_grad_norm >= 0,
         "--clip-grad-norm must be a finite number >= 0 (0: off), got " + show(clip_grad_norm));
    need(std::find(table_updates().begin(), table_updates().end(), table_update) != table_updates().end(),
         "--table-update must be sparse, adam or lazy, got '" + table_update + "'");
    need(finite(holdout_fraction) && holdout_fraction > 0 && holdout_fraction <= 1,
         "--holdout-fraction must be in (0, 1], got " + show(holdout_fraction));
    need(holdout_users >= 1, "--holdout-users must be >= 1, got " + std::to_string(holdout_users));
  }
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
        << "\nbf16=" << bf16 << "\nextra_heads=" << extra_heads
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
    auto number = [&](const char* key, auto parse) {
      const std::string& text = get(key);
      try {
        size_t used = 0;
        const auto v = parse(text, &used);
        if (used == text.size()) return v;
      } catch (const std::exception&) {
      }
      throw rectrain::Error(where + ": configuration value " + key + "='" + text + "' is not a number");
    };
    auto i64 = [&](const char* key) { return number(key, [](const std::string& t, size_t* u) { return std::stoll(t, u); }); };
    auto f64 = [&](const char* key) { return number(key, [](const std::string& t, size_t* u) { return std::stod(t, u); }); };
    RecipeConfig c;
    c.item_factors = i64("item_factors");
    c.source_factors = i64("source_factors");
    c.hidden = parse_widths(get("hidden"), where + ": configuration value hidden");
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
    c.extra_heads = i64("extra_heads") != 0;
    c.holdout_fraction = f64("holdout_fraction");
    c.holdout_users = i64("holdout_users");
    return c;
  }
};

/// The heads a dataset supports beside the target's: a head per standard
/// signal the training rows really record (a constant column, like
/// mlsmall's share and bookmarks, gets none) and, with `extra`, per extra
/// numeric column: "name:binary" for a 0/1 column, "name:regression"
/// otherwise. `unused` collects the extra columns left out.
inline std::vector<std::string> known_signals(const rectrain::Dataset& train, bool extra = false,
                                              std::vector<std::string>* unused = nullptr) {
  std::vector<std::string> out;
  const auto& standard = rectrain::standard_signals();
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

/// The sizes a model's tables and inputs are built with.
struct ModelShape {
  int64_t users = 0, items = 0, sources = 0, embedding_dim = 0;
  static ModelShape of(const rectrain::Dataset& ds) {
    return {ds.num_users(), ds.num_items(), ds.num_sources(), ds.embedding_dim()};
  }
};

/// The recipe's model: user tower (id, gender, age), item tower (id, source,
/// duration, content vector), shared MLP, one head per signal (see
/// known_signals) plus the target's ranking head. Numeric features are
/// fitted on `fit_on` when given (training); otherwise a trained model's
/// statistics are loaded into them.
inline rectrain::Ranker build_model(const ModelShape& shape, const RecipeConfig& c,
                                    const std::vector<std::string>& signals,
                                    const rectrain::Dataset* fit_on = nullptr) {
  using namespace rectrain;
  // Random tables start with rows of about unit norm, like normalised ALS
  // rows, so --no-als changes the initial values and nothing else.
  auto id_table = [&c](int64_t n, int64_t dim) {
    return CategoricalFeature(CategoricalFeatureOptions(n, dim)
                                  .init_std(1.0 / std::sqrt(static_cast<double>(dim)))
                                  .sparse(c.table_update != "adam"));
  };
  NumericFeature age, duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  if (fit_on) {
    age->fit(fit_on->users["age"]);
    duration->fit(fit_on->items["duration"]);
  }
  Tower user;
  user->add("user", id_table(shape.users, c.item_factors + c.source_factors))
      .add("gender", CategoricalFeature(3, 4))
      .add("age", age);
  Tower item;
  item->add("item", id_table(shape.items, c.item_factors));
  if (c.source_factors > 0) item->add("source", id_table(shape.sources, c.source_factors));
  item->add("duration", duration);
  if (shape.embedding_dim > 0) item->add("item_embedding", DenseFeature(shape.embedding_dim));
  if (c.popularity) {
    NumericFeature views(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
    if (fit_on) views->fit(item_view_counts(*fit_on));
    item->add("item_views", views);
  }
  Ranker ranker(user, item,
                RankerOptions(
                    MlpBlocks(c.hidden).normalization(parse_normalization(c.normalization)).dropout(c.dropout)));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(RankingHeadOptions(h).loss(
                                 RankingLossOptions(RankingLossKind::PairwiseMargin)
                                     .pairwise(PairwiseLossOptions().margin(c.margin)))));
  for (const auto& signal : signals) {
    const auto colon = signal.find(':');
    const std::string s = signal.substr(0, colon), kind = colon == std::string::npos ? "" : signal.substr(colon + 1);
    if (s == "timespent")
      ranker->add_head(s, RegressionHead(RegressionHeadOptions(h, s).log1p_label(true)));
    else if (s == "like" || s == "dislike" || s == "share" || s == "bookmarks" || kind == "binary")
      ranker->add_head(s, BinaryHead(h, s));
    else if (kind == "regression")
      ranker->add_head(s, RegressionHead(RegressionHeadOptions(h, s)));
    else
      throw Error("unknown head '" + signal + "' (expected a standard signal or name:binary / name:regression)");
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

/// The weights of the id tables the schedule freezes (user, item, source).
inline std::vector<std::string> id_table_parameters(const torch::nn::Module& model) {
  std::vector<std::string> names{"user", "item"};
  for (const auto& path : rectrain::categorical_feature_paths(model))
    if (path.size() >= 6 && path.compare(path.size() - 6, 6, "source") == 0) names.push_back("source");
  return rectrain::table_parameter_names(model, names);
}

} // namespace vk
