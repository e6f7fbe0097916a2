#pragma once
// A device named on a command line ("cpu", "cuda", "cuda:1"), checked
// against what this LibTorch build and machine have.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace rectrain {

/// `name` as a device rectrain runs on (the CPU, or a CUDA device this
/// machine has); an Error naming `what` (the flag) otherwise.
inline torch::Device parse_device(const std::string& name, const std::string& what = "device") {
  compat::optional<torch::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
  }
  if (!device || (!device->is_cpu() && !device->is_cuda()))
    throw Error(what + ": '" + name + "' is not a device rectrain runs on; use cpu, cuda or cuda:N");
  if (device->is_cuda()) {
    if (!torch::cuda::is_available())
      throw Error(what + " " + name +
                  ": this LibTorch has no CUDA support or sees no GPU (torch::cuda::is_available() is false); use "
                  "cpu, or a CUDA build of LibTorch");
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (device->has_index() && device->index() >= count)
      throw Error(detail::concat(what, " ", name, ": this machine has ", count, " CUDA device(s), numbered from 0"));
  }
  return *device;
}

} // namespace rectrain
