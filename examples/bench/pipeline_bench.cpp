// Batch pipeline throughput for the challenge's full feature set (user,
// item, source, duration, 32-d item embedding, gender, age; six labels):
// rows/s per worker count, the cost of each stage, and the count
// tune_workers picks.
//   pipeline_bench [--scale S] [--threads T] [--batch B] [--device cpu|cuda]

#include "machine.hpp"
#include "programs.hpp"

#include <rectrain/rectrain.hpp>

#include <filesystem>

int pipeline_bench_main(int argc, char** argv) {
  double scale = 0.02;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int64_t batch = 256;
  std::string device = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--scale") scale = std::stod(argv[i + 1]);
    else if (flag == "--threads") threads = std::stoi(argv[i + 1]);
    else if (flag == "--batch") batch = std::stoll(argv[i + 1]);
    else if (flag == "--device") device = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: pipeline_bench [--scale S] [--threads T] [--batch B] [--device cpu|cuda]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  bench::print_machine("pipeline_bench (full challenge feature set, G = 20)");
  const auto dir = std::filesystem::temp_directory_path() / ("rectrain-pipeline-bench-" + std::to_string(::getpid()));
  rectrain::generate_synthetic(dir.string(), rectrain::SyntheticOptions::at_scale(scale));
  const auto ds = rectrain::load_dataset(dir.string());
  std::filesystem::remove_all(dir);
  std::printf("dataset: %lld rows, batch %lld groups of 20, device %s\n",
              static_cast<long long>(ds.num_interactions()), static_cast<long long>(batch), device.c_str());
  rectrain::GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(),
                                 rectrain::GroupSamplerOptions(20).batch_size(batch));
  rectrain::BatchPipeline pipeline(rectrain::standard_batch_spec(ds), sampler,
                                   rectrain::BatchPipelineOptions().device(torch::Device(device)));
  std::printf("%8s %14s %10s %10s %10s %10s\n", "workers", "rows_per_s", "sample_s", "gather_s", "copy_s", "wait_s");
  for (int64_t workers = 0; workers <= 3; ++workers) {
    pipeline.set_workers(workers);
    pipeline.start_epoch(workers);
    const double t0 = bench::now_seconds();
    while (auto b = pipeline.next()) {
    }
    if (device == "cuda") torch::cuda::synchronize();
    const double dt = bench::now_seconds() - t0;
    const auto st = pipeline.stats();
    std::printf("%8lld %14.0f %10.3f %10.3f %10.3f %10.3f\n", static_cast<long long>(workers), st.rows / dt,
                st.sample_seconds, st.gather_seconds, st.copy_seconds, st.wait_seconds);
  }
  const int64_t chosen = pipeline.tune_workers(3, 64);
  std::printf("tune_workers picked %lld (rows/s by worker count:", static_cast<long long>(chosen));
  for (double r : pipeline.tuned_rates()) std::printf(" %.0f", r);
  std::printf(")\n");
  return 0;
}
