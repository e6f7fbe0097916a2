#pragma once
// rectrain-vk train / predict: the whole recipe over one dataset, one model
// per seed, each with its own validation split, checkpointed every epoch.

#include <rectrain/rectrain.hpp>
#include <rectrain/dist/data_parallel.hpp>
#include <rectrain/dist/sharded_als.hpp>
#include <rectrain/dist/sharded_compute.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace vk {

/// printf to stdout, flushed, with integers passed as (unsigned) long long
/// (%lld, %llu).
template <typename T>
auto printf_arg(T v) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return static_cast<long long>(v);
  else if constexpr (std::is_integral_v<T>) return static_cast<unsigned long long>(v);
  else return v;
}
/// True on the ranks of a data-parallel run other than rank 0: they print
/// nothing but their errors.
inline bool& quiet() {
  static bool q = false;
  return q;
}

template <typename... Args>
void say(const char* format, Args... args) {
  if (quiet()) return;
  if constexpr (sizeof...(Args) == 0) std::fputs(format, stdout);  // a plain line: no format to check
  else std::printf(format, printf_arg(args)...);
  std::fflush(stdout);
}

struct TrainRun {
  std::string data, out, device = "cpu";
  std::vector<uint64_t> seeds{1};
  bool resume = false, overwrite = false;  ///< --overwrite: remove another run's outputs instead of refusing
  std::string command;                     ///< the command line, for the lock file
  int64_t stop_after = 0, workers = 2;     ///< stop_after: epochs this run trains at most (0: no limit)
  int64_t memory_budget = 0;  ///< refuse a dataset whose loading peak is above this (0: none)
  rectrain::RecipeSettings config;
  /// The ranks of a data-parallel run (null: this process alone). Rank 0
  /// leads: it alone writes checkpoints, models, metrics and predictions.
  std::shared_ptr<rectrain::ProcessGroup> group;
  bool lead() const { return !group || group->rank() == 0; }
  int64_t world_size() const { return group ? group->world_size() : 1; }
  /// fn() here; in a data-parallel run, then every rank learns whether it
  /// failed on any rank (checked_on_every_rank).
  template <typename F>
  void on_every_rank(const std::string& what, F&& fn) const {
    if (group) rectrain::checked_on_every_rank(*group, what, std::forward<F>(fn));
    else fn();
  }
  /// What the ranks of a run must agree on (the data is compared apart).
  std::string settings_text() const {
    std::string seeds_text;
    for (const auto seed : seeds) seeds_text += (seeds_text.empty() ? "" : ",") + std::to_string(seed);
    return config.to_text() + "seeds=" + seeds_text + "\nresume=" + std::to_string(resume) +
           "\noverwrite=" + std::to_string(overwrite) + "\nstop_after=" + std::to_string(stop_after) +
           "\ndevice_type=" + rectrain::parse_device(device, "--device").str().substr(0, 4) + "\n";
  }
};

inline rectrain::RunDirectory run_directory(const std::string& out) {
  return {out, {"checkpoint", "model"},
          {"predictions.csv", "metrics.jsonl", "learning_curve.png", "learning_curve.dat", "learning_curve.gp"}};
}

inline void print_candidate_gauc(const std::string& what, const rectrain::Dataset& ds, const torch::Tensor& scores) {
  if (!ds.candidates.contains("target")) return;
  const auto m = rectrain::candidate_gauc(ds, scores);
  if (m.users == 0) say("%s: candidates GAUC undefined (no candidate user has two different targets)\n", what.c_str());
  else say("%s: candidates GAUC %.6f over %lld users\n", what.c_str(), m.value, m.users);
}

/// Trains (or resumes) one seed's model on `ds` (taken: it shrinks to the
/// training rows) and returns its candidate scores and score scale; the
/// scores are undefined when `epoch_budget` (negative: no limit) ran out
/// first. `all_views`, `all_history`: what is known of every loaded
/// interaction when the candidates are scored. `data`: the dataset's fingerprint, kept in checkpoint and model;
/// `records`: every seed's epochs so far, rewritten into metrics.jsonl
/// after each epoch.
inline std::pair<torch::Tensor, rectrain::ScoreScale> train_seed(
    rectrain::Dataset ds, const torch::Tensor& all_views, const std::shared_ptr<const rectrain::ViewHistory>& all_history,
    const std::shared_ptr<const rectrain::ContentAffinity>& all_affinity, const TrainRun& run, uint64_t seed, const std::string& data, std::vector<rectrain::EpochRecord>& records,
    int64_t& epoch_budget) {
  using namespace rectrain;
  const auto dir = run_directory(run.out);
  RecipeSettings cfg = run.config;
  // Validation: the last --group-size views of users with twice as many.
  const auto split = split_holdout(std::move(ds), HoldoutOptions().views(cfg.group_size).min_views(2 * cfg.group_size)
      .fraction(cfg.holdout_fraction).max_users(cfg.holdout_users).seed(seed));
  const Dataset& train = split.train;
  GroupSampler sampler(train.interactions["user"], train.interaction_targets(),
                       GroupSamplerOptions(cfg.group_size).seed(seed));
  sampler.set_epoch(0);
  if (sampler.num_groups() == 0)
    throw Error("no training groups: a group is --group-size " + std::to_string(cfg.group_size) + " views of one user "
                "with two different targets, and the " + std::to_string(train.num_interactions()) + " training rows "
                "have none; the target head would learn nothing; lower --group-size or check the like and dislike "
                "columns");
  cfg.adapt_to(train, sampler.num_groups());
  // A data-parallel step takes batch_groups over all ranks: the same global
  // batch as one process, each rank a share of it.
  const int64_t world = run.world_size();
  sampler.set_batch_size(std::max<int64_t>(1, cfg.batch_groups / world));
  std::unique_ptr<ShardedSampler> sharded;
  if (run.group) sharded = std::make_unique<ShardedSampler>(sampler, run.group->rank(), world);
  BatchSampler& batches = sharded ? static_cast<BatchSampler&>(*sharded) : sampler;
  if (world > 1 && cfg.batch_groups % world != 0)
    say("seed %llu: --batch-groups %lld is not a multiple of the %lld ranks: each takes %lld groups a step, %lld in "
        "all\n", seed, cfg.batch_groups, world, sampler.options().batch_size(), sampler.options().batch_size() * world);
  std::vector<std::string> unused;
  const auto signals = trainable_signals(train, cfg.extra_heads, &unused);
  say("seed %llu: %lld training rows in %lld groups of %lld, %lld per batch; validation: last %lld views of %lld "
      "users; heads: target,%s\n", seed, train.num_interactions(), sampler.num_groups(), cfg.group_size,
      cfg.batch_groups, cfg.group_size, split.valid_rows.size(0), join(signals).c_str());
  if (!unused.empty())
    say("seed %llu: interaction column(s) %s not used (--extra-heads trains a head on each that varies)\n", seed,
        join(unused).c_str());

  const auto device = parse_device(run.device, "--device");
  torch::manual_seed(seed);
  auto model = build_recipe_ranker(RecipeShape::of(train), cfg, signals, &train);
  model->to(device);
  std::string config_text = cfg.to_text(), data_text = data;
  const std::string checkpoint = dir.seed_file("checkpoint", seed);
  const bool resuming = run.resume && std::filesystem::exists(checkpoint);
  if (resuming) {
    // Settings and data first: a model of the same sizes would load and be wrong.
    std::string saved_config, saved_data;
    Checkpoint().add("config", saved_config).add("data", saved_data).load(checkpoint);
    if (saved_config != config_text)
      throw Error("--resume: " + checkpoint + " was written with other settings:\n" + saved_config +
                  "this run has:\n" + config_text + "rerun with the same flags, or without --resume");
    const auto differences = DatasetFingerprint::from_text(saved_data, checkpoint)
        .differences(DatasetFingerprint::from_text(data, run.data), "in the checkpoint", "in " + run.data);
    if (!differences.empty())
      throw Error("--resume: " + checkpoint + " was trained on other data than " + run.data + ":\n" + differences +
                  "resume with the data it was trained on, or start afresh with --overwrite");
  } else if (cfg.als) {
    const Stopwatch als_time;
    AlsTablesOptions als(ImplicitAlsOptions(cfg.item_factors)
        .iterations(cfg.als_iterations).regularization(cfg.als_regularization).seed(seed).device(device));
    als.source_factors(cfg.source_factors);
    if (run.group)
      als.fit([&run](const CsrMatrix& m, const ImplicitAlsOptions& o) { return fit_implicit_als_sharded(m, *run.group, o); });
    initialize_tables_from_als(*model, train, als);
    if (cfg.history > 0)  // the history's item table starts where the item table does
      model->user_tower->feature<HistoryFeatureImpl>("history")->set_weight(
          model->item_tower->feature<CategoricalFeatureImpl>("item")->weight);
    say("seed %llu: ALS init (%lld + %lld factors) in %.1f s\n", seed, cfg.item_factors, cfg.source_factors,
        als_time.seconds());
  }

  const auto tables = recipe_table_names(model, cfg);
  TableOptimizers optimizers(*model, tables, torch::optim::AdamOptions(cfg.lr).weight_decay(cfg.weight_decay),
                             parse_table_update(cfg.table_update));
  const auto train_views = item_view_counts(train);
  // Training rows see the views before them; held-out rows, all training views.
  const auto history = cfg.uses_history()
      ? std::make_shared<const ViewHistory>(train, history_options(cfg))
      : nullptr;
  const auto affinity = cfg.content_affinity ? std::make_shared<const ContentAffinity>(train, affinity_options(cfg))
                                             : nullptr;
  BatchPipeline pipeline(
      with_history_columns(with_recipe_columns(standard_batch_spec(train), cfg, train_views, train.interactions["item"]),
                           cfg, history, train.interactions["user"], train.interactions["item"], HistoryTime::Row, {},
                           affinity),
      batches, BatchPipelineOptions().device(device).workers(run.workers));
  ScoreOptions scoring;
  scoring.device(device);
  if (cfg.bf16) scoring.autocast(at::kBFloat16);
  const auto valid_spec = with_history_columns(
      with_recipe_columns(standard_batch_spec(split.valid), cfg, train_views, split.valid.interactions["item"]), cfg,
      history, split.valid.interactions["user"], split.valid.interactions["item"], HistoryTime::All, {}, affinity);
  // Each rank scores its share of the validation groups; every rank gets
  // all the scores, so GAUC is over all held-out users everywhere.
  const auto valid_scores = [&] {
    if (!run.group) return score_groups(model, valid_spec, split.valid_rows, scoring).reshape(-1);
    return compute_sharded(*run.group, split.valid_rows.size(0), [&](int64_t first, int64_t count) {
      return score_groups(model, valid_spec, split.valid_rows.narrow(0, first, count), scoring);
    }, "validation scores").reshape(-1);
  };
  TrainEpochOptions epoch_options;
  epoch_options.clip_grad_norm(cfg.clip_grad_norm);
  if (cfg.bf16) epoch_options.autocast(at::kBFloat16);
  // The replicas start from rank 0's weights (ALS included) and exchange
  // gradients after every backward.
  std::unique_ptr<DataParallel> parallel;
  if (run.group) {
    parallel = std::make_unique<DataParallel>(*model, run.group);
    epoch_options = parallel->attach(epoch_options, *sharded);
  }
  const int64_t rank = run.group ? run.group->rank() : 0;
  Trainer<Ranker> trainer(model, optimizers.all(), pipeline,
      PhaseSchedule(cfg.frozen_epochs, cfg.unfrozen_epochs, cfg.freeze ? tables : std::vector<std::string>{}),
      TrainerOptions().seed(seed).epoch_options(epoch_options).checkpoint_path(run.lead() ? checkpoint : "")
          .progress_line(run.lead())
          .keep_best(cfg.keep_best)
          .patience(cfg.patience)
          .on_epoch_start([&run, seed, rank](int64_t epoch) {
            // Each rank its own dropout stream, fixed by (seed, rank, epoch):
            // a resumed rank draws what it would have drawn.
            if (run.group) torch::manual_seed(stream_seed(seed, static_cast<uint64_t>(1 + rank), static_cast<uint64_t>(epoch)));
          })
          .measure([&](EpochRecord& r) {
            // This rank's model rate on its own batches; then the rows of
            // every rank, so the record's rows/s is the run's.
            measure_matmul_rates(r, model, sampler.options().batch_size() * cfg.group_size, device,
                                 cfg.bf16 ? torch::kBFloat16 : torch::kFloat);
            if (run.group) {
              auto rows = torch::tensor({static_cast<double>(r.stats.rows)}, torch::kFloat64).to(run.group->device());
              run.group->all_reduce_sum(rows, "all-reduce of the epoch's rows");
              r.stats.rows = static_cast<int64_t>(rows.item<double>());
            }
          })
          .validate([&] { return gauc(split.valid_users, split.valid_targets, valid_scores()); })
          .on_epoch([&](const EpochRecord& r) {
            say("%s\n", r.summary().c_str());
            records.push_back(r);
            if (run.lead()) write_lines_atomically(dir.file("metrics.jsonl"), to_json_lines(records));
          }));
  trainer.checkpoint().add("config", config_text).add("data", data_text);
  if (resuming) say("seed %llu: resumed from %s after epoch %lld\n", seed, checkpoint.c_str(), trainer.resume(checkpoint));
  records.insert(records.end(), trainer.records().begin(), trainer.records().end());
  reuse_freed_memory();  // from here on every step allocates blocks of the same sizes: keep them
  const int64_t before = trainer.epochs_done();
  const bool done = trainer.fit(epoch_budget);
  if (epoch_budget > 0) epoch_budget -= trainer.epochs_done() - before;
  if (!done) return {};
  if (trainer.stopped_after() >= 0)
    say("seed %llu: stopped after epoch %lld: %lld epochs without a better validation GAUC (--patience)\n", seed,
        trainer.stopped_after() - 1, cfg.patience);
  if (cfg.keep_best && trainer.best_epoch() >= 0)
    say("seed %llu: kept epoch %lld, the best by validation GAUC (%.6f)\n", seed, trainer.best_epoch(),
        trainer.best_value());
  // The score scale on the validation rows, fixed with the model: a pair's
  // ensemble score does not depend on the other candidates.
  const RecipeModelFile file{cfg, signals, train.embedding_dim(), data, Vocabulary::of(train),
                             ScoreScale::of(valid_scores())};
  if (run.lead()) file.save(dir.seed_file("model", seed), model);
  if (!run.group) return {file.score_candidates(model, train, all_views, scoring, all_history, all_affinity), file.scale};
  return {compute_sharded(*run.group, train.candidates.num_rows(), [&](int64_t first, int64_t count) {
            return file.score_candidate_rows(model, train, all_views, first, count, scoring, all_history,
                                             all_affinity);
          }, "candidate scores"),
          file.scale};
}

/// Refuses to mix this run's files with another run's in --out (or removes
/// them, with --overwrite), and to resume next to other seeds' files.
inline void prepare_output_directory(const TrainRun& run) {
  const auto dir = run_directory(run.out);
  const auto outputs = dir.outputs();
  if (!outputs.empty() && !run.resume) {
    if (!run.overwrite)
      throw rectrain::Error("--out " + run.out + " already holds the outputs of another run (" +
                            rectrain::join(outputs, ", ") +
                            "); --resume continues that run, --overwrite replaces it, or choose another --out");
    dir.remove(outputs);
    say("train: --overwrite: removed %llu files of an earlier run from %s\n", outputs.size(), run.out.c_str());
  }
  std::vector<std::string> seeds;
  for (const auto seed : run.seeds) seeds.push_back(std::to_string(seed));
  const auto other = run.resume ? dir.file_of_other_seed(run.seeds) : "";
  if (!other.empty())
    throw rectrain::Error("--resume: " + run.out + " holds " + other + ", from a seed this run does not train (--seeds " +
                          rectrain::join(seeds) + "); resume with the earlier run's --seeds, or start afresh with "
                          "--overwrite");
}

inline int run_train(const TrainRun& run) {
  using namespace rectrain;
  const Stopwatch t0;
  say("rectrain-vk train: rectrain %s, LibTorch %d.%d, %d threads, device %s\n", version_string, TORCH_VERSION_MAJOR,
      TORCH_VERSION_MINOR, at::get_num_threads(), run.device.c_str());
  if (run.group)
    say("train: %lld ranks (%s, rendezvous at %s:%lld); rank 0 writes the outputs\n", run.group->world_size(),
        to_string(run.group->backend()), run.group->options().master_addr().c_str(), run.group->options().master_port());
  protect_input(run.data);  // one run per --out, and never over its own inputs
  std::optional<DirectoryLock> lock;
  run.on_every_rank("preparing --out " + run.out, [&] {
    if (!run.lead()) return;
    lock.emplace(run.out, run.command);
    prepare_output_directory(run);
  });
  if (run.group) agree_across_ranks(*run.group, "the settings", run.settings_text());
  const auto options = DatasetOptions().memory_budget(run.memory_budget);
  Dataset loaded;
  run.on_every_rank("loading " + run.data, [&] { loaded = load_dataset_or_cache(run.data, options); });
  const std::string data = DatasetFingerprint::of(loaded).to_text();
  if (run.group) agree_across_ranks(*run.group, "the data (" + run.data + ")", data);
  say("data: %lld interactions, %lld users, %lld items, %lld sources, %lld candidates (%.1f s)\n",
      loaded.num_interactions(), loaded.num_users(), loaded.num_items(), loaded.num_sources(),
      loaded.candidates.num_rows(), t0.seconds());
  if (loaded.candidates.contains("target") &&
      gauc_users(loaded.candidates["user_id"], loaded.candidates["target"]) == 0)
    throw Error(run.data + ": candidates have a target column, but no user has two different targets in it, so "
                "their GAUC is undefined; drop the target column to only write predictions");
  std::vector<EpochRecord> records;
  std::vector<torch::Tensor> scores;
  std::vector<ScoreScale> scales;
  int64_t epoch_budget = run.stop_after > 0 ? run.stop_after : -1;
  const auto all_views = item_view_counts(loaded);
  // The long-watch threshold is the data's (one for every seed, kept in the
  // model's settings); the candidates see every loaded view.
  TrainRun resolved = run;
  if (resolved.config.long_watch < 0) {
    const double median = median_neutral_timespent(loaded);
    resolved.config.long_watch = std::isfinite(median) ? median : 1e300;
  }
  const auto all_history = resolved.config.uses_history()
      ? std::make_shared<const ViewHistory>(loaded, history_options(resolved.config))
      : nullptr;
  if (resolved.config.content_affinity && loaded.embedding_dim() == 0)
    throw Error(run.data + ": --content-affinity fits users on the items' content vectors, but its items have none "
                "(no emb_* columns)");
  std::shared_ptr<const ContentAffinity> all_affinity;
  if (resolved.config.content_affinity) {
    const Stopwatch fit_time;
    all_affinity = std::make_shared<const ContentAffinity>(loaded, affinity_options(resolved.config));
    say("content affinity: %lld users fitted on %lld-wide content vectors in %.1f s\n", loaded.num_users(),
        all_affinity->dim(), fit_time.seconds());
  }
  // The end needs ids and candidates, not the interactions: each seed takes
  // the loaded set and shrinks it, and later seeds load it again.
  Dataset meta = loaded;
  meta.interactions = Table();
  for (size_t k = 0; k < run.seeds.size(); ++k) {
    Dataset ds = k == 0 ? std::move(loaded) : load_dataset_or_cache(run.data, options);
    const auto changed = k == 0 ? "" : DatasetFingerprint::from_text(data, run.data).differences(
                                           DatasetFingerprint::of(ds), "at the start", "now");
    if (!changed.empty())
      throw Error(run.data + " changed while this run used it (read again for seed " + std::to_string(run.seeds[k]) +
                  "):\n" + changed + "rerun once nothing writes to it");
    auto [seed_scores, scale] =
        train_seed(std::move(ds), all_views, all_history, all_affinity, resolved, run.seeds[k], data, records, epoch_budget);
    if (!seed_scores.defined()) {
      say("train: stopped after %lld epochs (--stop-after); continue with --resume\n", run.stop_after);
      return 0;
    }
    scores.push_back(seed_scores);
    scales.push_back(scale);
    if (run.seeds.size() > 1) print_candidate_gauc("seed " + std::to_string(run.seeds[k]), meta, seed_scores);
  }
  if (!run.lead()) return 0;  // rank 0 writes the outputs
  const auto dir = run_directory(run.out);
  write_lines_atomically(dir.file("metrics.jsonl"), to_json_lines(records));
  const auto speed = run_speed(records);
  if (speed.epochs > 0)
    say("training: %lld epochs in %s, model %.1f GFLOP/s = %.0f%% of torch::mm's rate on the same products\n",
        speed.epochs, ProgressLine::duration(speed.seconds).c_str(), speed.gflops, 100 * speed.mm_share);
  const auto png = dir.file("learning_curve.png");
  if (plot_learning_curve(png, records)) say("plot: %s\n", png.c_str());
  if (meta.candidates.num_rows() > 0) {
    const auto ensemble = ensemble_scores(scores, scales);
    write_predictions(dir.file("predictions.csv"), meta.candidates["user_id"], meta.candidates["item_id"], ensemble);
    print_candidate_gauc(run.seeds.size() > 1 ? "ensemble" : "model", meta, ensemble);
    say("wrote %s\n", dir.file("predictions.csv").c_str());
  }
  say("train: done in %s\n", ProgressLine::duration(t0.seconds()).c_str());
  return 0;
}

/// Scores candidates.csv with every model-seed*.pt in `models` (or the
/// files listed) and writes their ensemble. Each model maps the raw ids
/// through its own vocabulary: ids it never saw get its out-of-vocabulary
/// rows, and are counted.
inline int run_predict(const std::string& data, const std::vector<std::string>& models, const std::string& predictions,
                       const std::string& device, int64_t memory_budget) {
  using namespace rectrain;
  parse_device(device, "--device");
  std::vector<std::string> files;
  for (const auto& m : models) {
    if (!std::filesystem::exists(m)) throw Error("predict: --models " + m + ": no such file or directory");
    const auto found = std::filesystem::is_directory(m) ? run_directory(m).seed_files("model") : std::vector{m};
    files.insert(files.end(), found.begin(), found.end());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error("predict: no model-seed*.pt files found (train writes them into its --out)");
  protect_input(data);
  for (const auto& path : files) protect_input(path);
  const auto ds = load_dataset_or_cache(data, DatasetOptions().memory_budget(memory_budget));
  const int64_t rows = ds.candidates.num_rows();
  if (rows == 0) throw Error("predict: " + data + " has no candidates to score");
  const auto views = item_view_counts(ds);
  std::vector<torch::Tensor> scores;
  std::vector<ScoreScale> scales;
  for (const auto& path : files) {
    const auto file = RecipeModelFile::read(path);
    auto model = file.load_model(path);
    const auto user_known = file.vocabulary.users.encode(ds.candidates["user_id"]) >= 0;
    const auto item_known = file.vocabulary.items.encode(ds.candidates["item_id"]) >= 0;
    if (!(user_known | item_known).any().item<bool>())
      throw Error("predict: " + path + " knows none of the users and none of the items of the " + std::to_string(rows) +
                  " candidates in " + data + ": it was trained on other data");
    say("predict: %s: %lld candidates, %lld with a user and %lld with an item the model never saw (scored with its "
        "out-of-vocabulary rows)\n", path.c_str(), rows, rows - user_known.sum().item<int64_t>(),
        rows - item_known.sum().item<int64_t>());
    model->to(parse_device(device, "--device"));
    scores.push_back(file.score_candidates(model, ds, views, ScoreOptions().device(parse_device(device, "--device"))));
    scales.push_back(file.scale);
    print_candidate_gauc(path, ds, scores.back());
  }
  const auto ensemble = ensemble_scores(scores, scales);
  write_predictions(predictions, ds.candidates["user_id"], ds.candidates["item_id"], ensemble);
  if (files.size() > 1) print_candidate_gauc("ensemble", ds, ensemble);
  say("predict: wrote %s from %llu model(s)\n", predictions.c_str(), files.size());
  return 0;
}

} // namespace vk
