#pragma once
// A small, fast, seedable RNG for hot loops (LibTorch's generators cost a
// virtual call and a lock per draw). Streams are derived from (seed, keys...)
// so parallel work is deterministic whatever the thread count.

#include <cstdint>

namespace rectrain {
namespace detail {

inline constexpr uint64_t splitmix64(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Mixes a seed with any number of stream keys (epoch, user, ...).
inline constexpr uint64_t stream_seed(uint64_t seed) noexcept {
  return splitmix64(seed);
}
template <typename... Keys>
inline constexpr uint64_t stream_seed(uint64_t seed, uint64_t key,
                                      Keys... keys) noexcept {
  return stream_seed(splitmix64(seed ^ splitmix64(key + 0x632be59bd9b4e019ULL)),
                     keys...);
}

/// wyrand: one multiply per draw, passes BigCrush; plenty for shuffling.
class FastRng {
 public:
  explicit FastRng(uint64_t seed) noexcept : state_(seed) {}

  uint64_t next() noexcept {
    state_ += 0xa0761d6478bd642fULL;
    const __uint128_t m =
        static_cast<__uint128_t>(state_) * (state_ ^ 0xe7037ed1a0b428dbULL);
    return static_cast<uint64_t>(m >> 64) ^ static_cast<uint64_t>(m);
  }

  /// Uniform integer in [0, bound), Lemire's multiply-shift (bias < 2^-32
  /// for the bounds rectrain uses; no division in the hot path).
  uint32_t below(uint32_t bound) noexcept {
    return static_cast<uint32_t>(
        (static_cast<uint64_t>(static_cast<uint32_t>(next())) * bound) >> 32);
  }

  /// Uniform double in [0, 1).
  double uniform() noexcept {
    return static_cast<double>(next() >> 11) * 0x1.0p-53;
  }

  /// Standard normal (Box-Muller; one value per call, the second dropped for
  /// simplicity: not a hot path).
  double normal() noexcept;

 private:
  uint64_t state_;
};

} // namespace detail

/// The RNG and stream seeds rectrain's samplers and initialisers draw from,
/// for code that must reproduce their draws (or wants a fast seedable RNG).
using detail::FastRng;
using detail::stream_seed;

} // namespace rectrain

#include <cmath>

inline double rectrain::detail::FastRng::normal() noexcept {
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
