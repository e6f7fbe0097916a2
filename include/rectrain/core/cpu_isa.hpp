#pragma once
// Which vector instruction set rectrain's CPU kernels run on, chosen at run
// time. Each hand-vectorised kernel (the ALS solver's CG pass, the fused
// ReLU/LayerNorm/dropout block, the dropout mask, SparseAdam's pass, the
// history's most-similar search) is one source compiled three times in the
// same binary: for baseline x86-64 (SSE2), for AVX2 + FMA and for AVX-512,
// through GCC/Clang `target` attributes. A program built with default flags
// so gets the widest path the CPU it runs on has; -march=native is an
// option, not a requirement. On other architectures, and with other
// compilers, only the portable path exists.
//
//   rectrain::cpu_isa()                  // what the kernels use now
//   rectrain::set_cpu_isa(CpuIsa::Avx2)  // or RECTRAIN_CPU_ISA=avx2 in the
//                                        // environment; a level the CPU
//                                        // lacks is refused
//   rectrain::cpu_has_native_bf16()      // AVX512-BF16 or AMX-BF16
//
// The level is resolved once, on first use, from RECTRAIN_CPU_ISA
// (generic|avx2|avx512) or else the CPU; set_cpu_isa changes it for the
// whole process (tests and benchmarks use it to run every level).

#include <rectrain/core/error.hpp>

#include <atomic>
#include <cstdlib>
#include <string>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RECTRAIN_X86_DISPATCH 1
#include <cpuid.h>
// The ISA lists, not an `arch=`: GCC inlines a function into one with a
// superset of its ISA flags, but not across different -march values.
#define RECTRAIN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define RECTRAIN_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
/// The entry point of a kernel for `isa`, from its three: a macro, so
/// that elsewhere the AVX ones need not exist.
#define RECTRAIN_KERNEL_FOR(isa, generic, avx2, avx512) \
  ((isa) == ::rectrain::CpuIsa::Avx512 ? (avx512) : (isa) == ::rectrain::CpuIsa::Avx2 ? (avx2) : (generic))
#else
#define RECTRAIN_X86_DISPATCH 0
#define RECTRAIN_KERNEL_FOR(isa, generic, avx2, avx512) ((void)(isa), (generic))
#endif

#if defined(__GNUC__) || defined(__clang__)
/// GCC/Clang vector extensions are available: the kernels' one source.
#define RECTRAIN_VECTOR_KERNELS 1
/// Kernel bodies are inlined into each ISA's entry point, so they are
/// compiled for that entry point's target (a call would run them as
/// baseline code, and pass vectors in the baseline ABI).
#define RECTRAIN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define RECTRAIN_VECTOR_KERNELS 0
#define RECTRAIN_ALWAYS_INLINE inline
#endif

namespace rectrain {

/// The levels the kernels are compiled for, narrowest first.
enum class CpuIsa {
  Generic = 0,  ///< baseline x86-64 (SSE2), or the portable path elsewhere
  Avx2 = 1,     ///< AVX2 + FMA (Haswell, Zen 1 and later)
  Avx512 = 2,   ///< AVX-512 F, VL, BW, DQ (Skylake-X, Ice Lake, Zen 4 and later)
};

/// "generic", "avx2" or "avx512": the names RECTRAIN_CPU_ISA takes.
inline const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
    default: return "generic";
  }
}

/// The vector width, in bytes, of `isa`'s kernels.
constexpr int cpu_isa_vector_bytes(CpuIsa isa) { return isa == CpuIsa::Avx512 ? 64 : isa == CpuIsa::Avx2 ? 32 : 16; }

/// What the CPU, and the operating system (for the AVX register state),
/// support.
struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;       ///< F, VL, BW and DQ
  bool avx512_bf16 = false;  ///< AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4)
  bool amx_bf16 = false;     ///< AMX-BF16 tiles (Sapphire Rapids)
};

namespace detail {

inline CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if RECTRAIN_X86_DISPATCH
  // __builtin_cpu_supports checks the OS's XSAVE state too (an AVX-512 CPU
  // under an OS or hypervisor that does not save zmm registers reports none).
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  // AMX: CPUID.(7,0):EDX bit 22, and the OS enabling the tile state (XCR0
  // bits 17 and 18). Clang 14's __builtin_cpu_supports has no name for it.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 22))) {
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 27))) {  // OSXSAVE: xgetbv is allowed
      __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
      f.amx_bf16 = (xcr0_lo & (3u << 17)) == (3u << 17);
    }
  }
#endif
  return f;
}

inline CpuIsa best_isa_of(const CpuFeatures& f) {
  return f.avx512 ? CpuIsa::Avx512 : f.avx2_fma ? CpuIsa::Avx2 : CpuIsa::Generic;
}

/// The level from RECTRAIN_CPU_ISA, or the CPU's best when it is unset.
inline CpuIsa initial_cpu_isa();

/// -1 until first use; then the CpuIsa the kernels dispatch to.
inline std::atomic<int> selected_cpu_isa{-1};

} // namespace detail

/// The CPU's features, detected once.
inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detail::detect_cpu_features();
  return features;
}

/// The widest level this CPU runs.
inline CpuIsa best_cpu_isa() { return detail::best_isa_of(cpu_features()); }

/// Whether this CPU (and this build: x86-64 with GCC or Clang) runs `isa`.
inline bool cpu_supports(CpuIsa isa) {
  return static_cast<int>(isa) <= static_cast<int>(best_cpu_isa()) &&
         (isa == CpuIsa::Generic || RECTRAIN_X86_DISPATCH);
}

/// Whether bf16 arithmetic is native here: AVX512-BF16 or AMX-BF16. Without
/// it, LibTorch's CPU bf16 kernels convert every element to fp32 and back,
/// which is slower than fp32 throughout.
inline bool cpu_has_native_bf16() { return cpu_features().avx512_bf16 || cpu_features().amx_bf16; }

/// "generic" | "avx2" | "avx512" as a CpuIsa; anything else is an Error
/// naming `what` (the variable or option the text came from).
inline CpuIsa parse_cpu_isa(const std::string& text, const std::string& what = "CPU ISA") {
  if (text == "generic") return CpuIsa::Generic;
  if (text == "avx2") return CpuIsa::Avx2;
  if (text == "avx512") return CpuIsa::Avx512;
  throw Error(detail::concat(what, ": \"", text, "\" is not a level; use generic, avx2 or avx512"));
}

namespace detail {
/// An Error naming `what` when this CPU lacks `isa`.
inline void check_cpu_supports(CpuIsa isa, const std::string& what) {
  if (!cpu_supports(isa))
    throw Error(concat(what, ": this CPU (or build) does not support it; the widest here is ",
                       cpu_isa_name(best_cpu_isa())));
}
} // namespace detail

/// Makes `isa` the level every kernel dispatches to from now on, process
/// wide. A level this CPU lacks is an Error (it would die of an illegal
/// instruction).
inline void set_cpu_isa(CpuIsa isa) {
  detail::check_cpu_supports(isa, detail::concat("CPU ISA ", cpu_isa_name(isa)));
  detail::selected_cpu_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// The level the kernels dispatch to: set_cpu_isa's, else RECTRAIN_CPU_ISA's,
/// else the CPU's widest.
inline CpuIsa cpu_isa() {
  int isa = detail::selected_cpu_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    // Two threads may both get here: they compute the same value.
    const CpuIsa initial = detail::initial_cpu_isa();
    int expected = -1;
    detail::selected_cpu_isa.compare_exchange_strong(expected, static_cast<int>(initial), std::memory_order_relaxed);
    isa = detail::selected_cpu_isa.load(std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(isa);
}

/// Sets a level for a scope and restores the previous one (tests).
class CpuIsaGuard {
 public:
  explicit CpuIsaGuard(CpuIsa isa) : previous_(cpu_isa()) { set_cpu_isa(isa); }
  CpuIsaGuard(const CpuIsaGuard&) = delete;
  CpuIsaGuard& operator=(const CpuIsaGuard&) = delete;
  ~CpuIsaGuard() { detail::selected_cpu_isa.store(static_cast<int>(previous_), std::memory_order_relaxed); }

 private:
  CpuIsa previous_;
};

namespace detail {

inline CpuIsa initial_cpu_isa() {
  const char* env = std::getenv("RECTRAIN_CPU_ISA");
  if (env == nullptr || *env == '\0') return best_cpu_isa();
  const CpuIsa isa = parse_cpu_isa(env, "RECTRAIN_CPU_ISA");
  check_cpu_supports(isa, concat("RECTRAIN_CPU_ISA=", env));
  return isa;
}

} // namespace detail

} // namespace rectrain
