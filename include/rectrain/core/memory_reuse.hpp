#pragma once
// Keeping freed CPU memory for reuse. glibc serves every allocation above
// its mmap threshold (at most 32 MiB by default) with fresh pages from the
// kernel and unmaps them on free, so a training step whose activations and
// gradients are tens of megabytes page-faults all of them in again, every
// step: at 20,480-row batches that was a fifth of the recipe's step, and
// half of the dense-gradient step (the tables' gradients are hundreds of
// megabytes). Raising the threshold serves those blocks from the heap,
// where freed ones are reused. LibTorch's CPU allocator is plain malloc
// (its caching allocator is for mobile builds only), so this is the knob.
//
// A process-wide setting, so rectrain never makes it on its own: a
// training program calls it, best after loading data and other one-off
// large allocations (they stay mapped and are returned on free, as before).
//
//   rectrain::reuse_freed_memory();  // before the training loop

#include <torch/torch.h>

#include <algorithm>
#include <cstddef>
#include <limits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// Sanitizers that bring their own allocator ignore mallopt.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RECTRAIN_DETAIL_OWN_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(hwaddress_sanitizer)
#define RECTRAIN_DETAIL_OWN_ALLOCATOR 1
#endif
#endif
#ifndef RECTRAIN_DETAIL_OWN_ALLOCATOR
#define RECTRAIN_DETAIL_OWN_ALLOCATOR 0
#endif

namespace rectrain {

struct MemoryReuseOptions {
  /// Blocks up to this size come from the heap and are reused after free.
  TORCH_ARG(size_t, max_block_bytes) = size_t{1} << 30;
  /// Free memory at the top of the heap kept for reuse instead of being
  /// returned to the kernel.
  TORCH_ARG(size_t, keep_bytes) = size_t{1} << 30;
};

/// Applies `options` to the C library's allocator; returns false where it
/// has no such settings (not glibc, or a sanitizer's allocator in its
/// place), or refused them.
inline bool reuse_freed_memory(const MemoryReuseOptions& options = {}) {
#if defined(__GLIBC__) && !RECTRAIN_DETAIL_OWN_ALLOCATOR
  // mallopt takes an int: larger sizes are clamped to its range.
  auto as_int = [](size_t bytes) {
    return static_cast<int>(std::min<size_t>(bytes, static_cast<size_t>(std::numeric_limits<int>::max())));
  };
  const bool mmap_ok = ::mallopt(M_MMAP_THRESHOLD, as_int(options.max_block_bytes())) == 1;
  const bool trim_ok = ::mallopt(M_TRIM_THRESHOLD, as_int(options.keep_bytes())) == 1;
  return mmap_ok && trim_ok;
#else
  (void)options;
  return false;
#endif
}

} // namespace rectrain
