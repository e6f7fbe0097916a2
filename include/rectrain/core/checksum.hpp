#pragma once
// Checksums of file records and content fingerprints of tensors.
//
// crc32: the zip format's CRC-32 (reflected polynomial 0xEDB88320), which
// torch.save and LibTorch's writers store for every record of an archive
// but LibTorch never verifies on load. It detects every change of up to 32
// consecutive bits, so any one damaged byte. On x86-64 CPUs with PCLMULQDQ
// (every one since 2010) it folds 64 bytes per step with carry-less
// multiplies, chosen at run time whatever the build's -march; elsewhere
// slice-by-16 tables.
//
// fingerprint: a 64-bit content hash (XXH64 over fixed chunks, so the
// value does not depend on the thread count) of a tensor's type, shape and
// bytes, for telling "the same data" from "other data of the same size".

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RECTRAIN_HAVE_CLMUL_CRC 1
#include <immintrin.h>
#endif

namespace rectrain {
namespace detail {

inline constexpr uint32_t kCrc32Polynomial = 0xEDB88320u;

/// A little-endian 32- or 64-bit word at p, any alignment.
template <typename Word>
inline Word read_le(const unsigned char* p) noexcept {
  static_assert(sizeof(Word) == 4 || sizeof(Word) == 8, "read_le reads 32- or 64-bit words");
  Word v;
  std::memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if constexpr (sizeof(Word) == 8) v = __builtin_bswap64(v);
  else v = __builtin_bswap32(v);
#endif
  return v;
}

/// Slice-by-16 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
inline const std::array<std::array<uint32_t, 256>, 16>& crc32_tables() {
  static const auto tables = [] {
    std::array<std::array<uint32_t, 256>, 16> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? kCrc32Polynomial ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (size_t k = 1; k < 16; ++k)
      for (size_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    return t;
  }();
  return tables;
}

/// The CRC register (already inverted) advanced over [p, p + n).
inline uint32_t crc32_tables_update(uint32_t state, const unsigned char* p, size_t n) noexcept {
  const auto& t = crc32_tables();
  while (n >= 16) {
    uint64_t lo = read_le<uint64_t>(p) ^ state;
    const uint64_t hi = read_le<uint64_t>(p + 8);
    state = t[15][lo & 0xff] ^ t[14][(lo >> 8) & 0xff] ^ t[13][(lo >> 16) & 0xff] ^ t[12][(lo >> 24) & 0xff] ^
            t[11][(lo >> 32) & 0xff] ^ t[10][(lo >> 40) & 0xff] ^ t[9][(lo >> 48) & 0xff] ^ t[8][lo >> 56] ^
            t[7][hi & 0xff] ^ t[6][(hi >> 8) & 0xff] ^ t[5][(hi >> 16) & 0xff] ^ t[4][(hi >> 24) & 0xff] ^
            t[3][(hi >> 32) & 0xff] ^ t[2][(hi >> 40) & 0xff] ^ t[1][(hi >> 48) & 0xff] ^ t[0][hi >> 56];
    p += 16;
    n -= 16;
  }
  while (n--) state = (state >> 8) ^ t[0][(state ^ *p++) & 0xff];
  return state;
}

#ifdef RECTRAIN_HAVE_CLMUL_CRC
#define RECTRAIN_CLMUL_TARGET __attribute__((target("pclmul,sse4.1")))

/// x's two 64-bit halves carry-less multiplied by k's, plus `next`: one
/// 128-bit fold step.
RECTRAIN_CLMUL_TARGET inline __m128i crc32_fold(__m128i x, __m128i k, __m128i next) noexcept {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x11), _mm_clmulepi64_si128(x, k, 0x00)), next);
}

RECTRAIN_CLMUL_TARGET inline __m128i crc32_load(const unsigned char* at) noexcept {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
}

/// The CRC register advanced over n bytes (n >= 64, a multiple of 16) by
/// folding four 128-bit lanes with carry-less multiplies, then a Barrett
/// reduction (Gopal et al., "Fast CRC Computation for Generic Polynomials
/// Using PCLMULQDQ", Intel 2009; the constants of its bit-reflected form).
RECTRAIN_CLMUL_TARGET inline uint32_t crc32_clmul_update(uint32_t state, const unsigned char* p, size_t n) noexcept {
  const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
  const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
  const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124LL);
  const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
  __m128i x1 = _mm_xor_si128(crc32_load(p), _mm_cvtsi32_si128(static_cast<int>(state)));
  __m128i x2 = crc32_load(p + 16), x3 = crc32_load(p + 32), x4 = crc32_load(p + 48);
  p += 64;
  n -= 64;
  while (n >= 64) {
    x1 = crc32_fold(x1, k1k2, crc32_load(p));
    x2 = crc32_fold(x2, k1k2, crc32_load(p + 16));
    x3 = crc32_fold(x3, k1k2, crc32_load(p + 32));
    x4 = crc32_fold(x4, k1k2, crc32_load(p + 48));
    p += 64;
    n -= 64;
  }
  x1 = crc32_fold(x1, k3k4, x2);
  x1 = crc32_fold(x1, k3k4, x3);
  x1 = crc32_fold(x1, k3k4, x4);
  while (n >= 16) {
    x1 = crc32_fold(x1, k3k4, crc32_load(p));
    p += 16;
    n -= 16;
  }
  // 128 -> 64 bits.
  const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k3k4, 0x10));
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5, 0x00), _mm_srli_si128(x1, 4));
  // Barrett reduction to 32 bits.
  __m128i t = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
  t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), poly, 0x00);
  return static_cast<uint32_t>(_mm_extract_epi32(_mm_xor_si128(x1, t), 1));
}
#undef RECTRAIN_CLMUL_TARGET

inline bool cpu_has_clmul() noexcept {
  static const bool has = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return has;
}
#endif

/// a * b modulo the CRC polynomial, both in the reflected bit order.
inline uint32_t crc32_multiply(uint32_t a, uint32_t b) noexcept {
  if (a == 0) return 0;
  uint32_t m = 1u << 31, product = 0;
  for (;;) {
    if (a & m) {
      product ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kCrc32Polynomial : b >> 1;
  }
  return product;
}

/// x^(8 * bytes) modulo the CRC polynomial: what appending `bytes` zero
/// bytes multiplies a CRC register by.
inline uint32_t crc32_shift(uint64_t bytes) noexcept {
  static const auto powers = [] {  // x^(2^k) for k = 0..63
    std::array<uint32_t, 64> p{};
    p[0] = 1u << 30;  // x^1
    for (size_t k = 1; k < p.size(); ++k) p[k] = crc32_multiply(p[k - 1], p[k - 1]);
    return p;
  }();
  uint32_t result = 1u << 31;  // x^0
  uint64_t bits = bytes;
  for (size_t k = 3; bits != 0; bits >>= 1, ++k)  // 8 * bytes = bytes << 3
    if (bits & 1) result = crc32_multiply(powers[k & 63], result);
  return result;
}

} // namespace detail

/// The CRC-32 of the bytes before and [data, data + size), given `crc`,
/// the CRC-32 of the bytes before (0 for none).
inline uint32_t crc32_update(uint32_t crc, const void* data, size_t size) noexcept {
  auto p = static_cast<const unsigned char*>(data);
  uint32_t state = ~crc;
#ifdef RECTRAIN_HAVE_CLMUL_CRC
  if (size >= 64 && detail::cpu_has_clmul()) {
    const size_t folded = size & ~size_t{15};
    state = detail::crc32_clmul_update(state, p, folded);
    p += folded;
    size -= folded;
  }
#endif
  return ~detail::crc32_tables_update(state, p, size);
}

/// The CRC-32 of [data, data + size), as zip archives store it.
inline uint32_t crc32(const void* data, size_t size) noexcept { return crc32_update(0, data, size); }

/// The CRC-32 of A followed by B, from crc32(A), crc32(B) and B's length.
inline uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b) noexcept {
  return detail::crc32_multiply(detail::crc32_shift(size_b), crc_a) ^ crc_b;
}

/// crc32 over at::parallel_for's threads (fixed 4 MiB chunks, combined in
/// order): for records of hundreds of megabytes.
inline uint32_t crc32_parallel(const void* data, size_t size) {
  constexpr size_t chunk = size_t{4} << 20;
  if (size <= 2 * chunk) return crc32(data, size);
  const auto* p = static_cast<const unsigned char*>(data);
  const int64_t chunks = static_cast<int64_t>((size + chunk - 1) / chunk);
  std::vector<uint32_t> parts(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const size_t offset = static_cast<size_t>(k) * chunk;
      parts[static_cast<size_t>(k)] = crc32(p + offset, std::min(chunk, size - offset));
    }
  });
  uint32_t crc = parts[0];
  for (int64_t k = 1; k < chunks; ++k) {
    const size_t offset = static_cast<size_t>(k) * chunk;
    crc = crc32_combine(crc, parts[static_cast<size_t>(k)], std::min(chunk, size - offset));
  }
  return crc;
}

namespace detail {

inline uint64_t rotl64(uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }

/// XXH64 (Collet's xxHash, 64-bit variant) of [data, data + size).
inline uint64_t xxh64(const void* data, size_t size, uint64_t seed = 0) noexcept {
  constexpr uint64_t P1 = 11400714785074694791ULL, P2 = 14029467366897019727ULL, P3 = 1609587929392839161ULL,
                     P4 = 9650029242287828579ULL, P5 = 2870177450012600261ULL;
  auto round = [](uint64_t acc, uint64_t input) { return rotl64(acc + input * P2, 31) * P1; };
  auto merge = [&](uint64_t acc, uint64_t v) { return (acc ^ round(0, v)) * P1 + P4; };
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* end = p + size;
  uint64_t h;
  if (size >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    for (; end - p >= 32; p += 32) {
      v1 = round(v1, read_le<uint64_t>(p));
      v2 = round(v2, read_le<uint64_t>(p + 8));
      v3 = round(v3, read_le<uint64_t>(p + 16));
      v4 = round(v4, read_le<uint64_t>(p + 24));
    }
    h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    h = merge(merge(merge(merge(h, v1), v2), v3), v4);
  } else {
    h = seed + P5;
  }
  h += static_cast<uint64_t>(size);
  for (; end - p >= 8; p += 8) h = rotl64(h ^ round(0, read_le<uint64_t>(p)), 27) * P1 + P4;
  if (end - p >= 4) {
    h = rotl64(h ^ (static_cast<uint64_t>(read_le<uint32_t>(p)) * P1), 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; ++p) h = rotl64(h ^ (static_cast<uint64_t>(*p) * P5), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

} // namespace detail

/// A 64-bit fingerprint of a tensor's dtype, shape and contents (CPU or
/// CUDA; non-contiguous tensors are read in their logical order). Equal
/// tensors always agree; any change of the bytes changes it but for a
/// chance of 2^-64. Computed in fixed 4 MiB chunks over at::parallel_for,
/// so the value is the same for every thread count.
inline uint64_t fingerprint(const torch::Tensor& tensor) {
  if (!tensor.defined()) return detail::xxh64("undefined", 9);
  const auto t = tensor.device().is_cpu() ? tensor.contiguous() : tensor.to(torch::kCPU).contiguous();
  std::vector<uint64_t> header{static_cast<uint64_t>(t.scalar_type()), static_cast<uint64_t>(t.dim())};
  for (const auto s : t.sizes()) header.push_back(static_cast<uint64_t>(s));
  const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
  const size_t size = t.nbytes();
  constexpr size_t chunk = size_t{4} << 20;
  const int64_t chunks = static_cast<int64_t>((size + chunk - 1) / chunk);
  std::vector<uint64_t> parts(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const size_t offset = static_cast<size_t>(k) * chunk;
      parts[static_cast<size_t>(k)] = detail::xxh64(bytes + offset, std::min(chunk, size - offset), static_cast<uint64_t>(k));
    }
  });
  header.insert(header.end(), parts.begin(), parts.end());
  return detail::xxh64(header.data(), header.size() * sizeof(uint64_t));
}

/// A fingerprint as 16 hex digits.
inline std::string fingerprint_hex(uint64_t value) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[static_cast<size_t>(i)] = digits[value & 15];
  return out;
}

} // namespace rectrain
