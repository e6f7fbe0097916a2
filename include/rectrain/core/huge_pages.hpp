#pragma once
// Large CPU tensors that are read at random (factor matrices gathered row
// by row) backed by transparent huge pages where the kernel offers them on
// request (THP "madvise" mode, the usual default): one TLB entry then
// covers 2 MiB instead of 4 KiB, and random row gathers stop missing the
// TLB. A hint only: without THP the tensor is an ordinary one.

#include <torch/torch.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rectrain {
namespace detail {

/// torch::empty on CPU, with the pages of its storage advised as huge
/// before anything touches them (allocations this large come straight from
/// mmap, untouched).
inline torch::Tensor empty_huge_pages(at::IntArrayRef sizes, const torch::TensorOptions& options) {
  auto t = torch::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (t.device().is_cpu() && t.nbytes() >= 2 * kHuge) {
    const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
    if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint: ignore failure
  }
#endif
  return t;
}

} // namespace detail
} // namespace rectrain
