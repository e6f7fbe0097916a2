// Group sampler throughput: one epoch (shuffle within users, cut groups of
// 20, drop short and uniform groups, shuffle groups, yield every [256, 20]
// batch) at 1M, 10M and 100M rows, for rectrain's CPU path, its tensor-ops
// path (what runs on CUDA) on the CPU, and a plain sort-based version.
//   sampler_bench [--sizes 1000000,10000000,100000000] [--threads T] [--runs R]

#include "machine.hpp"
#include "programs.hpp"

#include <rectrain/rectrain.hpp>

#include <algorithm>
#include <sstream>

namespace {

struct Data {
  torch::Tensor users, targets;
};

// Challenge-shaped rows: histories 2..4500 (mean ~790), interleaved; like
// 4.7%, dislike 0.04%.
Data make_data(int64_t rows, uint64_t seed) {
  rectrain::FastRng rng(seed);
  std::vector<int64_t> lengths;
  int64_t total = 0;
  while (total < rows) {
    const int64_t len = std::min<int64_t>(
        rows - total, std::max<int64_t>(2, static_cast<int64_t>(2.0 * std::pow(2250.0, std::pow(rng.uniform(), 0.55)))));
    lengths.push_back(len);
    total += len;
  }
  auto users = torch::repeat_interleave(torch::arange(static_cast<int64_t>(lengths.size())),
                                        torch::tensor(lengths, torch::kInt64));
  torch::manual_seed(seed);
  users = users.index_select(0, torch::randperm(rows));
  const auto r = torch::rand({rows});
  const auto targets = (r < 0.047).to(torch::kInt8) - (r > 0.9996).to(torch::kInt8);
  return {users, targets};
}

// Plain sort-based sampler: sort (user, random key) pairs, cut, filter,
// shuffle groups, yield batches.
int64_t sort_based_epoch(const Data& d, int64_t g, int64_t batch, uint64_t seed) {
  const int64_t n = d.users.numel();
  const int64_t* u = d.users.data_ptr<int64_t>();
  const int8_t* t = d.targets.data_ptr<int8_t>();
  struct Entry {
    uint64_t key;
    int32_t row;
  };
  std::vector<Entry> e(static_cast<size_t>(n));
  rectrain::FastRng rng(seed);
  for (int64_t i = 0; i < n; ++i)
    e[static_cast<size_t>(i)] = {(static_cast<uint64_t>(u[i]) << 32) | (rng.next() >> 32), static_cast<int32_t>(i)};
  std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && (e[static_cast<size_t>(j)].key >> 32) == (e[static_cast<size_t>(i)].key >> 32)) ++j;
    for (int64_t s = i; s + g <= j; s += g) {
      bool uniform = true;
      for (int64_t k = s + 1; k < s + g && uniform; ++k)
        uniform = t[e[static_cast<size_t>(k)].row] == t[e[static_cast<size_t>(s)].row];
      if (!uniform) starts.push_back(s);
    }
    i = j;
  }
  for (int64_t i = static_cast<int64_t>(starts.size()) - 1; i > 0; --i)
    std::swap(starts[static_cast<size_t>(i)], starts[rng.below(static_cast<uint32_t>(i + 1))]);
  int64_t served = 0;
  for (size_t b = 0; b < starts.size(); b += static_cast<size_t>(batch)) {
    const int64_t count = std::min<int64_t>(batch, static_cast<int64_t>(starts.size() - b));
    auto out = torch::empty({count, g}, torch::kInt64);
    int64_t* o = out.data_ptr<int64_t>();
    for (int64_t k = 0; k < count; ++k)
      for (int64_t c = 0; c < g; ++c) o[k * g + c] = e[static_cast<size_t>(starts[b + static_cast<size_t>(k)] + c)].row;
    served += out.numel();
  }
  return served;
}

int64_t rectrain_epoch(rectrain::GroupSampler& s, int64_t epoch) {
  s.set_epoch(epoch);
  int64_t served = 0;
  while (auto b = s.next_batch()) served += b->numel();
  return served;
}

} // namespace

int sampler_bench_main(int argc, char** argv) {
  std::vector<int64_t> sizes{1000000, 10000000, 100000000};
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--sizes") {
      sizes.clear();
      std::stringstream in(argv[i + 1]);
      std::string item;
      while (std::getline(in, item, ',')) sizes.push_back(std::stoll(item));
    } else if (flag == "--threads") threads = std::stoi(argv[i + 1]);
    else if (flag == "--runs") runs = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: sampler_bench [--sizes N,N,...] [--threads T] [--runs R]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  bench::print_machine("sampler_bench (G = 20, B = 256 groups, drop short and uniform groups)");
  std::printf("%12s %22s %24s %22s %14s %14s\n", "rows", "rectrain_cpu_rows_per_s", "rectrain_tensor_ops_rows_per_s",
              "sort_based_rows_per_s", "cpu_bytes_per_row", "groups");
  for (const int64_t n : sizes) {
    const Data d = make_data(n, 1);
    const auto options = rectrain::GroupSamplerOptions(20).batch_size(256).seed(7);
    rectrain::GroupSampler cpu(d.users, d.targets, options);
    int64_t epoch = 0;
    const double cpu_s = bench::median_seconds(runs, [&] { rectrain_epoch(cpu, epoch++); });
    rectrain::GroupSampler ops(d.users, d.targets, rectrain::GroupSamplerOptions(options).backend(
                                                       rectrain::SamplerBackend::TensorOps));
    const double ops_s = bench::median_seconds(n > 20000000 ? 1 : runs, [&] { rectrain_epoch(ops, epoch++); });
    const double sort_s = bench::median_seconds(n > 20000000 ? 1 : runs, [&] { sort_based_epoch(d, 20, 256, epoch++); });
    std::printf("%12lld %22.3g %24.3g %22.3g %14.2f %14lld\n", static_cast<long long>(n), n / cpu_s, n / ops_s,
                n / sort_s, static_cast<double>(cpu.state_bytes()) / static_cast<double>(n),
                static_cast<long long>(cpu.num_groups()));
    std::fflush(stdout);
  }
  return 0;
}
