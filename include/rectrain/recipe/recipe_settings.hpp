#pragma once
// RecipeSettings: every setting of the challenge recipe (DESIGN.md), as one
// Settings table: the fields a trainer sets, the flags rectrain-vk derives
// from them (--item-factors, --no-als, ...), the key=value text saved in
// every model file, and the range checks. 0 for a size means "from the
// data" (adapt_to).
//
//   RecipeSettings recipe;
//   recipe.unfrozen_epochs = 2;
//   recipe.validate();
//   const std::string text = recipe.to_text();  // item_factors=0\nsource_factors=0\nhidden=512,256\n...

#include <rectrain/core/error.hpp>
#include <rectrain/core/settings.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/nn/mlp.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace rectrain {

struct RecipeSettings {
  int64_t item_factors = 0, source_factors = 0;
  std::vector<int64_t> hidden{512, 256};
  double dropout = 0.1;
  std::string normalization = "layernorm";
  double margin = 1.0;
  bool popularity = true;
  int64_t frozen_epochs = 5, unfrozen_epochs = 1;
  bool freeze = true, als = true;
  int64_t als_iterations = 15;
  double als_regularization = 0.01, lr = 3e-3, weight_decay = 0;
  int64_t group_size = 20, batch_groups = 0;
  double clip_grad_norm = 0;
  std::string table_update = "sparse";
  bool bf16 = false, extra_heads = false;
  int64_t history = 0;   ///< window of ViewHistory (0: no history feature)
  bool history_similarity = false;
  bool history_attention = false;
  bool history_vectors = true;
  bool statistics = false;
  bool content_affinity = false;
  int64_t item_folds = 0;
  double long_watch = -1;  ///< ViewHistory's long-watch threshold (-1: from the data)
  int64_t cross_layers = 0, experts = 0, task_experts = 0;
  bool keep_best = false;
  int64_t patience = 0;
  double holdout_fraction = 0.1;
  int64_t holdout_users = 20000;

  /// The table of fields: keys, help, ranges (bound to this object).
  Settings settings() {
    Settings s;
    s.add("item_factors", item_factors, "Item-ALS factors / id embedding width (0: from data size)")
        .at_least(0).at_most(4096).note("0: from the data size");
    s.add("source_factors", source_factors, "Source-ALS factors (0: half the item factors)")
        .at_least(0).at_most(4096).note("0: half the item factors");
    s.add("hidden", hidden, "Widths of the shared MLP, comma-separated").at_least(1);
    s.add("dropout", dropout, "Dropout after each MLP block").at_least(0).below(1);
    s.add("normalization", normalization, "layernorm, batchnorm or none").one_of({"layernorm", "batchnorm", "none"});
    s.add("margin", margin, "Pairwise margin of the target head").at_least(0);
    s.add("popularity", popularity, "Leave out the item view-count feature");
    s.add("frozen_epochs", frozen_epochs, "Epochs with id embeddings frozen").at_least(0);
    s.add("unfrozen_epochs", unfrozen_epochs, "Epochs after, everything trained").at_least(0);
    s.add("freeze", freeze, "Never freeze the id embeddings");
    s.add("als", als, "Random id embeddings instead of ALS factors");
    s.add("als_iterations", als_iterations, "ALS iterations").at_least(1);
    s.add("als_regularization", als_regularization, "ALS lambda").at_least(0);
    s.add("lr", lr, "Adam learning rate").above(0);
    s.add("weight_decay", weight_decay, "Adam weight decay").at_least(0);
    s.add("group_size", group_size, "Views per group (the test's 20)")
        .at_least(2).note("the target head ranks views within a group");
    s.add("batch_groups", batch_groups, "Groups per batch (0: from data size)").at_least(0).note("0: from the data size");
    s.add("clip_grad_norm", clip_grad_norm, "Clip the gradient norm (0: off)").at_least(0).note("0: off");
    s.add("table_update", table_update,
          "Unfrozen id tables: sparse (Adam's update from sparse gradients, one pass), adam (dense gradients, "
          "torch::optim::Adam), lazy (only the rows each batch used)")
        .one_of({"sparse", "adam", "lazy"});
    s.add("bf16", bf16, "Forward passes under bfloat16 autocast (on CPU: only one with native bf16)");
    s.add("extra_heads", extra_heads,
          "Train a head on each extra numeric column of interactions (binary for 0/1 columns, regression otherwise)");
    s.add("history", history,
          "Items per reaction class (liked, disliked, long watch, other) of the user's views before each row, pooled "
          "into a history feature (0: none)")
        .at_least(0).at_most(1024).absent("0").note("0: no history feature");
    s.add("history_similarity", history_similarity,
          "The history feature also gives the candidate's similarity to each class's items (mean and max)")
        .absent("0");
    s.add("history_attention", history_attention,
          "Pool each class's items by attention with the candidate as the query (DIN) instead of the mean; needs "
          "--history-similarity")
        .absent("0");
    s.add("history_vectors", history_vectors,
          "Leave the pooled vectors out of the history feature: per class only its fill and the candidate's two "
          "similarities (about the defaults' speed); needs --history-similarity")
        .absent("1");
    s.add("statistics", statistics,
          "Per-row user and item statistics from strictly earlier views: views and smoothed rates of each reaction class")
        .absent("0");
    s.add("content_affinity", content_affinity,
          "Per-row fit of the user's watch ratio on the items' content vectors (strictly earlier views), "
          "applied to the row's item (ContentAffinity)")
        .absent("0");
    s.add("item_folds", item_folds,
          "Item statistics of training rows out of fold over this many user folds (0: from strictly earlier views)")
        .at_least(0).at_most(1000).absent("0").note("0: strictly earlier views");
    s.add("long_watch", long_watch,
          "Timespent from which a view neither liked nor disliked counts as a long watch (-1: the median of such views)")
        .at_least(-1).absent("-1").note("-1: from the data");
    s.add("cross_layers", cross_layers, "DCNv2 cross layers before the shared MLP (0: none)")
        .at_least(0).at_most(16).absent("0");
    s.add("experts", experts,
          "Multi-task experts instead of the shared MLP, mixed per head by a gate (MMoE; 0: the shared MLP)")
        .at_least(0).at_most(64).absent("0").note("0: the shared MLP");
    s.add("task_experts", task_experts, "Experts of each head's own beside those (PLE's gate control)")
        .at_least(0).at_most(16).absent("0");
    s.add("keep_best", keep_best, "End with the weights of the epoch with the best validation GAUC").absent("0");
    s.add("patience", patience, "Stop after this many epochs without a better validation GAUC (0: never)")
        .at_least(0).absent("0").note("0: never");
    s.add("holdout_fraction", holdout_fraction, "Share of eligible users held out for validation").above(0).at_most(1);
    s.add("holdout_users", holdout_users, "At most this many validation users").at_least(1);
    return s;
  }
  std::string to_text() const { return RecipeSettings(*this).settings().to_text(); }
  /// to_text()'s text back (checked); `where` names it in errors.
  static RecipeSettings from_text(const std::string& text, const std::string& where) {
    RecipeSettings r;
    auto s = r.settings();
    s.from_text(text, where);
    r.validate();
    return r;
  }

  int64_t epochs() const { return frozen_epochs + unfrozen_epochs; }
  /// Whether rows need a ViewHistory (history or statistics features).
  bool uses_history() const { return history > 0 || statistics; }
  /// Whether rows need any per-row history column (a ViewHistory's or
  /// ContentAffinity's).
  bool uses_history_columns() const { return uses_history() || content_affinity; }
  Normalization mlp_normalization() const {
    if (normalization == "batchnorm") return Normalization::BatchNorm;
    return normalization == "none" ? Normalization::None : Normalization::LayerNorm;
  }
  /// Throws, naming the flag, on any setting out of its range.
  void validate() const {
    RecipeSettings(*this).settings().validate();
    if (epochs() < 1) throw Error("--frozen-epochs and --unfrozen-epochs are both 0: nothing would be trained");
    if (item_folds == 1) throw Error("--item-folds must be 0 or at least 2, got 1");
    if (history_similarity && history == 0)
      throw Error("--history-similarity compares the candidate with the history: it needs --history > 0");
    if (history_attention && !history_similarity)
      throw Error("--history-attention uses the candidate as the attention's query: it needs --history-similarity");
    if (!history_vectors && !history_similarity)
      throw Error("--no-history-vectors leaves only the candidate's similarities to the history: it needs "
                  "--history-similarity");
  }

  /// Fills the sizes left at 0 from the training data and its number of
  /// groups. Small data gets narrower ALS factors (a 256-wide factorisation
  /// of a few hundred users is mostly noise) and smaller batches (enough
  /// optimiser steps per epoch).
  void adapt_to(const Dataset& train, int64_t train_groups) {
    auto pow2_floor = [](double x) {
      int64_t p = 1;
      while (static_cast<double>(p * 2) <= x) p *= 2;
      return p;
    };
    if (item_factors == 0) item_factors = std::clamp<int64_t>(pow2_floor(train.num_users() / 8.0), 16, 256);
    if (source_factors == 0) source_factors = std::max<int64_t>(8, item_factors / 2);
    if (train.num_sources() == 0) source_factors = 0;
    if (batch_groups == 0) batch_groups = std::clamp<int64_t>(pow2_floor(train_groups / 250.0), 16, 1024);
  }
};

} // namespace rectrain
