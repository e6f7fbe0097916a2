#pragma once
// Every difference between the LibTorch versions rectrain supports (1.13
// from Debian through 2.x) is bridged here and nowhere else.

#include <torch/version.h>
#include <torch/torch.h>

#define RECTRAIN_TORCH_AT_LEAST(major, minor)                                  \
  (TORCH_VERSION_MAJOR > (major) ||                                            \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace rectrain {
namespace compat {

// torch::data samplers take c10::optional; from 2.4 on it is std::optional
// under the same name, so this alias serves both.
template <typename T>
using optional = c10::optional<T>;
inline constexpr auto nullopt = c10::nullopt;

/// A generator of `device`'s kind seeded with `seed`, independent of the
/// global default generator (so sampling never disturbs user RNG streams).
inline at::Generator make_generator(torch::Device device, uint64_t seed) {
  at::Generator gen;
  {
    at::Generator base = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(base.mutex());
    gen = base.clone();
  }
  gen.set_current_seed(seed);
  return gen;
}

} // namespace compat
} // namespace rectrain
