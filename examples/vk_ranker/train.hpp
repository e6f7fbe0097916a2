#pragma once
// rectrain-vk train / predict: the whole recipe over one dataset, one model
// per seed, each with its own validation split, checkpointed every epoch.

#include "recipe.hpp"

#include <rectrain/rectrain.hpp>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

namespace vk {

struct TrainRun {
  std::string data;
  std::string out;
  std::string device = "cpu";
  std::vector<uint64_t> seeds{1};
  bool resume = false;
  /// A fresh run into an --out holding another run's outputs removes them
  /// first instead of refusing.
  bool overwrite = false;
  /// The command line, for the lock file (who holds --out).
  std::string command;
  /// Stop after this many epochs trained by this run (0: never); --resume
  /// continues. For jobs cut into time slices, and for testing resume.
  int64_t stop_after = 0;
  int64_t workers = 2;
  /// Refuse a dataset whose estimated loading peak is above this (bytes;
  /// 0: no budget). See parse_memory_budget.
  int64_t memory_budget = 0;
  RecipeConfig config;
};

/// --memory-budget: "auto" (the memory available now), "none" (or 0), or
/// a size in bytes with an optional binary suffix: 512M, 12G, 1.5T.
inline int64_t parse_memory_budget(const std::string& text) {
  if (text == "auto") return rectrain::available_memory_bytes();
  if (text == "none") return 0;
  return rectrain::parse_byte_size(text, "--memory-budget");
}

/// A dataset directory, or a binary cache written by save_dataset_cache.
inline rectrain::Dataset load_data(const std::string& data, int64_t memory_budget) {
  const auto options = rectrain::DatasetOptions().memory_budget(memory_budget);
  if (std::filesystem::is_regular_file(data)) return rectrain::load_dataset_cache(data, options);
  return rectrain::load_dataset(data, options);
}

inline torch::Device parse_device(const std::string& name) { return rectrain::parse_device(name, "--device"); }

/// The files `train` writes into --out (its "outputs").
inline bool is_run_output(const std::string& name) {
  auto seed_file_of = [&](const char* stem) {
    const std::string prefix = std::string(stem) + "-seed";
    return name.rfind(prefix, 0) == 0 && name.size() > prefix.size() + 3 &&
           name.compare(name.size() - 3, 3, ".pt") == 0;
  };
  return seed_file_of("checkpoint") || seed_file_of("model") || name == "predictions.csv" || name == "metrics.jsonl" ||
         name == "learning_curve.png" || name == "learning_curve.dat" || name == "learning_curve.gp";
}

/// The seed in "checkpoint-seed<N>.pt" or "model-seed<N>.pt"; false for other names.
inline bool seed_of_file(const std::string& name, uint64_t& seed) {
  const auto at = name.find("-seed");
  if (at == std::string::npos || name.size() < at + 9 || name.compare(name.size() - 3, 3, ".pt") != 0) return false;
  const std::string digits = name.substr(at + 5, name.size() - 3 - at - 5);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 19) return false;
  seed = std::stoull(digits);
  return true;
}

/// Checks what --out holds before a run writes there (the caller holds its
/// lock): a fresh run refuses another run's outputs unless --overwrite,
/// which removes them; --resume refuses the files of seeds it does not
/// train (predict would ensemble them).
inline void prepare_output_directory(const TrainRun& run) {
  namespace fs = std::filesystem;
  std::vector<std::string> outputs;
  for (const auto& entry : fs::directory_iterator(run.out)) {
    const std::string name = entry.path().filename().string();
    if (is_run_output(name)) outputs.push_back(name);
  }
  std::sort(outputs.begin(), outputs.end());
  if (outputs.empty()) return;
  if (!run.resume) {
    if (!run.overwrite)
      throw rectrain::Error("--out " + run.out + " already holds the outputs of another run (" +
                            rectrain::join(outputs, ", ") +
                            "); --resume continues that run, --overwrite replaces it, or choose another --out");
    for (const auto& name : outputs) fs::remove(fs::path(run.out) / name);
    std::printf("train: --overwrite: removed %zu files of an earlier run from %s\n", outputs.size(), run.out.c_str());
    return;
  }
  for (const auto& name : outputs) {
    uint64_t seed = 0;
    if (seed_of_file(name, seed) && std::find(run.seeds.begin(), run.seeds.end(), seed) == run.seeds.end()) {
      std::vector<std::string> seeds;
      for (const auto s : run.seeds) seeds.push_back(std::to_string(s));
      throw rectrain::Error("--resume: " + run.out + " holds " + name + ", from a seed this run does not train (--seeds " +
                            rectrain::join(seeds) + "); resume with the earlier run's --seeds, or start afresh with --overwrite");
    }
  }
}

inline std::string seed_file(const std::string& out, const char* stem, uint64_t seed) {
  return (std::filesystem::path(out) / (std::string(stem) + "-seed" + std::to_string(seed) + ".pt")).string();
}

/// A trained model as `predict` needs it: the settings and heads it was
/// built with, the id maps of its tables (so `predict` indexes them by raw
/// id, whatever the numbering of the data it scores), the input schema,
/// the fingerprint of its training data, and the weights.
struct ModelFile {
  std::string config;
  std::string signals;
  std::string schema;
  std::string data;
  rectrain::Vocabulary vocabulary;
  /// The model's score scale on its validation rows, for ensembles.
  rectrain::ScoreScale scale;

  rectrain::Checkpoint header() {
    rectrain::Checkpoint c;
    c.add("config", config).add("signals", signals).add("schema", schema).add("data", data);
    c.add("score_mean", scale.mean).add("score_std", scale.std);
    c.add("user_ids", vocabulary.users).add("item_ids", vocabulary.items).add("source_ids", vocabulary.sources);
    return c;
  }

  /// What a dataset must provide to be scored by the model.
  static std::string schema_of(const rectrain::Dataset& ds) {
    return "embedding_dim=" + std::to_string(ds.embedding_dim()) + "\n";
  }

  ModelShape shape() const {
    int64_t embedding_dim = -1;
    if (schema.rfind("embedding_dim=", 0) == 0) embedding_dim = std::atoll(schema.c_str() + 14);
    return {vocabulary.users.size(), vocabulary.items.size(), vocabulary.sources.size(), embedding_dim};
  }

  /// Throws unless `ds` has the inputs the model reads.
  void check(const rectrain::Dataset& ds, const std::string& path) const {
    const int64_t dim = shape().embedding_dim;
    if (dim != ds.embedding_dim())
      throw rectrain::Error(path + ": the model reads " + std::to_string(dim) +
                            "-wide item content vectors (items emb_0..emb_" + std::to_string(dim - 1) +
                            "), but this dataset's items have " + std::to_string(ds.embedding_dim()) +
                            "; score data with the training data's columns");
  }
};

/// Target-head scores of every candidates.csv row, with everything known
/// (view counts over the whole interactions file); the model's tables are
/// indexed through its own vocabulary.
inline torch::Tensor score_candidates(rectrain::Ranker& model, const rectrain::Dataset& ds, const torch::Tensor& views,
                                      torch::Device device, const RecipeConfig& cfg,
                                      const rectrain::Vocabulary& vocabulary) {
  rectrain::ScoreOptions options;
  options.device(device);
  if (cfg.bf16) options.autocast(at::kBFloat16);
  const auto rows = torch::arange(ds.candidates.num_rows()).view({-1, 1});
  const auto spec =
      with_recipe_columns(rectrain::candidate_batch_spec(ds, vocabulary), cfg, views, ds.candidates["item"]);
  return rectrain::score_groups(model, spec, rows, options).view(-1);
}

/// Users in `users` with two different `targets`: those GAUC scores.
inline int64_t scorable_users(const torch::Tensor& users, const torch::Tensor& targets) {
  return rectrain::gauc(users, targets, torch::zeros({users.numel()}, torch::kFloat32)).users;
}

inline void print_candidate_gauc(const char* what, const rectrain::Dataset& ds, const torch::Tensor& scores) {
  if (!ds.candidates.contains("target")) return;
  const auto m = rectrain::gauc(ds.candidates["user_id"], ds.candidates["target"], scores);
  if (m.users == 0) {
    std::printf("%s: candidates GAUC undefined (no candidate user has two different targets)\n", what);
    return;
  }
  std::printf("%s: candidates GAUC %.6f over %lld users\n", what, m.value, static_cast<long long>(m.users));
}

/// Trains one seed's model (or resumes it) on `ds` (taken: its interactions
/// shrink to the training rows, so the full set is never held twice) and
/// returns its candidate scores, or an undefined tensor when `epoch_budget`
/// (epochs this run may still train; negative: no limit) ran out first.
/// `all_views` are the item view counts over every interaction, for
/// scoring the candidates; `data` the fingerprint of the loaded dataset
/// (DatasetFingerprint::to_text), kept in checkpoints and models. `log`
/// collects the metrics lines of every seed so far; it is rewritten into
/// metrics.jsonl after every epoch.
/// One seed's model on the candidates: its scores and its score scale.
struct SeedScores {
  torch::Tensor scores;
  rectrain::ScoreScale scale;
};

inline SeedScores train_seed(rectrain::Dataset ds, const torch::Tensor& all_views, const TrainRun& run, uint64_t seed,
                             const std::string& data, std::vector<std::string>& log,
                             std::vector<rectrain::EpochRecord>& records, int64_t& epoch_budget) {
  using namespace rectrain;
  const torch::Device device = parse_device(run.device);
  RecipeConfig cfg = run.config;
  Holdout holdout;
  try {
    holdout = holdout_last_views(ds, HoldoutOptions()
                                         .views(cfg.group_size)
                                         .min_views(2 * cfg.group_size)
                                         .fraction(cfg.holdout_fraction)
                                         .max_users(cfg.holdout_users)
                                         .seed(seed));
  } catch (const Error& e) {
    throw Error(std::string("validation needs users with at least 2 x --group-size views, to hold out their last "
                            "--group-size: ") + e.what() + "; lower --group-size, or train on more data");
  }
  // Validation: each held-out user's last views as one group, in a small
  // dataset of their own; then the interactions shrink to the training rows.
  const Dataset valid = with_interactions(ds, holdout.valid_rows.reshape(-1));
  const auto valid_rows = torch::arange(valid.num_interactions()).view(holdout.valid_rows.sizes());
  const auto valid_users = valid.interactions["user"];
  const auto valid_targets = valid.interaction_targets();
  if (scorable_users(valid_users, valid_targets) == 0)
    throw Error("validation: none of the " + std::to_string(holdout.valid_users.numel()) +
                " held-out users has two different targets (like, neutral, dislike) in their last " +
                std::to_string(cfg.group_size) + " views, so validation GAUC is undefined; raise --holdout-fraction "
                "or --holdout-users, or check the like and dislike columns");
  Dataset train = std::move(ds);
  train.interactions = train.interactions.select(holdout.train_rows);
  holdout.train_rows = torch::Tensor();
  const auto targets = train.interaction_targets();
  int64_t groups = 0;
  {
    GroupSampler count(train.interactions["user"], targets, GroupSamplerOptions(cfg.group_size).seed(seed));
    count.set_epoch(0);
    groups = count.num_groups();
  }
  if (groups == 0)
    throw Error("no training groups: a group is --group-size " + std::to_string(cfg.group_size) +
                " views of one user with two different targets (like > neutral > dislike), and the " +
                std::to_string(train.num_interactions()) + " training rows have none (" +
                ((targets == targets[0]).all().item<bool>() ? "every target is the same" : "no user's views mix targets") +
                "); the target head would learn nothing; lower --group-size or check the like and dislike columns");
  cfg.adapt_to(train, groups);
  std::vector<std::string> unused;
  const auto signals = known_signals(train, cfg.extra_heads, &unused);
  const auto train_views = item_view_counts(train);
  std::printf("seed %llu: %lld training rows in %lld groups of %lld, %lld per batch; validation: last %lld views of "
              "%lld users; heads: target,%s\n",
              static_cast<unsigned long long>(seed), static_cast<long long>(train.num_interactions()),
              static_cast<long long>(groups), static_cast<long long>(cfg.group_size),
              static_cast<long long>(cfg.batch_groups), static_cast<long long>(cfg.group_size),
              static_cast<long long>(holdout.valid_users.numel()), rectrain::join(signals).c_str());
  const auto& standard = standard_signals();
  std::vector<std::string> unused_extras;
  for (const auto& name : unused)
    if (std::find(standard.begin(), standard.end(), name) == standard.end()) unused_extras.push_back(name);
  if (!unused_extras.empty())
    std::printf("seed %llu: interaction column(s) %s not used (--extra-heads trains a head on each that varies)\n",
                static_cast<unsigned long long>(seed), rectrain::join(unused_extras).c_str());
  std::fflush(stdout);

  torch::manual_seed(seed);
  auto model = build_model(ModelShape::of(train), cfg, signals, &train);
  model->to(device);
  std::string config_text = cfg.to_text(), history, data_text = data;
  const std::string checkpoint = seed_file(run.out, "checkpoint", seed);
  const bool resuming = run.resume && std::filesystem::exists(checkpoint);
  if (resuming) {
    // Settings and data first: a model of other sizes would fail to load
    // less clearly, and one of the same sizes would load and be wrong.
    std::string saved_config, saved_data;
    Checkpoint settings;
    settings.add("config", saved_config).add("data", saved_data).load(checkpoint);
    if (saved_config != config_text)
      throw Error("--resume: " + checkpoint + " was written with other settings:\n" + saved_config +
                  "this run has:\n" + config_text + "rerun with the same flags, or without --resume");
    const auto differences = DatasetFingerprint::from_text(saved_data, checkpoint)
                                 .differences(DatasetFingerprint::from_text(data, run.data), "in the checkpoint",
                                              "in " + run.data);
    if (!differences.empty())
      throw Error("--resume: " + checkpoint + " was trained on other data than " + run.data + ":\n" + differences +
                  "resume with the data it was trained on, or start afresh with --overwrite");
  } else if (cfg.als) {
    // Before the sampler and the pipeline exist: ALS's matrices are the
    // largest temporaries of the run.
    const Stopwatch als_time;
    auto options = ImplicitAlsOptions(cfg.item_factors)
                             .iterations(cfg.als_iterations)
                             .regularization(cfg.als_regularization)
                             .seed(seed)
                             .device(device);
    const auto items = fit_implicit_als(user_item_matrix(train), options);
    std::vector<torch::Tensor> user_parts{items.user};
    if (cfg.source_factors > 0) {
      const auto sources = fit_implicit_als(user_source_matrix(train), options.factors(cfg.source_factors).seed(seed + 1));
      user_parts.push_back(sources.user);
      set_table(*model, "source", embedding_table(sources.item));
    }
    set_table(*model, "user", embedding_table(user_parts));
    set_table(*model, "item", embedding_table(items.item));
    std::printf("seed %llu: ALS init (%lld + %lld factors) in %.1f s\n", static_cast<unsigned long long>(seed),
                static_cast<long long>(cfg.item_factors), static_cast<long long>(cfg.source_factors),
                als_time.seconds());
    std::fflush(stdout);
  }

  // Sparse tables: SparseAdam for them, Adam for the rest (LibTorch's Adam
  // takes no sparse gradients). "adam": one Adam for everything.
  const auto tables = id_table_parameters(*model);
  TableOptimizers optimizers(*model, tables, torch::optim::AdamOptions(cfg.lr).weight_decay(cfg.weight_decay),
                             parse_table_update(cfg.table_update));
  const PhaseSchedule schedule(cfg.frozen_epochs, cfg.unfrozen_epochs,
                               cfg.freeze ? tables : std::vector<std::string>{});
  GroupSampler sampler(train.interactions["user"], targets,
                       GroupSamplerOptions(cfg.group_size).batch_size(cfg.batch_groups).seed(seed));
  BatchPipeline pipeline(with_recipe_columns(standard_batch_spec(train), cfg, train_views, train.interactions["item"]),
                         sampler, BatchPipelineOptions().device(device).workers(run.workers));
  int64_t epochs_done = 0;
  auto cpu_rng = at::globalContext().defaultGenerator(torch::kCPU);
  Checkpoint state;
  state.add("config", config_text).add("data", data_text).add("model", *model);
  optimizers.bind(state);
  state.add("sampler", sampler);
  state.add("rng", cpu_rng).add("epochs_done", epochs_done).add("history", history);
  at::Generator cuda_rng;
  if (device.is_cuda()) {
    cuda_rng = at::globalContext().defaultGenerator(device);
    state.add("cuda_rng", cuda_rng);
  }
  if (resuming) {
    state.load(checkpoint);
    std::printf("seed %llu: resumed from %s after epoch %lld\n", static_cast<unsigned long long>(seed),
                checkpoint.c_str(), static_cast<long long>(epochs_done));
  }
  for (const auto& line : rectrain::split_list(history, '\n')) {
    log.push_back(line);
    records.push_back(EpochRecord::from_json(line, checkpoint));
  }

  const auto valid_spec = with_recipe_columns(standard_batch_spec(valid), cfg, train_views, valid.interactions["item"]);
  ScoreOptions score_options;
  score_options.device(device);
  if (cfg.bf16) score_options.autocast(at::kBFloat16);

  ProgressLine progress;
  TrainEpochOptions epoch_options;
  epoch_options.clip_grad_norm(cfg.clip_grad_norm).progress_seconds(progress.seconds());
  if (cfg.bf16) epoch_options.autocast(at::kBFloat16);
  // From here on, every step allocates blocks of the same sizes: keep them
  // for reuse rather than page-fault them in again (the loading and ALS
  // above keep glibc's defaults, so their one-off blocks go back).
  reuse_freed_memory();
  for (int64_t epoch = epochs_done; epoch < cfg.epochs(); ++epoch) {
    if (epoch_budget == 0) return {};  // scores undefined: stopped
    --epoch_budget;
    const bool frozen = schedule.apply(*model, epoch);
    epoch_options.on_progress([&](const EpochProgress& p) { progress.show(seed, p, frozen); });
    EpochRecord record;
    record.seed = seed;
    record.frozen = frozen;
    record.stats = train_epoch(model, optimizers.all(), pipeline, epoch, epoch_options);
    const auto& stats = record.stats;
    progress.clear();
    // The step's matrix products at the rate the epoch ran, beside plain
    // torch::mm on the same shapes (and type) now: the share of the
    // GEMM-bound rate.
    const int64_t batch_rows = cfg.batch_groups * cfg.group_size;
    const auto products = training_matmuls(model, batch_rows);
    record.model_gflops = matmul_flops(products) / static_cast<double>(batch_rows) * stats.rows_per_second() / 1e9;
    record.mm_gflops = matmul_gflops(products, device, 5, cfg.bf16 ? torch::kBFloat16 : torch::kFloat);
    const auto scores = score_groups(model, valid_spec, valid_rows, score_options).reshape(-1);
    record.validation = gauc(valid_users, valid_targets, scores);
    const auto& valid_metric = record.validation;
    const double model_gflops = record.model_gflops, mm_gflops = record.mm_gflops;
    const std::string line = record.to_json();
    history += line + "\n";
    log.push_back(line);
    records.push_back(record);
    std::printf("seed %llu epoch %lld%s: loss %.5f, valid GAUC %.6f (%lld users), %.0f rows/s, data wait %.1f%%, "
                "model %.1f GFLOP/s = %.0f%% of torch::mm's %.1f, %.1f s\n",
                static_cast<unsigned long long>(seed), static_cast<long long>(epoch), frozen ? " (frozen)" : "",
                stats.loss, valid_metric.value, static_cast<long long>(valid_metric.users), stats.rows_per_second(),
                100 * stats.data_wait_share(), model_gflops, 100 * model_gflops / mm_gflops, mm_gflops, stats.seconds);
    std::fflush(stdout);
    epochs_done = epoch + 1;
    state.save(checkpoint);
    write_lines_atomically((std::filesystem::path(run.out) / "metrics.jsonl").string(), log);
  }
  // The score scale on the validation rows: fixed with the model, so a
  // pair's ensemble score does not depend on the other candidates.
  const auto scale = ScoreScale::of(score_groups(model, valid_spec, valid_rows, score_options).reshape(-1));
  ModelFile file{config_text, rectrain::join(signals), ModelFile::schema_of(train), data, Vocabulary::of(train), scale};
  auto saved = file.header();
  saved.add("model", *model);
  saved.save(seed_file(run.out, "model", seed));
  return {score_candidates(model, train, all_views, device, cfg, Vocabulary::of(train)), scale};
}

/// The whole run's speed from its epoch records.
inline void print_speed_summary(const std::vector<rectrain::EpochRecord>& records) {
  const auto speed = rectrain::run_speed(records);
  if (speed.epochs == 0) return;
  std::printf("training: %lld epochs in %s, model %.1f GFLOP/s = %.0f%% of torch::mm's rate on the same products\n",
              static_cast<long long>(speed.epochs), rectrain::ProgressLine::duration(speed.seconds).c_str(),
              speed.gflops, 100 * speed.mm_share);
}

inline int run_train(const TrainRun& run) {
  using namespace rectrain;
  const Stopwatch t0;
  parse_device(run.device);
  std::printf("rectrain-vk train: rectrain %s, LibTorch %d.%d, %d threads, device %s\n", version_string,
              TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, at::get_num_threads(), run.device.c_str());
  // One run per --out, and never over its own inputs.
  protect_input(run.data);
  DirectoryLock lock(run.out, run.command);
  prepare_output_directory(run);
  auto loaded = load_data(run.data, run.memory_budget);
  const std::string data = DatasetFingerprint::of(loaded).to_text();
  std::printf("data: %lld interactions, %lld users, %lld items, %lld sources, %lld candidates (%.1f s)\n",
              static_cast<long long>(loaded.num_interactions()), static_cast<long long>(loaded.num_users()),
              static_cast<long long>(loaded.num_items()), static_cast<long long>(loaded.num_sources()),
              static_cast<long long>(loaded.candidates.num_rows()), t0.seconds());
  if (loaded.candidates.contains("target") &&
      scorable_users(loaded.candidates["user_id"], loaded.candidates["target"]) == 0)
    throw Error(run.data + ": candidates have a target column, but no user has two different targets in it, so "
                "their GAUC is undefined; drop the target column to only write predictions");
  std::vector<std::string> log;
  std::vector<EpochRecord> records;
  std::vector<torch::Tensor> scores;
  std::vector<ScoreScale> scales;
  int64_t epoch_budget = run.stop_after > 0 ? run.stop_after : -1;
  const auto all_views = item_view_counts(loaded);
  // What the end needs (ids, candidates, user and item tables) without the
  // interactions: each seed takes the loaded set and shrinks it, and later
  // seeds load it again rather than keep a second full copy in memory.
  Dataset meta = loaded;
  meta.interactions = Table();
  for (size_t k = 0; k < run.seeds.size(); ++k) {
    const auto seed = run.seeds[k];
    Dataset ds = k == 0 ? std::move(loaded) : load_data(run.data, run.memory_budget);
    if (k > 0) {
      const auto changed = DatasetFingerprint::from_text(data, run.data).differences(DatasetFingerprint::of(ds),
                                                                                     "at the start", "now");
      if (!changed.empty())
        throw Error(run.data + " changed while this run used it (read again for seed " + std::to_string(seed) +
                    "):\n" + changed + "rerun once nothing writes to it");
    }
    auto result = train_seed(std::move(ds), all_views, run, seed, data, log, records, epoch_budget);
    scores.push_back(result.scores);
    scales.push_back(result.scale);
    if (!scores.back().defined()) {
      std::printf("train: stopped after %lld epochs (--stop-after); continue with --resume\n",
                  static_cast<long long>(run.stop_after));
      return 0;
    }
    if (run.seeds.size() > 1) print_candidate_gauc(("seed " + std::to_string(seed)).c_str(), meta, scores.back());
  }
  write_lines_atomically((std::filesystem::path(run.out) / "metrics.jsonl").string(), log);
  print_speed_summary(records);
  const auto png = (std::filesystem::path(run.out) / "learning_curve.png").string();
  if (plot_learning_curve(png, records)) std::printf("plot: %s\n", png.c_str());
  if (meta.candidates.num_rows() > 0) {
    const auto ensemble = ensemble_scores(scores, scales);
    const auto path = (std::filesystem::path(run.out) / "predictions.csv").string();
    write_predictions(path, meta.candidates["user_id"], meta.candidates["item_id"], ensemble);
    print_candidate_gauc(run.seeds.size() > 1 ? "ensemble" : "model", meta, ensemble);
    std::printf("wrote %s\n", path.c_str());
  }
  std::printf("train: done in %s\n", ProgressLine::duration(t0.seconds()).c_str());
  return 0;
}

/// Scores candidates.csv with every model-seed*.pt in `models` (or the
/// files listed) and writes their ensemble. Each model maps the candidates'
/// raw ids through its own vocabulary: ids it never saw get its
/// out-of-vocabulary rows, and are counted.
inline int run_predict(const std::string& data, const std::vector<std::string>& models, const std::string& predictions,
                       const std::string& device_name, int64_t memory_budget) {
  using namespace rectrain;
  const torch::Device device = parse_device(device_name);
  std::vector<std::string> files;
  for (const auto& m : models) {
    if (!std::filesystem::is_directory(m)) {
      if (!std::filesystem::exists(m)) throw Error("predict: --models " + m + ": no such file or directory");
      files.push_back(m);
      continue;
    }
    for (const auto& entry : std::filesystem::directory_iterator(m)) {
      const auto name = entry.path().filename().string();
      if (name.rfind("model-seed", 0) == 0 && entry.path().extension() == ".pt") files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error("predict: no model-seed*.pt files found (train writes them into its --out)");
  protect_input(data);
  for (const auto& path : files) protect_input(path);
  const auto ds = load_data(data, memory_budget);
  if (ds.candidates.num_rows() == 0) throw Error("predict: " + data + " has no candidates to score");
  const auto views = item_view_counts(ds);
  const int64_t rows = ds.candidates.num_rows();
  std::vector<torch::Tensor> scores;
  std::vector<ScoreScale> scales;
  for (const auto& path : files) {
    ModelFile file;
    file.header().load(path);
    file.check(ds, path);
    const auto cfg = RecipeConfig::from_text(file.config, path);
    auto model = build_model(file.shape(), cfg, rectrain::split_list(file.signals));
    Checkpoint weights;
    weights.add("model", *model);
    weights.load(path);
    model->to(device);
    const auto user_known = file.vocabulary.users.encode(ds.candidates["user_id"]) >= 0;
    const auto item_known = file.vocabulary.items.encode(ds.candidates["item_id"]) >= 0;
    const int64_t new_users = rows - user_known.sum().item<int64_t>();
    const int64_t new_items = rows - item_known.sum().item<int64_t>();
    if (!(user_known | item_known).any().item<bool>())
      throw Error("predict: " + path + " knows none of the users and none of the items of the " +
                  std::to_string(rows) + " candidates in " + data + ": it was trained on other data");
    std::printf("predict: %s: %lld candidates, %lld with a user and %lld with an item the model never saw (scored "
                "with its out-of-vocabulary rows)\n",
                path.c_str(), static_cast<long long>(rows), static_cast<long long>(new_users),
                static_cast<long long>(new_items));
    scores.push_back(score_candidates(model, ds, views, device, cfg, file.vocabulary));
    scales.push_back(file.scale);
    print_candidate_gauc(path.c_str(), ds, scores.back());
  }
  const auto ensemble = ensemble_scores(scores, scales);
  write_predictions(predictions, ds.candidates["user_id"], ds.candidates["item_id"], ensemble);
  if (files.size() > 1) print_candidate_gauc("ensemble", ds, ensemble);
  std::printf("predict: wrote %s from %zu model(s)\n", predictions.c_str(), files.size());
  return 0;
}

} // namespace vk
