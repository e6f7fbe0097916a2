#pragma once
// Inverted dropout whose CPU mask is cheap. LibTorch's CPU dropout draws
// its Bernoulli mask one element at a time on one thread (bernoulli_ has a
// parallel path only with MKL), which at the recipe's widths cost as much
// as the layer's matrix product. Here the mask is a counter-based hash of
// (seed, element index), computed in parallel; the seed is drawn from the
// default CPU generator, so torch::manual_seed and a saved generator state
// reproduce it, and the mask does not depend on the thread count. On other
// devices this is torch::dropout.
//
//   x = rectrain::dropout(x, 0.1, is_training());

#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/error.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>
#include <limits>

namespace rectrain {

namespace detail {

/// Chris Wellons' lowbias32: a 32-bit bijective mix (multiplies that
/// vectorise, unlike 64-bit ones on x86-64's baseline).
RECTRAIN_ALWAYS_INLINE uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/// The dropout hash of element `index` under `seed`: two rounds, so that
/// neighbouring indices and neighbouring seeds give unrelated values.
inline uint32_t dropout_hash(uint64_t seed, int64_t index) {
  const auto i = static_cast<uint64_t>(index);
  return lowbias32(lowbias32(static_cast<uint32_t>(i) ^ static_cast<uint32_t>(seed)) ^ static_cast<uint32_t>(i >> 32) ^
                   static_cast<uint32_t>(seed >> 32));
}

/// keep · 2^32 (keep < 1): element i is kept when dropout_hash(seed, i) <
/// this (1 - p is the keep probability, to 2^-32).
inline uint32_t keep_threshold(double keep) { return static_cast<uint32_t>(keep * 4294967296.0); }

/// emit(j, kept) for the elements begin + j, j in [0, count): the same
/// decisions as dropout_hash, in a loop of 32-bit lanes the compiler
/// vectorises (the index's high half is hoisted out of it).
template <typename Emit>
RECTRAIN_ALWAYS_INLINE void for_each_kept(uint64_t seed, int64_t begin, int64_t count, uint32_t threshold, Emit&& emit) {
  if (count <= 0) return;
  if ((begin >> 32) != ((begin + count - 1) >> 32)) {  // crosses a multiple of 2^32: rare, element by element
    for (int64_t j = 0; j < count; ++j) emit(j, dropout_hash(seed, begin + j) < threshold);
    return;
  }
  const auto low = static_cast<uint32_t>(begin), seed_low = static_cast<uint32_t>(seed);
  const uint32_t high = static_cast<uint32_t>(static_cast<uint64_t>(begin) >> 32) ^ static_cast<uint32_t>(seed >> 32);
  for (int64_t j = 0; j < count; ++j)
    emit(j, lowbias32(lowbias32((low + static_cast<uint32_t>(j)) ^ seed_low) ^ high) < threshold);
}

/// A seed for one dropout call, drawn from the default CPU generator so
/// that torch::manual_seed and a saved generator state reproduce the mask.
inline uint64_t draw_dropout_seed() {
  return static_cast<uint64_t>(
      torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::TensorOptions().dtype(torch::kInt64))
          .item<int64_t>());
}

/// out[j] = scale where element begin + j is kept, else 0, j in [0, count).
template <typename T>
RECTRAIN_ALWAYS_INLINE void keep_mask_body(T* out, uint64_t seed, int64_t begin, int64_t count, uint32_t threshold,
                                           T scale) {
  const T zero = static_cast<T>(0);
  // By value: through references, every store might alias them (no
  // vectorising).
  for_each_kept(seed, begin, count, threshold, [out, scale, zero](int64_t j, bool kept) { out[j] = kept ? scale : zero; });
}

// One entry point per ISA (cpu_isa.hpp): the hash's 32-bit multiplies are
// one instruction per lane group from SSE4.1 on, emulated on baseline x86-64.
template <typename T>
using KeepMaskKernel = void (*)(T*, uint64_t, int64_t, int64_t, uint32_t, T);
template <typename T>
void keep_mask_generic(T* out, uint64_t seed, int64_t begin, int64_t count, uint32_t threshold, T scale) {
  keep_mask_body(out, seed, begin, count, threshold, scale);
}
#if RECTRAIN_X86_DISPATCH
template <typename T>
RECTRAIN_TARGET_AVX2 void keep_mask_avx2(T* out, uint64_t seed, int64_t begin, int64_t count, uint32_t threshold,
                                         T scale) {
  keep_mask_body(out, seed, begin, count, threshold, scale);
}
template <typename T>
RECTRAIN_TARGET_AVX512 void keep_mask_avx512(T* out, uint64_t seed, int64_t begin, int64_t count, uint32_t threshold,
                                             T scale) {
  keep_mask_body(out, seed, begin, count, threshold, scale);
}
#endif
template <typename T>
KeepMaskKernel<T> keep_mask_for(CpuIsa isa) {
  return RECTRAIN_KERNEL_FOR(isa, &keep_mask_generic<T>, &keep_mask_avx2<T>, &keep_mask_avx512<T>);
}

/// [sizes] of T: 1 / keep where element i is kept, else 0.
template <typename T>
torch::Tensor hashed_keep_mask(torch::IntArrayRef sizes, double keep, uint64_t seed) {
  torch::Tensor mask = torch::empty(sizes, torch::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  T* m = mask.data_ptr<T>();
  const uint32_t threshold = keep_threshold(keep);
  const T scale = static_cast<T>(1.0 / keep);
  const KeepMaskKernel<T> kernel = keep_mask_for<T>(cpu_isa());
  at::parallel_for(0, mask.numel(), 16384, [&](int64_t begin, int64_t end) {
    kernel(m + begin, seed, begin, end - begin, threshold, scale);
  });
  return mask;
}

} // namespace detail

/// Zeroes each element of `input` with probability `p` and scales the rest
/// by 1 / (1 - p) when `training`; returns `input` itself otherwise.
inline torch::Tensor dropout(const torch::Tensor& input, double p, bool training) {
  if (!(p >= 0 && p < 1)) throw Error(detail::concat("dropout: p must be in [0, 1), got ", p));
  if (!training || p == 0) return input;
  if (!input.device().is_cpu()) return torch::dropout(input, p, training);
  const uint64_t seed = detail::draw_dropout_seed();
  torch::Tensor mask;
  switch (input.scalar_type()) {
    case torch::kFloat: mask = detail::hashed_keep_mask<float>(input.sizes(), 1 - p, seed); break;
    case torch::kDouble: mask = detail::hashed_keep_mask<double>(input.sizes(), 1 - p, seed); break;
    case torch::kBFloat16: mask = detail::hashed_keep_mask<c10::BFloat16>(input.sizes(), 1 - p, seed); break;
    default: return torch::dropout(input, p, training);
  }
  return input * mask;
}

} // namespace rectrain
