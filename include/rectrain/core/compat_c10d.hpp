#pragma once
// The differences between LibTorch versions in c10d (rectrain/dist), apart
// from compat.hpp because they need c10d's headers.

#include <rectrain/core/compat.hpp>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace rectrain {
namespace compat {

// The collectives moved from ProcessGroup to Backend in LibTorch 2.0; the
// backends (ProcessGroupGloo, ProcessGroupNCCL) derive from that class.
#if RECTRAIN_TORCH_AT_LEAST(2, 0)
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif
using C10dWork = c10::intrusive_ptr<c10d::Work>;

/// Whether `options` ask for TCPStore's libuv server, the default from
/// LibTorch 2.4 (the field exists from 2.2): a LibTorch built without
/// libuv (Debian's 2.6) refuses it.
template <typename Options>
auto uses_libuv(const Options& options, int) -> decltype(static_cast<bool>(options.useLibUV)) {
  return options.useLibUV;
}
template <typename Options>
bool uses_libuv(const Options&, long) {
  return false;
}

/// Turns the libuv server off where the options have the switch.
template <typename Options>
auto without_libuv(Options& options, int) -> decltype(options.useLibUV = false, void()) {
  options.useLibUV = false;
}
template <typename Options>
void without_libuv(Options&, long) {}

} // namespace compat
} // namespace rectrain
