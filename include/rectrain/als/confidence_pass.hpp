#pragma once
// The inner loop of the CPU ALS solver's conjugate gradient, for every ISA
// (see core/cpu_isa.hpp): over a chunk of a row's nonzeros, whose rows y_q
// of the fixed factors lie contiguous,
//     acc += Σ_q s_q y_q,   s_q = c_q − (c_q − 1) y_qᵀv   (the residual pass)
//                       or s_q = (c_q − 1) y_qᵀv          (the CG steps).
// Two sweeps over the chunk, which the caller sizes to stay in L1: the dot
// products four rows at a time (each load of v serves four rows, eight
// independent chains of multiply-adds), then the update a block of eight
// vectors of acc at a time, held in registers across the rows (one load per
// multiply-add). A single sweep that keeps each row in registers between
// its dot product and its update needs v, acc and the row in registers:
// at f = 128 on AVX2 that is 48 registers of 16, and it spilled.

#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/simd.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

namespace rectrain {
namespace detail {

/// One pass over `len` contiguous rows of f values (see above).
template <class T>
using ConfidencePass = void (*)(const T* rows, int64_t len, int64_t f, const float* c, bool residual, const T* v,
                                T* acc);

#if RECTRAIN_VECTOR_KERNELS

/// acc[0 .. C·lanes) += Σ_q s[q] rows[q·f + 0 .. C·lanes).
template <class T, int Bytes, int C>
RECTRAIN_ALWAYS_INLINE void confidence_update_block(const T* rows, int64_t count, int64_t f, const T* s, T* acc) {
  using V = Vec<T, Bytes>;
  constexpr int64_t L = lanes<T, Bytes>;
  V a[C];
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) load(a[j], acc + j * L);
  for (int64_t q = 0; q < count; ++q) {
    const T* r = rows + q * f;
    const T sq = s[q];
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      V w;
      load(w, r + j * L);
      a[j] += w * sq;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < C; ++j) store(acc + j * L, a[j]);
}

/// Dot products y_qᵀv of R consecutive rows (R ≤ 4), two chains per row.
template <class T, int Bytes, int R>
RECTRAIN_ALWAYS_INLINE void confidence_dots(const T* rows, int64_t f, const T* v, T* out) {
  using V = Vec<T, Bytes>;
  constexpr int64_t L = lanes<T, Bytes>;
  const int64_t n = f / L;
  V even[R], odd[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) even[r] = odd[r] = V{};
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) {
    V x, y;
    load(x, v + k * L);
    load(y, v + (k + 1) * L);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      V w;
      load(w, rows + r * f + k * L);
      even[r] += w * x;
      load(w, rows + r * f + (k + 1) * L);
      odd[r] += w * y;
    }
  }
  if (k < n) {
    V x;
    load(x, v + k * L);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      V w;
      load(w, rows + r * f + k * L);
      even[r] += w * x;
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    even[r] += odd[r];
    out[r] = horizontal_sum<T, Bytes>(even[r]);
  }
}

template <class T, int Bytes>
RECTRAIN_ALWAYS_INLINE void confidence_pass_body(const T* rows, int64_t len, int64_t f, const float* c, bool residual,
                                                 const T* v, T* acc) {
  constexpr int64_t L = lanes<T, Bytes>;
  constexpr int64_t kPiece = 64;
  const int64_t n = f / L;
  T s[kPiece];
  for (int64_t start = 0; start < len; start += kPiece) {
    const int64_t count = std::min(kPiece, len - start);
    const T* base = rows + start * f;
    int64_t q = 0;
    for (; q + 4 <= count; q += 4) confidence_dots<T, Bytes, 4>(base + q * f, f, v, s + q);
    for (; q < count; ++q) confidence_dots<T, Bytes, 1>(base + q * f, f, v, s + q);
    for (q = 0; q < count; ++q) {
      const T cq = static_cast<T>(c[start + q]);
      s[q] = residual ? cq - (cq - 1) * s[q] : (cq - 1) * s[q];
    }
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) confidence_update_block<T, Bytes, 8>(base + k * L, count, f, s, acc + k * L);
    if (k + 4 <= n) {
      confidence_update_block<T, Bytes, 4>(base + k * L, count, f, s, acc + k * L);
      k += 4;
    }
    if (k + 2 <= n) {
      confidence_update_block<T, Bytes, 2>(base + k * L, count, f, s, acc + k * L);
      k += 2;
    }
    if (k < n) confidence_update_block<T, Bytes, 1>(base + k * L, count, f, s, acc + k * L);
  }
}

// One entry point per ISA, the same body in each.
template <class T>
void confidence_pass_generic(const T* rows, int64_t len, int64_t f, const float* c, bool residual, const T* v,
                             T* acc) {
  confidence_pass_body<T, 16>(rows, len, f, c, residual, v, acc);
}
#if RECTRAIN_X86_DISPATCH
template <class T>
RECTRAIN_TARGET_AVX2 void confidence_pass_avx2(const T* rows, int64_t len, int64_t f, const float* c, bool residual,
                                               const T* v, T* acc) {
  confidence_pass_body<T, 32>(rows, len, f, c, residual, v, acc);
}
template <class T>
RECTRAIN_TARGET_AVX512 void confidence_pass_avx512(const T* rows, int64_t len, int64_t f, const float* c,
                                                   bool residual, const T* v, T* acc) {
  confidence_pass_body<T, 64>(rows, len, f, c, residual, v, acc);
}
#endif

/// The widest level up to `isa` whose vectors divide a row of f values,
/// as an int (a CpuIsa); -1 when none does (the solver then uses Eigen's
/// GEMVs).
template <class T>
int confidence_pass_level(int64_t f, CpuIsa isa) {
  for (int level = static_cast<int>(isa); level >= 0; --level)
    if (f > 0 && f % (cpu_isa_vector_bytes(static_cast<CpuIsa>(level)) / int64_t{sizeof(T)}) == 0) return level;
  return -1;
}

/// The pass for f on confidence_pass_level(f, isa); nullptr for -1.
template <class T>
ConfidencePass<T> confidence_pass_for(int64_t f, CpuIsa isa) {
  const int level = confidence_pass_level<T>(f, isa);
  if (level < 0) return nullptr;
  return RECTRAIN_KERNEL_FOR(static_cast<CpuIsa>(level), &confidence_pass_generic<T>, &confidence_pass_avx2<T>,
                             &confidence_pass_avx512<T>);
}

#else

template <class T>
ConfidencePass<T> confidence_pass_for(int64_t, CpuIsa) {
  return nullptr;
}
template <class T>
int confidence_pass_level(int64_t, CpuIsa) {
  return -1;
}

#endif

} // namespace detail

/// The CPU level whose kernel runs implicit ALS's weighted conjugate-gradient
/// pass for `factors`-wide float32 factors on this CPU (the widest the CPU
/// has whose vectors divide a row), or "none" where none fits and Eigen's
/// GEMVs run instead. For benchmarks that report what they measured.
inline std::string als_confidence_pass_kernel(int64_t factors) {
  const int level = detail::confidence_pass_level<float>(factors, cpu_isa());
  return level < 0 ? "none" : cpu_isa_name(static_cast<CpuIsa>(level));
}

} // namespace rectrain
