#pragma once
// The vocabulary of rectrain's hand-vectorised kernels: GCC/Clang vector
// extensions of a width given as a template argument, so that one kernel
// body serves every ISA of cpu_isa.hpp (16-byte vectors for the baseline,
// 32 for AVX2, 64 for AVX-512). A body is a RECTRAIN_ALWAYS_INLINE template
// over the width, called from one entry point per ISA that carries the
// `target` attribute; inlined there, its vector operations compile to that
// ISA's instructions.
//
// Vectors travel by reference only: passed or returned by value, a 32- or
// 64-byte vector has a different ABI with and without AVX, which GCC and
// Clang warn about (-Wpsabi) even for calls that are inlined.

#include <rectrain/core/cpu_isa.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>

#if RECTRAIN_X86_DISPATCH
#include <xmmintrin.h>
#endif

#if RECTRAIN_VECTOR_KERNELS

namespace rectrain {
namespace detail {

template <class T, int Bytes>
struct VectorOf {
  typedef T type __attribute__((vector_size(Bytes)));
};
/// Bytes / sizeof(T) lanes of T.
template <class T, int Bytes>
using Vec = typename VectorOf<T, Bytes>::type;

template <class T, int Bytes>
constexpr int64_t lanes = Bytes / static_cast<int64_t>(sizeof(T));

/// out = the vector at p (any alignment).
template <class V, class T>
RECTRAIN_ALWAYS_INLINE void load(V& out, const T* p) {
  std::memcpy(&out, p, sizeof(V));
}

/// The vector at p (any alignment) = v.
template <class V, class T>
RECTRAIN_ALWAYS_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

/// The sum of v's lanes as a tree (halving the vector), not lane by lane:
/// the compiler does not reassociate a float reduction, and a serial chain
/// of 8 or 16 adds would dominate a short row's cost.
template <class T, int Bytes>
RECTRAIN_ALWAYS_INLINE T horizontal_sum(const Vec<T, Bytes>& v) {
  if constexpr (Bytes == static_cast<int>(2 * sizeof(T))) {
    return v[0] + v[1];
  } else if constexpr (Bytes == static_cast<int>(4 * sizeof(T))) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    Vec<T, Bytes / 2> low, high;
    std::memcpy(&low, &v, Bytes / 2);
    std::memcpy(&high, reinterpret_cast<const char*>(&v) + Bytes / 2, Bytes / 2);
    low += high;
    return horizontal_sum<T, Bytes / 2>(low);
  }
}

/// √ of each lane. A plain loop over std::sqrt stays scalar unless the
/// program is built with -fno-math-errno, and AVX's wider square roots
/// cannot be inlined into a body compiled for the baseline: SSE's four-lane
/// one, once per 16 bytes (in an AVX entry point, its VEX form).
template <int Bytes>
RECTRAIN_ALWAYS_INLINE void sqrt_lanes(Vec<float, Bytes>& v) {
#if RECTRAIN_X86_DISPATCH
  if constexpr (Bytes == 16) {
    __m128 whole;
    std::memcpy(&whole, &v, 16);
    whole = _mm_sqrt_ps(whole);
    std::memcpy(&v, &whole, 16);
  } else {
    // Lane by lane into and out of the 16-byte parts (register extracts
    // and inserts): through memory, a wide load of narrow stores stalls
    // store forwarding, which made the AVX2 pass 1.5x slower than the
    // baseline one.
    for (int i = 0; i < Bytes / 16; ++i) {
      __m128 part = _mm_set_ps(v[4 * i + 3], v[4 * i + 2], v[4 * i + 1], v[4 * i]);
      part = _mm_sqrt_ps(part);
      for (int l = 0; l < 4; ++l) v[4 * i + l] = part[l];
    }
  }
#else
  for (int i = 0; i < Bytes / 4; ++i) v[i] = std::sqrt(v[i]);
#endif
}

} // namespace detail
} // namespace rectrain

#endif
