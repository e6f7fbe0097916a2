// The add_subdirectory consumer: the packaging under test is the CMake one
// (rectrain's targets, and those it found, seen from a parent project), so
// one header and one metric do; the find_package consumer (main.cpp) uses
// the whole API and pays for compiling it.
#include <rectrain/core/version.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <cstdio>

int main() {
  const auto users = torch::tensor({1, 1, 1, 2, 2}, torch::kLong);
  const auto targets = torch::tensor({2.0, 1.0, 0.0, 1.0, 0.0});
  const auto scores = torch::tensor({0.9, 0.5, 0.1, 0.2, 0.8});
  const auto metric = rectrain::gauc(users, targets, scores);
  std::printf("consumer ok: rectrain %s, GAUC %.4f over %lld users\n", rectrain::version_string, metric.value,
              static_cast<long long>(metric.users));
  return metric.users == 2 ? 0 : 1;
}
