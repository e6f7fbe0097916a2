#pragma once
// What every benchmark prints first: the machine it ran on.

#include <rectrain/core/cpu_isa.hpp>

#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace bench {

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

/// The vector extensions a figure depends on, as /proc/cpuinfo names them.
inline std::string cpu_isa() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::string out;
    for (const char* flag : {"sse4_2", "pclmulqdq", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"})
      if ((" " + line + " ").find(std::string(" ") + flag + " ") != std::string::npos) out += (out.empty() ? "" : " ") + std::string(flag);
    return out.empty() ? "baseline x86-64" : out;
  }
  return "unknown ISA";
}

/// The compiler and the vector ISA it was allowed to use: a figure from a
/// -march=native build does not hold for a build with default flags.
inline std::string built_for() {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  const char* isa = "AVX-512 + BF16";
#elif defined(__AVX512F__)
  const char* isa = "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
  const char* isa = "AVX2 + FMA";
#elif defined(__AVX2__)
  const char* isa = "AVX2";
#elif defined(__AVX__)
  const char* isa = "AVX";
#elif defined(__x86_64__)
  const char* isa = "x86-64 baseline (SSE2)";
#elif defined(__aarch64__)
  const char* isa = "AArch64";
#else
  const char* isa = "the compiler's default";
#endif
#if defined(__clang__)
  const std::string compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  const std::string compiler = std::string("GCC ") + __VERSION__;
#else
  const std::string compiler = "an unknown compiler";
#endif
  return compiler + ", code for " + isa;
}

inline void print_machine(const char* name) {
  std::printf("# %s\n# machine: %s (%s), %u hardware threads, LibTorch %d.%d, %d intra-op threads\n", name,
              cpu_model().c_str(), cpu_isa().c_str(), std::thread::hardware_concurrency(), TORCH_VERSION_MAJOR,
              TORCH_VERSION_MINOR, at::get_num_threads());
  std::printf("# built with %s\n", built_for().c_str());
  // What rectrain's own kernels run on: chosen at run time, whatever the
  // build's flags (RECTRAIN_CPU_ISA overrides it).
  const char* forced = std::getenv("RECTRAIN_CPU_ISA");
  std::printf("# rectrain kernels dispatched to %s (%s; widest on this CPU %s; native bf16 %s)\n",
              rectrain::cpu_isa_name(rectrain::cpu_isa()),
              forced && *forced ? (std::string("RECTRAIN_CPU_ISA=") + forced).c_str() : "chosen at run time",
              rectrain::cpu_isa_name(rectrain::best_cpu_isa()), rectrain::cpu_has_native_bf16() ? "yes" : "no");
  if (torch::cuda::is_available()) std::printf("# cuda: %d device(s)\n", static_cast<int>(torch::cuda::device_count()));
}

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Median of `runs` timings of f() in seconds.
template <typename F>
double median_seconds(int runs, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < runs; ++r) {
    const double t0 = now_seconds();
    f();
    t.push_back(now_seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

} // namespace bench
