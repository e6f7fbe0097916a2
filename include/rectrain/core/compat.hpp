#pragma once
// Every difference between the LibTorch versions rectrain supports (1.13
// from Debian through 2.x) is bridged here and nowhere else (the unpickler's,
// which needs the JIT's headers, in compat_unpickle.hpp).

#include <torch/version.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#define RECTRAIN_TORCH_AT_LEAST(major, minor)                                  \
  (TORCH_VERSION_MAJOR > (major) ||                                            \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace rectrain {
namespace compat {

// LibTorch's APIs (torch::data samplers among them) take c10::optional up
// to 2.3 and std::optional from 2.4, when c10's became an alias of it.
#if RECTRAIN_TORCH_AT_LEAST(2, 4)
template <typename T>
using optional = std::optional<T>;
inline constexpr std::nullopt_t nullopt = std::nullopt;
#else
template <typename T>
using optional = c10::optional<T>;
inline constexpr c10::nullopt_t nullopt = c10::nullopt;
#endif

/// Runs the ops of its scope under autocast to `dtype` (bf16 or fp16) on
/// `device`'s kind (CPU or CUDA), restoring the previous state on exit.
/// Autocast switches moved from per-device functions to ones taking a
/// DeviceType in LibTorch 2.4.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, at::ScalarType dtype) : type_(device.type()) {
    if (type_ != at::kCPU && type_ != at::kCUDA)
      throw std::invalid_argument("AutocastGuard: autocast needs a CPU or CUDA device");
    was_enabled_ = enabled();
    was_dtype_ = get_dtype();
    set(true, dtype);
    at::autocast::increment_nesting();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  ~AutocastGuard() {
    // The cast weights cached for the scope are dropped when the outermost
    // autocast region ends, as torch.autocast does.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(was_enabled_, was_dtype_);
  }

 private:
#if RECTRAIN_TORCH_AT_LEAST(2, 4)
  bool enabled() const { return at::autocast::is_autocast_enabled(type_); }
  at::ScalarType get_dtype() const { return at::autocast::get_autocast_dtype(type_); }
  void set(bool on, at::ScalarType dtype) {
    at::autocast::set_autocast_dtype(type_, dtype);
    at::autocast::set_autocast_enabled(type_, on);
  }
#else
  bool enabled() const { return type_ == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled(); }
  at::ScalarType get_dtype() const {
    return type_ == at::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
  }
  void set(bool on, at::ScalarType dtype) {
    if (type_ == at::kCPU) {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(on);
    } else {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(on);
    }
  }
#endif
  at::DeviceType type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

/// fn() run under autocast to `dtype` on `device` when `dtype` is set, as
/// it is otherwise.
template <typename F>
auto with_autocast(torch::Device device, const optional<at::ScalarType>& dtype, F&& fn) {
  std::optional<AutocastGuard> guard;
  if (dtype) guard.emplace(device, *dtype);
  return fn();
}

/// A generator of `device`'s kind seeded with `seed`, independent of the
/// global default generator (so sampling never disturbs user RNG streams).
inline at::Generator make_generator(torch::Device device, uint64_t seed) {
  // A new CPU generator, not a clone: LibTorch 1.13's Generator::clone()
  // leaks the copy (one reference too many; LeakSanitizer reports it).
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  at::Generator gen;
  {
    at::Generator base = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(base.mutex());
    gen = base.clone();
  }
  gen.set_current_seed(seed);
  return gen;
}

/// Drops the gradients of `optimizer`'s parameters (undefined, as LibTorch
/// 2.x's zero_grad() does by default; 1.13's zeroes them in place). A zeroed
/// sparse gradient is not free: the next backward adds the new one to it,
/// which copies its values (23 ms a step for the recipe's tables at 20,480
/// rows), where an undefined one takes the new gradient as it is.
inline void zero_grad(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) p.mutable_grad().reset();
}

} // namespace compat
} // namespace rectrain
