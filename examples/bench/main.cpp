// One executable for the seven benchmarks, compiled as one translation unit:
// they use much of the same library code, which is then compiled once
// (GCC 12 -O3, Zen 3: 142 s, against 304 s for five of them one by one).
// `csv_bench ARGS` (a link to this program, made by the build) or
// `rectrain-bench csv_bench ARGS` runs one.

#include "programs.hpp"

#include <cstdio>
#include <string>

namespace {

struct Program {
  const char* name;
  int (*run)(int, char**);
};

constexpr Program kPrograms[] = {
    {"csv_bench", csv_bench_main},           {"sampler_bench", sampler_bench_main},
    {"pipeline_bench", pipeline_bench_main}, {"als_bench", als_bench_main},
    {"model_bench", model_bench_main},       {"dist_bench", dist_bench_main},
    {"retrieval_bench", retrieval_bench_main},
};

} // namespace

int main(int argc, char** argv) {
  std::string self = argv[0];
  self = self.substr(self.find_last_of('/') + 1);
  for (const Program& p : kPrograms)
    if (self == p.name) return p.run(argc, argv);
  if (argc > 1)
    for (const Program& p : kPrograms)
      if (std::string(argv[1]) == p.name) return p.run(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: rectrain-bench PROGRAM [ARGS]   (or PROGRAM [ARGS] through its link)\nprograms:");
  for (const Program& p : kPrograms) std::fprintf(stderr, " %s", p.name);
  std::fprintf(stderr, "\n");
  return 2;
}
