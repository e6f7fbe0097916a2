// Data-parallel training steps of the recipe's full Ranker (model_bench's,
// at the challenge's table sizes) on c10d: rows/s of one process with T
// threads against N ranks of T/N threads each (Gloo on CPU, NCCL on CUDA),
// both taking the same global batch (--model-groups groups of 20 a step,
// split between the ranks), with the tables frozen and unfrozen (sparse
// gradients, SparseAdam over every row, rectrain-vk's default, or lazily
// over the rows a step used: --table-update lazy). Per step:
// the bytes each rank sent into the exchange (payload, by kind) and the
// share of the step spent in synchronize_gradients (waiting for what the
// hooks started during backward, then the sparse tables and buffers).
//   dist_bench [--model-groups 1024] [--threads T] [--nproc 2] [--runs 10] [--scale 1.0] [--device cpu|cuda]
//              [--table-update all|lazy] [--no-overlap]

#include "machine.hpp"
#include "programs.hpp"
#include "recipe_ranker.hpp"

#include <rectrain/dist/data_parallel.hpp>
#include <rectrain/dist/local_launcher.hpp>
#include <rectrain/dist/sharded_compute.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

struct DistBenchSettings {
  int64_t groups = 1024, nproc = 2;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int runs = 10;
  double scale = 1.0;
  std::string device = "cpu";
  bool overlap = true;
  std::string table_update = "all";
};

struct StepFigures {
  double seconds = 0;        ///< median step
  double rows_per_second = 0;
  double bytes_per_step = 0;  ///< this rank's exchange payload
  double dense_mb = 0, sparse_mb = 0;
  double sync_share = 0;  ///< of the step, in synchronize_gradients
  double dense_share = 0, sparse_share = 0;  ///< of which the dense buckets, the sparse tables
  std::string sparse_mode;
};

void sync_device(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

/// `runs` timed steps (after two untimed) of the Ranker with frozen or
/// unfrozen tables on `groups` groups a step; through DataParallel when
/// `group` is given (this rank's share of the global batch).
StepFigures time_steps(const DistBenchSettings& s, bool frozen, torch::Device device,
                       const std::shared_ptr<rectrain::ProcessGroup>& group) {
  using namespace rectrain;
  const auto shape = bench::ModelShape::at_scale(s.scale);
  const int64_t world = group ? group->world_size() : 1, rank = group ? group->rank() : 0;
  const auto share = rank_rows(s.groups, rank, world);
  torch::manual_seed(2);
  auto ranker = bench::recipe_ranker(shape, frozen, /*sparse=*/true);
  ranker->to(device);
  std::vector<torch::Tensor> dense_params, sparse_params;
  for (const auto& item : ranker->named_parameters())
    if (item.value().requires_grad())
      (item.key().find("features") != std::string::npos ? sparse_params : dense_params).push_back(item.value());
  torch::optim::Adam adam(dense_params, torch::optim::AdamOptions(1e-3));
  std::unique_ptr<SparseAdam> tables;
  if (!sparse_params.empty())
    tables = std::make_unique<SparseAdam>(sparse_params, torch::optim::AdamOptions(1e-3),
                                          s.table_update == "lazy" ? SparseAdamRows::Touched : SparseAdamRows::All);
  std::unique_ptr<DataParallel> parallel;
  if (group) parallel = std::make_unique<DataParallel>(*ranker, group, DataParallelOptions().overlap(s.overlap));
  torch::manual_seed(100 + static_cast<uint64_t>(rank));  // each rank its own rows
  std::vector<Batch> batches;
  for (int k = 0; k < 4; ++k) batches.push_back(bench::random_batch(shape, share.second, device));
  const auto step = [&](const Batch& b) {
    compat::zero_grad(adam);
    if (tables) compat::zero_grad(*tables);
    const auto loss = ranker->loss(ranker->forward(b), b);
    if (parallel) parallel->begin_step(static_cast<double>(share.second) / static_cast<double>(s.groups));
    loss.backward();
    if (parallel) parallel->synchronize_gradients();
    adam.step();
    if (tables) tables->step();
  };
  for (int w = 0; w < 2; ++w) step(batches[static_cast<size_t>(w)]);
  if (parallel) parallel->reset_stats();
  std::vector<double> seconds;
  for (int r = 0; r < std::max(1, s.runs); ++r) {
    const double t0 = bench::now_seconds();
    step(batches[static_cast<size_t>(r % 4)]);
    sync_device(device);
    seconds.push_back(bench::now_seconds() - t0);
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  StepFigures f;
  f.seconds = sorted[sorted.size() / 2];
  f.rows_per_second = static_cast<double>(s.groups * 20) / f.seconds;
  if (parallel) {
    const auto& st = parallel->stats();
    const double steps = static_cast<double>(std::max<int64_t>(1, st.steps));
    f.bytes_per_step = st.bytes_per_step();
    f.dense_mb = st.dense_bytes / steps / 1e6;
    f.sparse_mb = st.sparse_bytes / steps / 1e6;
    double total = 0;
    for (const double v : seconds) total += v;
    f.sync_share = st.sync_seconds / total;
    f.dense_share = st.dense_seconds / total;
    f.sparse_share = st.sparse_seconds / total;
    f.sparse_mode = st.sparse_gathered > 0 && st.sparse_densified > 0 ? "gathered and densified"
                    : st.sparse_densified > 0                        ? "densified"
                    : st.sparse_gathered > 0                         ? "gathered"
                                                                     : "none";
  }
  return f;
}

void print_row(const char* setup, const char* tables, const StepFigures& f) {
  std::printf("%-24s %-10s %10.1f %12.0f", setup, tables, 1e3 * f.seconds, f.rows_per_second);
  if (f.sparse_mode.empty()) std::printf("%12s %10s %10s %8s  %s\n", "-", "-", "-", "-", "-");
  else
    std::printf("%12.2f %10.2f %10.2f %7.1f%% (%.1f%% dense, %.1f%% sparse)  %s\n", f.bytes_per_step / 1e6, f.dense_mb,
                f.sparse_mb, 100 * f.sync_share, 100 * f.dense_share, 100 * f.sparse_share, f.sparse_mode.c_str());
}

/// One rank of the data-parallel half (started by the launcher half).
int run_rank(const DistBenchSettings& s) {
  using namespace rectrain;
  auto options = DistributedOptions::from_environment();
  torch::Device device(s.device);
  if (device.is_cuda()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(options.local_rank()));
  auto group = ProcessGroup::create(options, device);
  const std::string setup = rectrain::detail::concat(group->world_size(), " ranks x ", at::get_num_threads(), " thr (",
                                           to_string(group->backend()), ")");
  for (const bool frozen : {true, false}) {
    const auto f = time_steps(s, frozen, device, group);
    if (group->rank() == 0) print_row(setup.c_str(), frozen ? "frozen" : "unfrozen", f);
    std::fflush(stdout);
  }
  return 0;
}

} // namespace

int dist_bench_main(int argc, char** argv) {
  CLI::App app{"rectrain data-parallel training benchmark"};
  DistBenchSettings s;
  bool rank_part = false;
  app.add_option("--model-groups", s.groups, "Groups of 20 per step, over all ranks")->capture_default_str();
  app.add_option("--threads", s.threads, "Intra-op threads of the one process; each rank gets threads / nproc")
      ->capture_default_str();
  app.add_option("--nproc", s.nproc, "Ranks of the data-parallel half")->capture_default_str();
  app.add_option("--runs", s.runs, "Timed steps (median)")->capture_default_str();
  app.add_option("--scale", s.scale, "Embedding table sizes relative to the challenge's")->capture_default_str();
  app.add_option("--device", s.device, "cpu or cuda")->capture_default_str();
  app.add_option("--table-update", s.table_update, "SparseAdam over every row (all) or the rows a step used (lazy)")
      ->check(CLI::IsMember({"all", "lazy"}))->capture_default_str();
  app.add_flag("!--no-overlap", s.overlap, "Start no all-reduce during backward (all after it)");
  app.add_flag("--rank-part", rank_part, "(internal) run as one rank of the data-parallel half");
  CLI11_PARSE(app, argc, argv);
  try {
    if (rank_part) {
      torch::set_num_threads(std::max(1, s.threads / static_cast<int>(s.nproc)));
      rectrain::reuse_freed_memory();
      return run_rank(s);
    }
    if (s.groups < s.nproc) throw std::runtime_error("--model-groups must be at least --nproc");
    if (torch::Device(s.device).is_cuda() && !torch::cuda::is_available())
      throw std::runtime_error("--device cuda: no CUDA device");
    if (!rectrain::distributed_backend_available(torch::Device(s.device).is_cuda() ? rectrain::DistributedBackend::Nccl
                                                                                  : rectrain::DistributedBackend::Gloo))
      throw std::runtime_error("this build has no backend for " + s.device + " (Gloo: apt install libgloo-dev)");
    torch::set_num_threads(s.threads);
    bench::print_machine("dist_bench");
    std::printf("freed memory reused (rectrain::reuse_freed_memory): %s\n",
                rectrain::reuse_freed_memory() ? "yes" : "no");
    const auto shape = bench::ModelShape::at_scale(s.scale);
    std::printf("\n## recipe Ranker: %lld users, %lld items, %lld sources; %lld groups x 20 = %lld rows a step over all "
                "ranks; tables frozen, or unfrozen with sparse gradients (SparseAdam, %s); %s\n",
                static_cast<long long>(shape.users), static_cast<long long>(shape.items),
                static_cast<long long>(shape.sources), static_cast<long long>(s.groups),
                static_cast<long long>(s.groups * 20), s.table_update == "lazy" ? "the rows a step used" : "every row",
                s.device.c_str());
    std::printf("%-24s %-10s %10s %12s %12s %10s %10s %8s  %s\n", "setup", "tables", "ms/step", "rows/s",
                "MB sent/step", "dense MB", "sparse MB", "in sync", "sparse tables");
    const torch::Device device(s.device);
    for (const bool frozen : {true, false}) {
      const auto f = time_steps(s, frozen, device, nullptr);
      print_row(rectrain::detail::concat("1 process x ", s.threads, " thr").c_str(), frozen ? "frozen" : "unfrozen", f);
    }
    std::fflush(stdout);
    std::vector<std::string> args{"/proc/self/exe", "dist_bench", "--rank-part"};
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
    rectrain::LocalLauncher launcher(rectrain::LocalLaunchOptions(s.nproc).output([](int64_t rank) {
      return rank == 0 ? std::string() : std::string("/dev/null");
    }));
    return launcher.run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_bench: error: %s\n", e.what());
    return 1;
  }
}
