// rectrain-vk's command line: synth, baseline, als, train, predict, eval,
// demo (cli.hpp). Compiled once, into the library both the program and the
// test suite link.

#include "cli.hpp"
#include "train.hpp"

#include <rectrain/rectrain.hpp>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

namespace vk {
namespace cli {
namespace {

using rectrain::Stopwatch;

struct BaselineScores {
  std::string name;
  torch::Tensor scores;
};

inline std::vector<BaselineScores> score_baselines(const rectrain::Dataset& ds, uint64_t seed) {
  return {{"random", rectrain::random_scores(ds.candidates.num_rows(), seed)},
          {"popularity", rectrain::popularity_scores(ds)},
          {"like_rate", rectrain::like_rate_scores(ds)}};
}

inline void print_gauc(const std::string& name, const rectrain::Dataset& ds, const torch::Tensor& scores) {
  const auto m = rectrain::gauc(ds.candidates["user"].eq(-1).any().item<bool>() ? ds.candidates["user_id"]
                                                                                  : ds.candidates["user"],
                                ds.candidates["target"], scores);
  std::printf("%-12s GAUC %.6f users %lld\n", name.c_str(), m.value, static_cast<long long>(m.users));
}

inline int run_synth(double scale, const std::string& out, uint64_t seed) {
  if (!(scale > 0 && scale <= 1)) throw rectrain::Error("synth: --scale must be in (0, 1], got " + std::to_string(scale));
  const Stopwatch t0;
  const auto s = rectrain::generate_synthetic(out, rectrain::SyntheticOptions::at_scale(scale).seed(seed));
  std::printf("synth: %lld users, %lld items, %lld sources, %lld interactions, %lld candidates in %s (%.1f s)\n",
              static_cast<long long>(s.users), static_cast<long long>(s.items),
              static_cast<long long>(s.sources), static_cast<long long>(s.interactions),
              static_cast<long long>(s.candidates), out.c_str(), t0.seconds());
  std::printf("synth: like %.4f%%, dislike %.4f%%, share %.4f%%, bookmarks %.4f%%\n", 100 * s.like_rate,
              100 * s.dislike_rate, 100 * s.share_rate, 100 * s.bookmark_rate);
  return 0;
}

inline int run_baseline(const std::string& data, const std::string& predictions, const std::string& which,
                 uint64_t seed) {
  if (which != "random" && which != "popularity" && which != "like_rate")
    throw rectrain::Error("baseline: --write must be one of random, popularity, like_rate; got " + which);
  rectrain::protect_input(data);
  const auto ds = rectrain::load_dataset(data, rectrain::DatasetOptions().require_candidates(true));
  if (!ds.candidates.contains("target"))
    std::printf("baseline: %s/candidates has no target column; writing predictions only\n", data.c_str());
  torch::Tensor chosen;
  for (const auto& b : score_baselines(ds, seed)) {
    if (ds.candidates.contains("target")) print_gauc(b.name, ds, b.scores);
    if (b.name == which) chosen = b.scores;
  }
  if (!chosen.defined())
    throw rectrain::Error("baseline: --write must be one of random, popularity, like_rate; got " + which);
  rectrain::write_predictions(predictions, ds.candidates["user_id"], ds.candidates["item_id"], chosen);
  std::printf("baseline: wrote %s (%s)\n", predictions.c_str(), which.c_str());
  return 0;
}

inline int run_eval(const std::string& candidates, const std::string& predictions) {
  const auto c = rectrain::read_csv(candidates, {{"user_id", rectrain::CsvType::Id},
                                                 {"item_id", rectrain::CsvType::Id},
                                                 {"target", rectrain::CsvType::Integer, true, -1, 1}});
  const auto scores = rectrain::match_predictions(predictions, c["user_id"], c["item_id"]);
  const auto m = rectrain::gauc(c["user_id"], c["target"], scores);
  if (m.users == 0)
    throw rectrain::Error("eval: GAUC is undefined: no user of " + candidates +
                          " has two different targets (GAUC averages AUC over users with both a better and a worse "
                          "candidate)");
  std::printf("GAUC %.6f users %lld\n", m.value, static_cast<long long>(m.users));
  return 0;
}

struct AlsSettings {
  int64_t factors = 256, source_factors = 128, iterations = 15;
  double regularization = 0.01, alpha = 0;
  std::string device = "cpu";
};

/// Fits ALS on one matrix, printing each iteration's time and loss.
inline rectrain::AlsFactors fit_als(const char* name, const rectrain::CsrMatrix& m, int64_t factors,
                             const AlsSettings& s, uint64_t seed) {
  std::printf("als %s: %lld x %lld, %lld nonzeros, %lld factors\n", name, static_cast<long long>(m.rows),
              static_cast<long long>(m.cols), static_cast<long long>(m.nnz()), static_cast<long long>(factors));
  const auto options = rectrain::ImplicitAlsOptions(factors)
                           .regularization(s.regularization)
                           .alpha(s.alpha)
                           .iterations(s.iterations)
                           .seed(seed)
                           .device(torch::Device(s.device))
                           .compute_loss(true)
                           .on_iteration([name](const rectrain::AlsIterationStats& st) {
                             std::printf("als %s: iteration %2lld  %.3f s  loss %.8f\n", name,
                                         static_cast<long long>(st.iteration), st.seconds, st.loss);
                             std::fflush(stdout);
                           });
  return rectrain::fit_implicit_als(m, options);
}

inline int run_als(const std::string& data, const std::string& out, const AlsSettings& s, uint64_t seed) {
  vk::parse_device(s.device);
  if (s.iterations < 1 || !(s.regularization >= 0) || !std::isfinite(s.regularization) || !(s.alpha >= 0) ||
      !std::isfinite(s.alpha) || s.source_factors < 0)
    throw rectrain::Error("als: need --iterations >= 1, finite --regularization >= 0, finite --alpha >= 0 and "
                          "--source-factors >= 0");
  rectrain::protect_input(data);
  Stopwatch t0;
  const auto ds = rectrain::load_dataset(data);
  std::printf("als: loaded %s in %.2f s\n", data.c_str(), t0.seconds());
  // Tensors of different lengths: a plain dict, not a Table.
  c10::impl::GenericDict saved(c10::StringType::get(), c10::TensorType::get());
  const auto item_fit = fit_als("user x item", rectrain::user_item_matrix(ds), s.factors, s, seed);
  saved.insert("user_item_factors", item_fit.user.cpu());
  saved.insert("item_factors", item_fit.item.cpu());
  saved.insert("user_id", ds.user_ids.decode(torch::arange(ds.num_users())));
  saved.insert("item_id", ds.item_ids.decode(torch::arange(ds.num_items())));
  torch::Tensor user_source;
  const auto us = ds.num_sources() > 0 ? rectrain::user_source_matrix(ds) : rectrain::CsrMatrix{};
  if (us.nnz() > 0 && s.source_factors > 0) {
    const auto source_fit = fit_als("user x source", us, s.source_factors, s, seed + 1);
    user_source = source_fit.user;
    saved.insert("user_source_factors", source_fit.user.cpu());
    saved.insert("source_factors", source_fit.item.cpu());
    saved.insert("source_id", ds.source_ids.decode(torch::arange(ds.num_sources())));
  } else {
    std::printf("als: no item sources known: source factors skipped\n");
  }
  std::filesystem::create_directories(out);
  const std::string path = (std::filesystem::path(out) / "als.pt").string();
  const rectrain::DirectoryLock lock(out, "rectrain-vk als");
  rectrain::save_pickle(c10::IValue(saved), path);
  std::printf("als: wrote %s (torch.save format: a dict of tensors)\n", path.c_str());
  if (ds.candidates.num_rows() > 0 && ds.candidates.contains("target")) {
    // Dot products of the item-ALS factors as candidate scores; unknown
    // users or items score 0.
    const auto& c = ds.candidates;
    const auto user = c["user"].clamp_min(0), item = c["item"].clamp_min(0);
    const auto known = (c["user"] >= 0) & (c["item"] >= 0);
    const auto scores = (item_fit.user.cpu().index_select(0, user) * item_fit.item.cpu().index_select(0, item)).sum(1);
    print_gauc("als_dot", ds, torch::where(known, scores, torch::zeros_like(scores)));
  }
  return 0;
}

inline int run_demo(double scale, std::string dir, uint64_t seed) {
  std::printf("rectrain %s demo: LibTorch %d.%d, %d threads\n", rectrain::version_string,
              TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, at::get_num_threads());
  std::filesystem::path temp;
  if (dir.empty()) {
    temp = std::filesystem::temp_directory_path() / ("rectrain-demo-" + std::to_string(::getpid()));
    dir = temp.string();
  }
  run_synth(scale, dir, seed);
  Stopwatch t0;
  const auto ds = rectrain::load_dataset(dir);
  std::printf("load: %lld rows, %lld users, %lld items in %.2f s\n",
              static_cast<long long>(ds.num_interactions()), static_cast<long long>(ds.num_users()),
              static_cast<long long>(ds.num_items()), t0.seconds());
  rectrain::GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(),
                                 rectrain::GroupSamplerOptions(20).batch_size(64).seed(seed));
  rectrain::BatchPipeline pipeline(rectrain::standard_batch_spec(ds), sampler,
                                   rectrain::BatchPipelineOptions().workers(2));
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    t0.restart();
    pipeline.start_epoch(epoch);
    int64_t batches = 0;
    double like_sum = 0;
    while (auto batch = pipeline.next()) {
      ++batches;
      like_sum += batch->label("like").sum().item<double>();
    }
    const auto st = pipeline.stats();
    std::printf("epoch %lld: %lld groups of 20 in %lld batches, %lld rows (%.1f%% liked), %.0f rows/s "
                "[sample %.3f s, gather %.3f s, copy %.3f s]\n",
                static_cast<long long>(epoch), static_cast<long long>(sampler.num_groups()),
                static_cast<long long>(batches), static_cast<long long>(st.rows),
                100.0 * like_sum / std::max<int64_t>(1, st.rows), st.rows / t0.seconds(),
                st.sample_seconds, st.gather_seconds, st.copy_seconds);
  }
  for (const auto& b : score_baselines(ds, seed)) print_gauc(b.name, ds, b.scores);
  if (!temp.empty()) std::filesystem::remove_all(temp);
  return 0;
}

} // namespace
} // namespace cli

int cli_main(int argc, char** argv) {
  using namespace cli;
  // Inputs protected by an earlier call in this process are not this run's.
  rectrain::clear_protected_inputs();
  struct ClearInputs {
    ~ClearInputs() { rectrain::clear_protected_inputs(); }
  } clear_inputs_at_exit;
  CLI::App app{"rectrain-vk: the VK RecSys Challenge 2024 ranking recipe on rectrain"};
  app.require_subcommand(0, 1);
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "LibTorch intra-op threads")->check(CLI::PositiveNumber)
      ->capture_default_str();

  double scale = 0.01;
  std::string out, data, predictions = "predictions.csv", candidates, which = "like_rate", dir;
  uint64_t seed = 42;

  auto* synth = app.add_subcommand("synth", "Write a synthetic dataset shaped like the challenge's");
  synth->add_option("--scale", scale, "Fraction of the full 145M-row scale, in (0, 1]")->capture_default_str();
  synth->add_option("--out", out, "Output directory")->required();
  synth->add_option("--seed", seed, "Random seed")->capture_default_str();

  auto* baseline = app.add_subcommand("baseline", "Score random, popularity and like-rate baselines");
  baseline->add_option("--data", data, "Dataset directory")->required()->check(CLI::ExistingDirectory);
  baseline->add_option("--predictions", predictions, "Where to write predictions")->capture_default_str();
  baseline->add_option("--write", which, "Baseline written: random, popularity, like_rate")
      ->capture_default_str();
  baseline->add_option("--seed", seed, "Seed of the random baseline")->capture_default_str();

  auto* eval = app.add_subcommand("eval", "GAUC of predictions.csv against candidates.csv targets");
  eval->add_option("--candidates", candidates, "candidates.csv with a target column")->required();
  eval->add_option("--predictions", predictions, "predictions.csv")->required();

  AlsSettings als_settings;
  auto* als = app.add_subcommand("als", "Fit implicit ALS (user x item, user x source) and save the factors");
  als->add_option("--data", data, "Dataset directory")->required()->check(CLI::ExistingDirectory);
  als->add_option("--out", out, "Output directory (als.pt goes there)")->required();
  als->add_option("--factors", als_settings.factors, "Item-ALS factors")->check(CLI::PositiveNumber)
      ->capture_default_str();
  als->add_option("--source-factors", als_settings.source_factors, "Source-ALS factors (0: skip)")
      ->capture_default_str();
  als->add_option("--iterations", als_settings.iterations, "ALS iterations")->capture_default_str();
  als->add_option("--regularization", als_settings.regularization, "lambda")->capture_default_str();
  als->add_option("--alpha", als_settings.alpha, "Confidence 1 + alpha * count (0: binary)")->capture_default_str();
  als->add_option("--device", als_settings.device, "cpu or cuda")->capture_default_str();
  als->add_option("--seed", seed, "Random seed")->capture_default_str();

  auto* demo = app.add_subcommand("demo", "Synthetic data -> group sampler -> baselines (the default)");
  demo->add_option("--scale", scale, "Synthetic scale")->capture_default_str();
  demo->add_option("--dir", dir, "Keep the synthetic dataset here (default: a temporary directory)");
  demo->add_option("--seed", seed, "Random seed")->capture_default_str();

  vk::TrainRun run;
  std::string seeds = "1,2,3";
  auto& cfg = run.config;
  auto* train = app.add_subcommand("train", "Train the recipe's ranker (ALS init, frozen then unfrozen epochs) and "
                                            "write model, metrics, plot and predictions.csv");
  train->add_option("--data", run.data, "Dataset directory, or a dataset cache (.pt)")->required()
      ->check(CLI::ExistingPath);
  train->add_option("--out", run.out, "Output directory")->required();
  train->add_option("--device", run.device, "cpu or cuda")->capture_default_str();
  train->add_option("--seeds", seeds, "Comma-separated seeds: one model each, predictions averaged")
      ->capture_default_str();
  train->add_flag("--resume", run.resume, "Continue from the checkpoints in --out");
  train->add_flag("--overwrite", run.overwrite,
                  "Start afresh in an --out that holds another run's outputs (removing them first)");
  train->add_flag("--extra-heads", cfg.extra_heads,
                  "Train a head on each extra numeric column of interactions (binary for 0/1 columns, regression "
                  "otherwise)");
  train->add_option("--stop-after", run.stop_after, "Stop after this many epochs (0: never); continue with --resume")
      ->capture_default_str();
  train->add_option("--workers", run.workers, "Batch pipeline threads")->capture_default_str();
  train->add_option("--frozen-epochs", cfg.frozen_epochs, "Epochs with id embeddings frozen")->capture_default_str();
  train->add_option("--unfrozen-epochs", cfg.unfrozen_epochs, "Epochs after, everything trained")
      ->capture_default_str();
  bool no_freeze = false, no_als = false, no_popularity = false;
  train->add_flag("--no-popularity", no_popularity, "Leave out the item view-count feature");
  train->add_flag("--no-freeze", no_freeze, "Never freeze the id embeddings");
  train->add_flag("--no-als", no_als, "Random id embeddings instead of ALS factors");
  train->add_option("--table-update", cfg.table_update,
                    "Unfrozen id tables: sparse (Adam's update from sparse gradients, one pass), adam (dense "
                    "gradients, torch::optim::Adam), lazy (only the rows each batch used)")
      ->check(CLI::IsMember(vk::table_updates()))
      ->capture_default_str();
  train->add_option("--item-factors", cfg.item_factors, "Item-ALS factors / id embedding width (0: from data size)")
      ->capture_default_str();
  train->add_option("--source-factors", cfg.source_factors, "Source-ALS factors (0: half the item factors)")
      ->capture_default_str();
  train->add_option("--als-iterations", cfg.als_iterations, "ALS iterations")->capture_default_str();
  train->add_option("--als-regularization", cfg.als_regularization, "ALS lambda")->capture_default_str();
  std::string hidden = "512,256";
  train->add_option("--hidden", hidden, "Widths of the shared MLP, comma-separated")->capture_default_str();
  train->add_option("--dropout", cfg.dropout, "Dropout after each MLP block")->capture_default_str();
  train->add_option("--normalization", cfg.normalization, "layernorm, batchnorm or none")->capture_default_str();
  train->add_option("--margin", cfg.margin, "Pairwise margin of the target head")->capture_default_str();
  train->add_option("--lr", cfg.lr, "Adam learning rate")->capture_default_str();
  train->add_option("--weight-decay", cfg.weight_decay, "Adam weight decay")->capture_default_str();
  train->add_option("--group-size", cfg.group_size, "Views per group (the test's 20)")->capture_default_str();
  train->add_option("--batch-groups", cfg.batch_groups, "Groups per batch (0: from data size)")
      ->capture_default_str();
  train->add_option("--clip-grad-norm", cfg.clip_grad_norm, "Clip the gradient norm (0: off)")->capture_default_str();
  train->add_flag("--bf16", cfg.bf16, "Forward passes under bfloat16 autocast (on CPU: only one with native bf16)");
  bool allow_slow_bf16 = false;
  train->add_flag("--allow-slow-bf16", allow_slow_bf16,
                  "Run --bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) all the same");
  train->add_option("--holdout-fraction", cfg.holdout_fraction, "Share of eligible users held out for validation")
      ->capture_default_str();
  train->add_option("--holdout-users", cfg.holdout_users, "At most this many validation users")
      ->capture_default_str();

  std::vector<std::string> models;
  auto* predict = app.add_subcommand("predict", "Score candidates.csv with trained models (their average)");
  predict->add_option("--data", data, "The dataset the models were trained on")->required()->check(CLI::ExistingPath);
  predict->add_option("--models", models, "train's --out directory, or model-seed*.pt files")->required();
  predict->add_option("--predictions", predictions, "Where to write predictions")->capture_default_str();
  predict->add_option("--device", run.device, "cpu or cuda")->capture_default_str();
  bool durable = false;
  for (auto* command : {synth, baseline, als, train, predict})
    command->add_flag("--durable", durable,
                      "fsync every file written and its directory before going on (survives a power cut)");
  std::string memory_budget = "auto";
  for (auto* command : {train, predict})
    command->add_option("--memory-budget", memory_budget,
                        "Refuse a dataset whose estimated loading peak is above this: a size (12G, 512M), "
                        "auto (the memory available now) or none")
        ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    // A usage error: one line and exit 2, like the other messages.
    std::fprintf(stderr, "rectrain-vk: error: %s (rectrain-vk %s--help lists the options)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return 2;
  }
  torch::set_num_threads(threads);
  rectrain::set_durable_writes(durable);
  rectrain::set_warning_handler([](const std::string& message) {
    std::fprintf(stderr, "rectrain-vk: warning: %s\n", message.c_str());
  });
  // Every failure is one message (and exit 1), never a LibTorch stack trace.
  auto report = [](const std::string& what) {
    std::fprintf(stderr, "rectrain-vk: error: %s\n", what.c_str());
    return 1;
  };
  try {
    // A bad RECTRAIN_CPU_ISA is an error now, not in the middle of a run.
    rectrain::cpu_isa();
    if (*synth) return run_synth(scale, out, seed);
    if (*baseline) return run_baseline(data, predictions, which, seed);
    if (*eval) return run_eval(candidates, predictions);
    if (*als) return run_als(data, out, als_settings, seed);
    if (*train) {
      cfg.freeze = !no_freeze;
      cfg.als = !no_als;
      cfg.popularity = !no_popularity;
      cfg.hidden = vk::parse_widths(hidden, "--hidden");
      run.seeds = rectrain::parse_seed_list(seeds, "--seeds");
      cfg.validate();
      if (cfg.bf16 && vk::parse_device(run.device).is_cpu() && !rectrain::cpu_has_native_bf16() && !allow_slow_bf16)
        throw rectrain::Error(
            "--bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so LibTorch converts every element to fp32 "
            "and back; on an AMD EPYC Zen 3 that trained 21x slower than fp32. Drop --bf16, or pass "
            "--allow-slow-bf16 to run it anyway");
      if (run.workers < 0) throw rectrain::Error("--workers must be >= 0, got " + std::to_string(run.workers));
      if (run.stop_after < 0) throw rectrain::Error("--stop-after must be >= 0, got " + std::to_string(run.stop_after));
      run.memory_budget = vk::parse_memory_budget(memory_budget);
      for (int i = 0; i < argc; ++i) run.command += (i ? " " : "") + std::string(argv[i]);
      return vk::run_train(run);
    }
    if (*predict) return vk::run_predict(data, models, predictions, run.device, vk::parse_memory_budget(memory_budget));
    return run_demo(scale, dir, seed);
  } catch (const c10::Error& e) {
    // LibTorch's own message, without its backtrace.
    std::string what = e.what_without_backtrace();
    const auto newline = what.find('\n');
    if (newline != std::string::npos) what.resize(newline);
    return report("LibTorch: " + what + " (rerun with TORCH_SHOW_CPP_STACKTRACES=1 for where)");
  } catch (const std::exception& e) {
    return report(e.what());
  }
}

} // namespace vk
