// Model components benchmark, two parts:
//  losses: forward + backward of rectrain's ranking losses for B groups of
//          G = 20, beside a naive version that enumerates the valid pairs
//          with loops and gathers them (the usual hand-written approach), in
//          the same run, with the values checked equal.
//  model:  one training step (forward, backward, optimizer) of the recipe's
//          full Ranker (user id 256+128, gender, age; item id 256, source
//          128, duration, 32-d content vector; shared MLP 512-256 with
//          LayerNorm and dropout 0.1; six heads) per 1,000 rows, with
//          embeddings frozen, unfrozen with sparse gradients (SparseAdam
//          for the tables: every row, or lazily only the rows used), and
//          unfrozen with dense ones (Adam for all); the
//          GFLOP/s of its matrix products beside plain torch::mm GFLOP/s on
//          the same shapes (rectrain::training_matmuls) and on a
//          4096×512×512 GEMM.
//   model_bench [--part losses|model|all] [--groups 4096] [--model-groups 256]
//               [--threads T] [--runs R] [--device cpu|cuda] [--scale 1.0] [--trace PREFIX]
//               [--no-memory-reuse]

#include "machine.hpp"
#include "recipe_ranker.hpp"
#include "programs.hpp"

#include <rectrain/rectrain.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

using rectrain::Batch;

void sync(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

/// The usual hand-written pairwise loss: loops find every valid ordered
/// pair, then one gather and one elementwise loss over the pair list.
torch::Tensor naive_pairwise(const torch::Tensor& scores, const torch::Tensor& targets, const torch::Tensor& mask,
                             const std::function<torch::Tensor(const torch::Tensor&)>& pair_loss) {
  const auto t = targets.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto m = mask.to(torch::kCPU).contiguous();
  const auto ta = t.accessor<float, 2>();
  const auto ma = m.accessor<bool, 2>();
  std::vector<int64_t> hi, lo;
  const int64_t b = t.size(0), g = t.size(1);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t i = 0; i < g; ++i)
      for (int64_t j = 0; j < g; ++j)
        if (ma[r][i] && ma[r][j] && ta[r][i] > ta[r][j]) {
          hi.push_back(r * g + i);
          lo.push_back(r * g + j);
        }
  const auto flat = scores.reshape({-1});
  const auto hi_t = torch::tensor(hi, torch::kInt64).to(scores.device());
  const auto lo_t = torch::tensor(lo, torch::kInt64).to(scores.device());
  const auto diff = flat.index_select(0, hi_t) - flat.index_select(0, lo_t);
  return pair_loss(diff).sum() / std::max<int64_t>(1, static_cast<int64_t>(hi.size()));
}

void run_losses(int64_t groups, int runs, torch::Device device) {
  const int64_t g = 20;
  torch::manual_seed(1);
  // Challenge-like targets: 4.7% like (1), 0.04% dislike (−1), else 0; a
  // group keeps at least one like so it has pairs.
  const auto r = torch::rand({groups, g});
  auto targets = (r < 0.047).to(torch::kFloat32) - (r > 0.9996).to(torch::kFloat32);
  targets.select(1, 0).fill_(1);
  const auto mask = torch::rand({groups, g}) > 0.02;
  const auto scores0 = torch::randn({groups, g});
  const auto t = targets.to(device), m = mask.to(device);
  std::printf("\n## ranking losses: B = %lld groups, G = %lld, %s, forward + backward, median of %d runs\n",
              static_cast<long long>(groups), static_cast<long long>(g), device.str().c_str(), runs);
  std::printf("%-28s %12s %12s %14s\n", "loss", "rectrain ms", "naive ms", "|difference|");

  using LossFn = std::function<torch::Tensor(const torch::Tensor&)>;
  struct Case {
    const char* name;
    LossFn ours;
    LossFn naive;  // empty: no naive counterpart
  };
  const rectrain::PairwiseLossOptions plain;
  const auto lambda = rectrain::PairwiseLossOptions().lambda_weights(true);
  std::vector<Case> cases{
      {"pairwise_margin", [&](const torch::Tensor& s) { return rectrain::pairwise_margin_loss(s, t, m, plain); },
       [&](const torch::Tensor& s) {
         return naive_pairwise(s, t, m, [](const torch::Tensor& d) { return torch::relu(1.0 - d); });
       }},
      {"ranknet", [&](const torch::Tensor& s) { return rectrain::ranknet_loss(s, t, m, plain); },
       [&](const torch::Tensor& s) {
         return naive_pairwise(s, t, m, [](const torch::Tensor& d) { return torch::softplus(-d); });
       }},
      {"pairwise_margin+lambda", [&](const torch::Tensor& s) { return rectrain::pairwise_margin_loss(s, t, m, lambda); },
       {}},
      {"listwise_softmax", [&](const torch::Tensor& s) { return rectrain::listwise_softmax_loss(s, t, m); }, {}},
  };
  for (const auto& c : cases) {
    auto time_of = [&](const LossFn& f, double& value) {
      for (int w = 0; w < 2; ++w) {  // warm-up
        auto s = scores0.to(device).requires_grad_(true);
        f(s).backward();
      }
      return bench::median_seconds(runs, [&] {
        auto s = scores0.to(device).requires_grad_(true);
        auto loss = f(s);
        loss.backward();
        sync(device);
        value = loss.item<double>();
      });
    };
    double ours_value = 0, naive_value = 0;
    const double ours = time_of(c.ours, ours_value);
    if (c.naive) {
      const double naive = time_of(c.naive, naive_value);
      std::printf("%-28s %12.3f %12.3f %14.2e\n", c.name, 1e3 * ours, 1e3 * naive, std::abs(ours_value - naive_value));
    } else {
      std::printf("%-28s %12.3f %12s %14s\n", c.name, 1e3 * ours, "-", "-");
    }
  }
}

double square_mm_gflops(int runs, torch::Device device) {
  auto o = torch::TensorOptions().device(device);
  const auto a = torch::randn({4096, 512}, o), b = torch::randn({512, 512}, o);
  torch::mm(a, b);
  const double s = bench::median_seconds(runs, [&] {
    for (int k = 0; k < 4; ++k) torch::mm(a, b);
    sync(device);
  });
  return 4 * 2.0 * 4096 * 512 * 512 / s / 1e9;
}

void run_model(int64_t groups, int runs, torch::Device device, double scale, const std::string& trace) {
  const auto shape = bench::ModelShape::at_scale(scale);
  const int64_t rows = groups * 20;
  std::printf("\n## recipe Ranker: %lld users, %lld items, %lld sources; batches of %lld groups × 20 = %lld rows; %s\n",
              static_cast<long long>(shape.users), static_cast<long long>(shape.items),
              static_cast<long long>(shape.sources), static_cast<long long>(groups), static_cast<long long>(rows),
              device.str().c_str());
  const double square = square_mm_gflops(runs, device);
  std::printf("torch::mm 4096x512x512: %.1f GFLOP/s\n", square);
  std::printf("%-22s %12s %14s %12s %14s %10s\n", "tables", "ms/batch", "ms/1000 rows", "GFLOP/s", "mm same shapes",
              "model/mm");
  struct Mode {
    const char* name;
    const char* tag;
    bool frozen, sparse;
    rectrain::SparseAdamRows rows;
  };
  using Rows = rectrain::SparseAdamRows;
  for (const Mode mode : {Mode{"frozen", "frozen", true, false, Rows::All},
                          Mode{"unfrozen, sparse grad", "sparse", false, true, Rows::All},
                          Mode{"unfrozen, sparse lazy", "lazy", false, true, Rows::Touched},
                          Mode{"unfrozen, dense grad", "dense", false, false, Rows::All}}) {
    torch::manual_seed(2);
    auto ranker = bench::recipe_ranker(shape, mode.frozen, mode.sparse);
    ranker->to(device);
    std::vector<Batch> batches;
    for (int k = 0; k < 4; ++k) batches.push_back(bench::random_batch(shape, groups, device));
    // A whole training step: forward, backward, Adam (dense tables) or
    // Adam + SparseAdam for the sparse tables (LibTorch's Adam takes no
    // sparse gradients), as rectrain-vk trains.
    std::vector<torch::Tensor> dense_params, sparse_params;
    for (const auto& item : ranker->named_parameters())
      if (item.value().requires_grad())
        (mode.sparse && item.key().find("features") != std::string::npos ? sparse_params : dense_params)
            .push_back(item.value());
    torch::optim::Adam adam(dense_params, torch::optim::AdamOptions(1e-3));
    std::unique_ptr<rectrain::SparseAdam> tables;
    if (!sparse_params.empty())
      tables = std::make_unique<rectrain::SparseAdam>(sparse_params, torch::optim::AdamOptions(1e-3), mode.rows);
    auto step = [&](const Batch& b) {
      rectrain::compat::zero_grad(adam);
      if (tables) rectrain::compat::zero_grad(*tables);
      ranker->loss(ranker->forward(b), b).backward();
      adam.step();
      if (tables) tables->step();
    };
    for (int w = 0; w < 2; ++w) step(batches[static_cast<size_t>(w)]);
    // Steps and the yardstick (the same products as plain torch::mm) in
    // alternation, each ratio from a step and the products timed right
    // after it: on a shared machine the speed drifts by a quarter within a
    // minute, and two medians taken a minute apart compare two machines.
    const auto products = rectrain::training_matmuls(ranker, rows);
    const double flops = rectrain::matmul_flops(products);
    std::vector<double> seconds, mm_rates, ratios;
    for (int r = 0; r < std::max(1, runs); ++r) {
      const double t0 = bench::now_seconds();
      step(batches[static_cast<size_t>(r % 4)]);
      sync(device);
      seconds.push_back(bench::now_seconds() - t0);
      mm_rates.push_back(rectrain::matmul_gflops(products, device, 1));
      ratios.push_back(flops / seconds.back() / 1e9 / mm_rates.back());
    }
    const auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double s = median(seconds), mm = median(mm_rates);
    if (!trace.empty()) {  // one more step under LibTorch's profiler, as a chrome://tracing file
      torch::autograd::profiler::RecordProfile profile(trace + "." + mode.tag + ".json");
      step(batches[0]);
    }
    std::printf("%-22s %12.2f %14.2f %12.1f %14.1f %9.0f%%\n", mode.name, 1e3 * s, 1e6 * s / rows, flops / s / 1e9, mm,
                100.0 * median(ratios));
  }
}

} // namespace

int model_bench_main(int argc, char** argv) {
  CLI::App app{"rectrain model components benchmark"};
  std::string part = "all", device_name = "cpu";
  int64_t groups = 4096, model_groups = 256;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int runs = 10;
  double scale = 1.0;
  std::string trace;
  bool no_memory_reuse = false;
  app.add_option("--part", part, "losses | model | all")->capture_default_str();
  app.add_option("--groups", groups, "Groups per batch for the losses")->capture_default_str();
  app.add_option("--model-groups", model_groups, "Groups of 20 per batch for the model")->capture_default_str();
  app.add_option("--threads", threads, "Intra-op threads")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs (median)")->capture_default_str();
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_option("--scale", scale, "Embedding table sizes relative to the challenge's")->capture_default_str();
  app.add_option("--trace", trace, "Write a profiler trace of one model step per mode to TRACE.<mode>.json");
  app.add_flag("--no-memory-reuse", no_memory_reuse,
               "Leave glibc's allocator as it is (large blocks mapped and unmapped every step)");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  try {
    const torch::Device device(device_name);
    if (device.is_cuda() && !torch::cuda::is_available()) throw std::runtime_error("--device cuda: no CUDA device");
    bench::print_machine("model_bench");
    std::printf("freed memory reused (rectrain::reuse_freed_memory): %s\n",
                !no_memory_reuse && rectrain::reuse_freed_memory() ? "yes" : "no");
    if (part == "losses" || part == "all") run_losses(groups, runs, device);
    if (part == "model" || part == "all") run_model(model_groups, runs, device, scale, trace);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
