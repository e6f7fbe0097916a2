// rectrain-vk's command line: synth, baseline, als, train, predict, eval,
// demo (cli.hpp). Compiled once, into the library both the program and the
// test suite link.

#include "cli.hpp"
#include "train.hpp"

#include <rectrain/rectrain.hpp>
#include <rectrain/dist/local_launcher.hpp>
#include <rectrain/dist/process_group.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

namespace vk {
namespace {

using namespace rectrain;

void print_gauc(const std::string& name, const GroupMetric& m) {
  say("%-12s GAUC %.6f users %lld\n", name.c_str(), m.value, m.users);
}

int run_synth(double scale, const std::string& out, uint64_t seed) {
  if (!(scale > 0 && scale <= 1)) throw Error("synth: --scale must be in (0, 1], got " + std::to_string(scale));
  const Stopwatch t0;
  const auto s = generate_synthetic(out, SyntheticOptions::at_scale(scale).seed(seed));
  say("synth: %lld users, %lld items, %lld sources, %lld interactions, %lld candidates in %s (%.1f s)\n", s.users,
      s.items, s.sources, s.interactions, s.candidates, out.c_str(), t0.seconds());
  say("synth: like %.4f%%, dislike %.4f%%, share %.4f%%, bookmarks %.4f%%\n", 100 * s.like_rate,
      100 * s.dislike_rate, 100 * s.share_rate, 100 * s.bookmark_rate);
  return 0;
}

int run_baseline(const std::string& data, const std::string& predictions, const std::string& which, uint64_t seed) {
  protect_input(data);
  const auto ds = load_dataset(data, DatasetOptions().require_candidates(true));
  const bool targets = ds.candidates.contains("target");
  if (!targets) say("baseline: %s/candidates has no target column; writing predictions only\n", data.c_str());
  for (const auto& [name, scores] : baseline_scores(ds, seed)) {
    if (targets) print_gauc(name, candidate_gauc(ds, scores));
    if (name == which) write_predictions(predictions, ds.candidates["user_id"], ds.candidates["item_id"], scores);
  }
  say("baseline: wrote %s (%s)\n", predictions.c_str(), which.c_str());
  return 0;
}

int run_eval(const std::string& candidates, const std::string& predictions, const std::string& against,
             int64_t resamples, uint64_t seed) {
  const auto c = read_csv(candidates, {{"user_id", CsvType::Id}, {"item_id", CsvType::Id},
                                       {"target", CsvType::Integer, true, -1, 1}});
  const auto scores = match_predictions(predictions, c["user_id"], c["item_id"]);
  // The per-user AUCs once per file: GAUC is their mean, and the bootstrap draws from them.
  const auto per_user = gauc_per_user(c["user_id"], c["target"], scores);
  const auto m = per_user.mean();
  if (m.users == 0)
    throw Error("eval: GAUC is undefined: no user of " + candidates + " has two different targets (GAUC averages AUC "
                "over users with both a better and a worse candidate)");
  say("GAUC %.6f users %lld\n", m.value, m.users);
  if (against.empty()) return 0;
  const auto other = gauc_per_user(c["user_id"], c["target"], match_predictions(against, c["user_id"], c["item_id"]));
  const auto options = PairedBootstrapOptions().resamples(resamples).seed(seed);
  const auto d = paired_bootstrap(per_user.values, other.values, options);
  say("against %s: GAUC %.6f, difference %+.6f, %.0f%% interval [%+.6f, %+.6f], above 0 in %.1f%% of resamples "
      "(paired bootstrap over %lld users, %lld resamples, seed %llu)\n",
      against.c_str(), other.mean().value, d.difference, 100 * options.confidence(), d.low,
      d.high, 100 * d.share_above, static_cast<long long>(d.users), static_cast<long long>(resamples),
      static_cast<unsigned long long>(seed));
  return 0;
}

struct AlsRun {
  int64_t factors = 256, source_factors = 128, iterations = 15;
  double regularization = 0.01, alpha = 0;
  Settings settings() {
    Settings s;
    s.add("factors", factors, "Item-ALS factors").above(0);
    s.add("source_factors", source_factors, "Source-ALS factors (0: skip)").at_least(0);
    s.add("iterations", iterations, "ALS iterations").at_least(1);
    s.add("regularization", regularization, "lambda").at_least(0);
    s.add("alpha", alpha, "Confidence 1 + alpha * count (0: binary)").at_least(0);
    return s;
  }
};

int run_als(const std::string& data, const std::string& out, const AlsRun& s, const std::string& device, uint64_t seed) {
  const auto options = ImplicitAlsOptions(s.factors).regularization(s.regularization).alpha(s.alpha)
      .iterations(s.iterations).seed(seed).device(parse_device(device, "--device")).compute_loss(true);
  protect_input(data);
  const Stopwatch t0;
  const auto ds = load_dataset(data);
  say("als: loaded %s in %.2f s\n", data.c_str(), t0.seconds());
  auto fit = [&](const char* name, const CsrMatrix& m, const ImplicitAlsOptions& o) {
    say("als %s: %lld x %lld, %lld nonzeros, %lld factors\n", name, m.rows, m.cols, m.nnz(), o.factors());
    return fit_implicit_als(m, ImplicitAlsOptions(o).on_iteration([name](const AlsIterationStats& st) {
      say("als %s: iteration %2lld  %.3f s  loss %.8f\n", name, st.iteration, st.seconds, st.loss);
    }));
  };
  const auto items = fit("user x item", user_item_matrix(ds), options);
  const auto sources_matrix = ds.num_sources() > 0 ? user_source_matrix(ds) : CsrMatrix{};
  AlsFactors sources;
  const bool with_sources = sources_matrix.nnz() > 0 && s.source_factors > 0;
  if (with_sources)
    sources = fit("user x source", sources_matrix, ImplicitAlsOptions(options).factors(s.source_factors).seed(seed + 1));
  else
    say("als: no item sources known: source factors skipped\n");
  std::filesystem::create_directories(out);
  const DirectoryLock lock(out, "rectrain-vk als");
  const std::string path = (std::filesystem::path(out) / "als.pt").string();
  save_als_factors(path, ds, items, with_sources ? &sources : nullptr);
  say("als: wrote %s (torch.save format: a dict of tensors)\n", path.c_str());
  if (ds.candidates.num_rows() > 0 && ds.candidates.contains("target")) {
    // Dot products of the item-ALS factors as candidate scores; unknown users or items score 0.
    const auto user = ds.candidates["user"], item = ds.candidates["item"];
    const auto scores = (items.user.cpu().index_select(0, user.clamp_min(0)) *
                         items.item.cpu().index_select(0, item.clamp_min(0))).sum(1);
    print_gauc("als_dot", candidate_gauc(ds, torch::where((user >= 0) & (item >= 0), scores, torch::zeros_like(scores))));
  }
  return 0;
}

int run_demo(double scale, std::string dir, uint64_t seed) {
  say("rectrain %s demo: LibTorch %d.%d, %d threads\n", version_string, TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
      at::get_num_threads());
  const bool temporary = dir.empty();
  if (temporary) dir = std::filesystem::temp_directory_path() / ("rectrain-demo-" + std::to_string(::getpid()));
  run_synth(scale, dir, seed);
  Stopwatch t0;
  const auto ds = load_dataset(dir);
  say("load: %lld rows, %lld users, %lld items in %.2f s\n", ds.num_interactions(), ds.num_users(), ds.num_items(),
      t0.seconds());
  GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(),
                       GroupSamplerOptions(20).batch_size(64).seed(seed));
  BatchPipeline pipeline(standard_batch_spec(ds), sampler, BatchPipelineOptions().workers(2));
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    t0.restart();
    pipeline.start_epoch(epoch);
    double liked = 0;
    while (auto batch = pipeline.next()) liked += batch->label("like").sum().item<double>();
    const auto st = pipeline.stats();
    say("epoch %lld: %lld groups of 20 in %lld batches, %lld rows (%.1f%% liked), %.0f rows/s [sample %.3f s, "
        "gather %.3f s, copy %.3f s]\n", epoch, sampler.num_groups(), st.batches, st.rows,
        100.0 * liked / std::max<int64_t>(1, st.rows), st.rows / t0.seconds(), st.sample_seconds, st.gather_seconds,
        st.copy_seconds);
  }
  for (const auto& [name, scores] : baseline_scores(ds, seed)) print_gauc(name, candidate_gauc(ds, scores));
  if (temporary) std::filesystem::remove_all(dir);
  return 0;
}

/// Every field of `settings` as an option of `command` (its text, parsed
/// and range-checked by the table, so errors name the flag) or a flag;
/// returns what applies the values given.
std::function<void()> add_settings(CLI::App* command, Settings& settings) {
  auto given = std::make_shared<std::map<std::string, std::string>>();
  auto flagged = std::make_shared<std::map<std::string, bool>>();
  for (const auto& field : settings.fields()) {
    if (field.is_flag()) command->add_flag(field.flag(), (*flagged)[field.key()], field.help());
    else command->add_option(field.flag(), (*given)[field.key()], field.help())->default_str(field.text(6))
        ->type_name(field.kind());
  }
  return [&settings, given, flagged] {
    for (auto& field : settings.fields()) {
      if (field.is_flag() && (*flagged)[field.key()]) field.set(field.flag_value() ? "1" : "0", field.flag());
      if (!field.is_flag() && !(*given)[field.key()].empty()) field.set((*given)[field.key()], field.flag());
    }
    settings.validate();
  };
}

} // namespace

int cli_main(int argc, char** argv) {
  // Inputs protected by an earlier call in this process are not this run's.
  clear_protected_inputs();
  struct ClearInputs {
    ~ClearInputs() { clear_protected_inputs(); }
  } clear_inputs_at_exit;
  CLI::App app{"rectrain-vk: the VK RecSys Challenge 2024 ranking recipe on rectrain"};
  app.require_subcommand(0, 1);
  quiet() = false;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int threads = cores;
  auto* threads_option = app.add_option("--threads", threads, "LibTorch intra-op threads (default: the cores, "
                                        "divided between the local ranks of a data-parallel run)")
                              ->check(CLI::PositiveNumber)->capture_default_str();
  double scale = 0.01;
  std::string out, data, predictions = "predictions.csv", candidates, which = "like_rate", dir, device = "cpu";
  std::string seeds = "1,2,3", memory_budget = "auto";
  uint64_t seed = 42;
  bool durable = false, allow_slow_bf16 = false;
  std::vector<std::string> models;
  TrainRun run;
  AlsRun als_run;
  auto recipe = run.config.settings();
  auto als_settings = als_run.settings();
  auto option = [](CLI::App* command, const std::string& name, auto& value, const std::string& help) {
    return command->add_option(name, value, help)->capture_default_str();
  };

  auto* synth = app.add_subcommand("synth", "Write a synthetic dataset shaped like the challenge's");
  option(synth, "--scale", scale, "Fraction of the full 145M-row scale, in (0, 1]");
  auto* baseline = app.add_subcommand("baseline", "Score random, popularity and like-rate baselines");
  option(baseline, "--write", which, "Baseline written: random, popularity, like_rate")
      ->check(CLI::IsMember({"random", "popularity", "like_rate"}));
  auto* eval = app.add_subcommand("eval", "GAUC of predictions.csv against candidates.csv targets");
  eval->add_option("--candidates", candidates, "candidates.csv with a target column")->required();
  std::string against;
  int64_t resamples = 10000;
  eval->add_option("--against", against,
                   "Another predictions.csv: its GAUC, the difference and its paired bootstrap interval over the users")
      ->check(CLI::ExistingFile);
  option(eval, "--resamples", resamples, "Bootstrap draws of the users (with --against)")->check(CLI::PositiveNumber);
  auto* als = app.add_subcommand("als", "Fit implicit ALS (user x item, user x source) and save the factors");
  const auto apply_als = add_settings(als, als_settings);
  auto* demo = app.add_subcommand("demo", "Synthetic data -> group sampler -> baselines (the default)");
  option(demo, "--scale", scale, "Synthetic scale");
  demo->add_option("--dir", dir, "Keep the synthetic dataset here (default: a temporary directory)");
  auto* train = app.add_subcommand("train", "Train the recipe's ranker (ALS init, frozen then unfrozen epochs) and "
                                            "write model, metrics, plot and predictions.csv");
  option(train, "--seeds", seeds, "Comma-separated seeds: one model each, predictions averaged");
  train->add_flag("--resume", run.resume, "Continue from the checkpoints in --out");
  train->add_flag("--overwrite", run.overwrite,
                  "Start afresh in an --out that holds another run's outputs (removing them first)");
  option(train, "--stop-after", run.stop_after, "Stop after this many epochs (0: never); continue with --resume");
  option(train, "--workers", run.workers, "Batch pipeline threads")->check(CLI::NonNegativeNumber);
  int64_t nproc = 1;
  option(train, "--nproc", nproc, "Data-parallel ranks to start on this machine (as torchrun --nproc-per-node; "
                                  "under torchrun or srun, each rank reads RANK, WORLD_SIZE, MASTER_ADDR, ...)")
      ->check(CLI::PositiveNumber);
  const auto apply_recipe = add_settings(train, recipe);
  train->add_flag("--allow-slow-bf16", allow_slow_bf16,
                  "Run --bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) all the same");
  auto* predict = app.add_subcommand("predict", "Score candidates.csv with trained models (their average)");
  predict->add_option("--models", models, "train's --out directory, or model-seed*.pt files")->required();
  for (auto* command : {synth, als, demo}) option(command, "--seed", seed, "Random seed");
  option(baseline, "--seed", seed, "Seed of the random baseline");
  option(eval, "--seed", seed, "Seed of the bootstrap's draws (with --against)");
  for (auto* command : {baseline, als, train, predict})
    command->add_option("--data", data, "Dataset directory (train, predict: or a dataset cache, .pt)")
        ->required()
        ->check(command == train || command == predict ? CLI::Validator(CLI::ExistingPath)
                                                       : CLI::Validator(CLI::ExistingDirectory));
  for (auto* command : {synth, als, train}) command->add_option("--out", out, "Output directory")->required();
  for (auto* command : {baseline, eval, predict})
    option(command, "--predictions", predictions, command == eval ? "predictions.csv" : "Where to write predictions");
  eval->get_option("--predictions")->required();
  for (auto* command : {als, train, predict}) option(command, "--device", device, "cpu or cuda");
  for (auto* command : {synth, baseline, als, train, predict})
    command->add_flag("--durable", durable,
                      "fsync every file written and its directory before going on (survives a power cut)");
  for (auto* command : {train, predict})
    option(command, "--memory-budget", memory_budget, "Refuse a dataset whose estimated loading peak is above this: a "
                                                      "size (12G, 512M), auto (the memory available now) or none");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    // A usage error: one line and exit 2, like the other messages.
    std::fprintf(stderr, "rectrain-vk: error: %s (rectrain-vk %s--help lists the options)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return 2;
  }
  // The cores are shared by the ranks started on this machine.
  const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
  const int64_t local_ranks = launched_as_rank() ? (local_world ? std::max(1, std::atoi(local_world)) : 1)
                                                 : (*train ? nproc : 1);
  if (threads_option->count() == 0) threads = std::max<int>(1, cores / static_cast<int>(local_ranks));
  torch::set_num_threads(threads);
  set_durable_writes(durable);
  set_warning_handler([](const std::string& what) { std::fprintf(stderr, "rectrain-vk: warning: %s\n", what.c_str()); });
  // Every failure is one message (and exit 1), never a LibTorch stack trace.
  const char* rank_text = std::getenv("RANK");
  const std::string rank_prefix = launched_as_rank() && rank_text ? std::string("rank ") + rank_text + ": " : "";
  auto report = [&rank_prefix](const std::string& what) {
    // A distributed error names its rank already.
    const bool named = what.rfind("rank ", 0) == 0;
    std::fprintf(stderr, "rectrain-vk: error: %s%s\n", named ? "" : rank_prefix.c_str(), what.c_str());
    return 1;
  };
  try {
    cpu_isa();  // a bad RECTRAIN_CPU_ISA is an error now, not in the middle of a run
    if (*synth) return run_synth(scale, out, seed);
    if (*baseline) return run_baseline(data, predictions, which, seed);
    if (*eval) return run_eval(candidates, predictions, against, resamples, seed);
    if (*als) return apply_als(), run_als(data, out, als_run, device, seed);
    const auto budget = [&] { return parse_memory_budget(memory_budget, "--memory-budget"); };
    if (*predict) return run_predict(data, models, predictions, device, budget());
    if (!*train) return run_demo(scale, dir, seed);
    apply_recipe();
    run.config.validate();
    run.seeds = parse_seed_list(seeds, "--seeds");
    run.data = data, run.out = out, run.device = device;
    if (parse_device(device, "--device").is_cpu() && run.config.bf16 && !cpu_has_native_bf16() && !allow_slow_bf16)
      throw Error("--bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so LibTorch converts every element to "
                  "fp32 and back; on an AMD EPYC Zen 3 that trained 21x slower than fp32. Drop --bf16, or pass "
                  "--allow-slow-bf16 to run it anyway");
    if (run.stop_after < 0) throw Error("--stop-after must be >= 0, got " + std::to_string(run.stop_after));
    run.memory_budget = budget();
    for (int i = 0; i < argc; ++i) run.command += (i ? " " : "") + std::string(argv[i]);
    if (nproc > 1 && !launched_as_rank()) {
      // The launcher: this program again, once per rank, each told its rank.
      std::vector<std::string> args{"/proc/self/exe"};
      for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
      say("train: starting %lld ranks on this machine, %d threads each\n", nproc, threads);
      const double timeout = DistributedOptions::from_environment().timeout_seconds();
      return LocalLauncher(LocalLaunchOptions(nproc).grace_seconds(timeout + 30)).run(args);
    }
    if (launched_as_rank()) {
      auto distributed = DistributedOptions::from_environment();
      if (nproc != 1 && nproc != distributed.world_size())
        throw Error("--nproc " + std::to_string(nproc) + " differs from WORLD_SIZE " +
                    std::to_string(distributed.world_size()) + " set by the launcher; drop --nproc under torchrun");
      if (distributed.world_size() > 1) {
        auto where = parse_device(device, "--device");
        if (where.is_cuda() && !where.has_index()) {  // one GPU per local rank
          run.device = "cuda:" + std::to_string(distributed.local_rank());
          where = parse_device(run.device, "--device");
        }
        quiet() = distributed.rank() != 0;
        run.group = ProcessGroup::create(distributed, where);
      }
    }
    return run_train(run);
  } catch (const c10::Error& e) {
    // LibTorch's own message, without its backtrace.
    std::string what = e.what_without_backtrace();
    if (what.find('\n') != std::string::npos) what.resize(what.find('\n'));
    return report("LibTorch: " + what + " (rerun with TORCH_SHOW_CPP_STACKTRACES=1 for where)");
  } catch (const std::exception& e) {
    return report(e.what());
  }
}

} // namespace vk
