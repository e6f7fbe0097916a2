#pragma once
// The challenge recipe's model (DESIGN.md) from its RecipeSettings: user
// tower (id, gender, age), item tower (id, source, duration, content
// vector, view count), the shared MLP, the target's pairwise-margin ranking
// head and a head per signal. RecipeModelFile keeps a trained one with what
// scoring it needs (settings, heads, id maps, score scale), so a program
// can load a model rectrain-vk trained and score data with it:
//
//   const auto file = RecipeModelFile::read("out/model-seed1.pt");
//   auto model = file.load_model("out/model-seed1.pt");
//   const auto scores = file.score_candidates(model, dataset, item_view_counts(dataset));

#include <rectrain/core/error.hpp>
#include <rectrain/core/parse.hpp>
#include <rectrain/data/batch_spec.hpp>
#include <rectrain/data/challenge_schema.hpp>
#include <rectrain/data/content_affinity.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/view_history.hpp>
#include <rectrain/data/vocabulary.hpp>
#include <rectrain/metrics/baselines.hpp>
#include <rectrain/nn/categorical_feature.hpp>
#include <rectrain/nn/dense_feature.hpp>
#include <rectrain/nn/history_feature.hpp>
#include <rectrain/nn/numeric_feature.hpp>
#include <rectrain/nn/ranker.hpp>
#include <rectrain/nn/ranking_head.hpp>
#include <rectrain/nn/signal_heads.hpp>
#include <rectrain/nn/tower.hpp>
#include <rectrain/recipe/recipe_settings.hpp>
#include <rectrain/train/checkpoint.hpp>
#include <rectrain/train/ensemble.hpp>
#include <rectrain/train/scoring.hpp>

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace rectrain {

/// The sizes a recipe model's tables and inputs are built with.
struct RecipeShape {
  int64_t users = 0, items = 0, sources = 0, embedding_dim = 0;
  static RecipeShape of(const Dataset& ds) { return {ds.num_users(), ds.num_items(), ds.num_sources(), ds.embedding_dim()}; }
};

/// The recipe's Ranker with a head per `signals` (trainable_signals'
/// names). Numeric features are fitted on `fit_on` when given (training);
/// otherwise a trained model's statistics are loaded into them.
inline Ranker build_recipe_ranker(const RecipeShape& shape, const RecipeSettings& s,
                                  const std::vector<std::string>& signals, const Dataset* fit_on = nullptr) {
  // Random tables start with rows of about unit norm, like normalised ALS
  // rows, so training without ALS changes the initial values and nothing else.
  auto id_table = [&s](int64_t n, int64_t dim) {
    return CategoricalFeature(CategoricalFeatureOptions(n, dim)
                                  .init_std(1.0 / std::sqrt(static_cast<double>(dim)))
                                  .sparse(s.table_update != "adam"));
  };
  const auto log_scaled = NumericFeatureOptions().scaling(NumericScaling::Log1pZScore);
  NumericFeature age, duration(log_scaled), views(log_scaled);
  if (fit_on) {
    age->fit(fit_on->users["age"]);
    duration->fit(fit_on->items["duration"]);
    if (s.popularity) views->fit(item_view_counts(*fit_on));
  }
  Tower user, item;
  user->add("user", id_table(shape.users, s.item_factors + s.source_factors))
      .add("gender", CategoricalFeature(3, 4))
      .add("age", age);
  if (s.history > 0)
    user->add("history", HistoryFeature(HistoryFeatureOptions(shape.items, s.item_factors)
                                            .window(s.history)
                                            .lists(ViewHistory::kReactions)
                                            .init_std(1.0 / std::sqrt(static_cast<double>(s.item_factors)))
                                            .sparse(s.table_update != "adam")
                                            .query(s.history_similarity)
                                            .attention(s.history_attention)
                                            .vectors(s.history_vectors)));
  if (s.statistics) user->add("user_statistics", DenseFeature(ViewHistory::kStatistics));
  if (s.content_affinity) user->add("content_affinity", DenseFeature(ContentAffinity::kWidth));
  item->add("item", id_table(shape.items, s.item_factors));
  if (s.source_factors > 0) item->add("source", id_table(shape.sources, s.source_factors));
  item->add("duration", duration);
  if (shape.embedding_dim > 0) item->add("item_embedding", DenseFeature(shape.embedding_dim));
  if (s.popularity) item->add("item_views", views);
  if (s.statistics) item->add("item_statistics", DenseFeature(ViewHistory::kStatistics));
  Ranker ranker(user, item,
                RankerOptions(MlpBlocks(s.hidden).dropout(s.dropout).normalization(s.mlp_normalization()))
                    .cross_layers(s.cross_layers)
                    .experts(s.experts)
                    .task_experts(s.task_experts));
  ranker->add_head("target", RankingHead(RankingHeadOptions(ranker->hidden_dim())
                                             .loss(RankingLossOptions(RankingLossKind::PairwiseMargin)
                                                       .pairwise(PairwiseLossOptions().margin(s.margin)))));
  for (const auto& signal : signals) add_signal_head(*ranker, signal);
  return ranker;
}

/// `spec` (the standard columns of some rows, whose items are `items`) plus
/// the column only the recipe reads: item_views (`views`, item_view_counts
/// over the interactions the model may know of), when that feature is on.
inline BatchSpec with_recipe_columns(BatchSpec spec, const RecipeSettings& s, const torch::Tensor& views,
                                     const torch::Tensor& items) {
  if (s.popularity) spec.feature("item_views", views, items);
  return spec;
}

/// The parameter names of the tables the recipe freezes and updates
/// sparsely: the id tables, and the history feature's item table.
inline std::vector<std::string> recipe_table_names(Ranker& model, const RecipeSettings& s) {
  std::vector<std::string> names{"user", "item"};
  if (s.source_factors > 0) names.push_back("source");
  auto out = table_parameter_names(*model, names);
  if (s.history > 0) out.push_back("user_tower.features.history.weight");
  return out;
}

/// The ViewHistory options of a recipe's settings.
inline ViewHistoryOptions history_options(const RecipeSettings& s) {
  return ViewHistoryOptions().window(std::max<int64_t>(1, s.history)).long_watch(s.long_watch).item_folds(s.item_folds);
}

/// Which views a row's history and statistics columns see.
enum class HistoryTime : uint8_t {
  Row,  ///< row r of the history's own views: those before it (training rows)
  All,  ///< every view the history knows (held-out rows, candidates)
};

/// The ContentAffinity options of a recipe's settings.
inline ContentAffinityOptions affinity_options(const RecipeSettings&) { return ContentAffinityOptions(); }

/// `spec` plus the columns of the history features that are on: "history"
/// (ViewHistory::windows), "user_statistics" and "item_statistics" from
/// `history`, "content_affinity" from `affinity`, for rows whose users and
/// items (indices into their data) are given, computed per batch.
/// `item_map` (optional): history item index -> the model's item index
/// (-1: the model never saw it).
inline BatchSpec with_history_columns(BatchSpec spec, const RecipeSettings& s,
                                      const std::shared_ptr<const ViewHistory>& history, const torch::Tensor& users,
                                      const torch::Tensor& items, HistoryTime time,
                                      const torch::Tensor& item_map = {},
                                      const std::shared_ptr<const ContentAffinity>& affinity = {}) {
  if (s.content_affinity) {
    if (!affinity)
      throw Error("with_history_columns: the settings use content_affinity, but no ContentAffinity is given");
    const int64_t all = affinity->num_rows();
    spec.computed_feature("content_affinity", [affinity, users, items, time, all](const torch::Tensor& rows) {
      const auto r = rows.to(users.device());
      const auto t = time == HistoryTime::Row ? rows.to(torch::kCPU) : torch::full({rows.numel()}, all, torch::kInt64);
      return affinity->features(users.index_select(0, r), items.index_select(0, r.to(items.device())), t);
    });
  }
  if (!s.uses_history()) return spec;
  if (!history) throw Error("with_history_columns: the settings use history features, but no ViewHistory is given");
  const int64_t all = history->num_rows();
  const auto times = [time, all](const torch::Tensor& rows) {
    return time == HistoryTime::Row ? rows.to(torch::kCPU) : torch::full({rows.numel()}, all, torch::kInt64);
  };
  if (s.history > 0) {
    const bool query = s.history_similarity;
    spec.computed_feature("history", [history, users, items, item_map, times, query](const torch::Tensor& rows) {
      auto w = history->windows(users.index_select(0, rows.to(users.device())), times(rows));
      if (query) {  // one more list: the row's own item first (HistoryFeature's query)
        auto own = torch::full({w.size(0), 1, w.size(2)}, -1, torch::kInt64);
        own.select(1, 0).select(1, 0).copy_(items.index_select(0, rows.to(items.device())).to(torch::kCPU));
        w = torch::cat({w, own}, 1);
      }
      if (item_map.defined()) w = torch::where(w >= 0, item_map.index({w.clamp_min(0)}), w);
      return w;
    });
  }
  if (s.statistics) {
    spec.computed_feature("user_statistics", [history, users, times](const torch::Tensor& rows) {
      return history->user_statistics(users.index_select(0, rows.to(users.device())), times(rows));
    });
    spec.computed_feature("item_statistics", [history, users, items, times](const torch::Tensor& rows) {
      const auto r = rows.to(items.device());
      return history->item_statistics(items.index_select(0, r), times(rows), users.index_select(0, r));
    });
  }
  return spec;
}

/// A trained recipe model's file: the weights ("model") and, beside them,
/// the settings and heads it was built with, its input width, its training
/// data's fingerprint (DatasetFingerprint's text), the id maps of its
/// tables (it is indexed by raw id, whatever the numbering of the data it
/// scores) and its score scale on its validation rows (for ensembles).
struct RecipeModelFile {
  RecipeSettings settings;
  std::vector<std::string> signals;
  int64_t embedding_dim = 0;
  std::string data;
  Vocabulary vocabulary;
  ScoreScale scale;

  RecipeShape shape() const {
    return {vocabulary.users.size(), vocabulary.items.size(), vocabulary.sources.size(), embedding_dim};
  }

  /// Writes the header and `model`'s weights (atomically).
  void save(const std::string& path, Ranker& model) const {
    RecipeModelFile copy = *this;
    std::string settings_text = settings.to_text(), signals_text = join(signals);
    copy.header(settings_text, signals_text).add("model", *model).save(path);
  }

  /// The header of `path` (not the weights).
  static RecipeModelFile read(const std::string& path) {
    RecipeModelFile out;
    std::string settings_text, signals_text;
    out.header(settings_text, signals_text).load(path);
    out.settings = RecipeSettings::from_text(settings_text, path);
    out.signals = split_list(signals_text);
    return out;
  }

  /// The model the header describes, with the file's weights; a file whose
  /// tensors have other shapes is refused.
  Ranker load_model(const std::string& path) const {
    auto model = build_recipe_ranker(shape(), settings, signals);
    load_module(path, *model);
    return model;
  }

  /// Target-head scores of every candidates row of `ds` (`views`: item view
  /// counts over the interactions known when scoring; `history`: the views
  /// known then, for a model with history features, built from ds when not
  /// given), raw ids mapped through the model's vocabulary.
  torch::Tensor score_candidates(Ranker& model, const Dataset& ds, const torch::Tensor& views,
                                 ScoreOptions options = {}, std::shared_ptr<const ViewHistory> history = {},
                                 std::shared_ptr<const ContentAffinity> affinity = {}) const {
    return score_candidate_rows(model, ds, views, 0, ds.candidates.num_rows(), std::move(options), std::move(history),
                                std::move(affinity));
  }

  /// The ViewHistory a model with history features reads, over `ds`'s
  /// interactions (null when it has none).
  std::shared_ptr<const ViewHistory> history_of(const Dataset& ds) const {
    if (!settings.uses_history()) return nullptr;
    return std::make_shared<const ViewHistory>(
        ds, history_options(settings));
  }

  /// The ContentAffinity a model with that feature reads, over `ds`'s
  /// interactions (null when it has none).
  std::shared_ptr<const ContentAffinity> affinity_of(const Dataset& ds) const {
    if (!settings.content_affinity) return nullptr;
    return std::make_shared<const ContentAffinity>(ds, affinity_options(settings));
  }

  /// score_candidates for candidate rows [first, first + count) only (one
  /// rank's share, say).
  torch::Tensor score_candidate_rows(Ranker& model, const Dataset& ds, const torch::Tensor& views, int64_t first,
                                     int64_t count, ScoreOptions options = {},
                                     std::shared_ptr<const ViewHistory> history = {},
                                     std::shared_ptr<const ContentAffinity> affinity = {}) const {
    if (first < 0 || count < 0 || first + count > ds.candidates.num_rows())
      throw Error(detail::concat("RecipeModelFile: candidate rows [", first, ", ", first + count, ") are not within the ",
                                 ds.candidates.num_rows(), " candidates"));
    if (embedding_dim != ds.embedding_dim())
      throw Error(detail::concat("RecipeModelFile: the model reads ", embedding_dim, "-wide item content vectors, but the dataset's "
                                 "items have ", ds.embedding_dim(), "; score data with the training data's columns"));
    if (settings.bf16 && !options.autocast()) options.autocast(at::kBFloat16);
    auto spec = with_recipe_columns(candidate_batch_spec(ds, vocabulary), settings, views, ds.candidates["item"]);
    if (settings.content_affinity && !affinity) affinity = affinity_of(ds);
    if (affinity && (affinity->num_users() != ds.num_users() || affinity->num_items() != ds.num_items()))
      throw Error(detail::concat("RecipeModelFile: the ContentAffinity given has ", affinity->num_users(), " users and ",
                                 affinity->num_items(), " items, the dataset scored ", ds.num_users(), " and ",
                                 ds.num_items()));
    if (settings.uses_history()) {
      if (!history) history = history_of(ds);
      if (history->num_users() != ds.num_users() || history->num_items() != ds.num_items())
        throw Error(detail::concat("RecipeModelFile: the ViewHistory given has ", history->num_users(), " users and ",
                                   history->num_items(), " items, the dataset scored ", ds.num_users(), " and ",
                                   ds.num_items()));
      spec = with_history_columns(std::move(spec), settings, history, ds.candidates["user"], ds.candidates["item"],
                                  HistoryTime::All, vocabulary.items.encode(ds.item_ids.raw_ids()), affinity);
    } else if (settings.content_affinity) {
      spec = with_history_columns(std::move(spec), settings, nullptr, ds.candidates["user"], ds.candidates["item"],
                                  HistoryTime::All, {}, affinity);
    }
    return score_groups(model, spec, torch::arange(first, first + count).view({-1, 1}), options).view(-1);
  }

 private:
  Checkpoint header(std::string& settings_text, std::string& signals_text) {
    Checkpoint c;
    c.add("config", settings_text).add("signals", signals_text).add("embedding_dim", embedding_dim).add("data", data);
    c.add("score_mean", scale.mean).add("score_std", scale.std);
    c.add("user_ids", vocabulary.users).add("item_ids", vocabulary.items).add("source_ids", vocabulary.sources);
    return c;
  }
};

} // namespace rectrain
