#pragma once
// Whether one scoring beats another on the same candidates, or the
// difference is what another choice of users would undo. GAUC is a mean
// over users, so its noise is the users': a paired bootstrap draws the
// users with replacement many times, takes the mean of each drawn user's
// difference (a − b) and reports the percentile interval of those means.
// At a few hundred users, as in the small evaluation sets, an interval of
// ±0.007 is common: seeds, flags and float rounding all move a GAUC by
// less than that.
//
//   const auto d = paired_gauc_difference(users, targets, new_scores, old_scores);
//   // d.difference, [d.low, d.high] at 95%, d.share_above: resamples where new > old
//
// Deterministic: each resample draws from its own stream of `seed`, so the
// result does not depend on the thread count.

#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace rectrain {

struct PairedBootstrapOptions {
  /// Draws of the users.
  TORCH_ARG(int64_t, resamples) = 10000;
  /// Coverage of the percentile interval, in (0, 1).
  TORCH_ARG(double, confidence) = 0.95;
  TORCH_ARG(uint64_t, seed) = 0;
};

struct PairedDifference {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  /// Mean over the users of a − b (for GAUC: GAUC(a) − GAUC(b)).
  double difference = kNaN;
  /// The percentile interval of the resampled means.
  double low = kNaN, high = kNaN;
  /// Share of resamples whose mean is above 0 (ties at 0 count half).
  double share_above = kNaN;
  /// Users compared: those defined in both.
  int64_t users = 0;
};

/// Paired bootstrap of per-user values `a` and `b` (the same users in the
/// same order; NaN where a user's value is undefined, skipped when either
/// is). No user in common gives NaN figures and users = 0.
inline PairedDifference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                         const PairedBootstrapOptions& options = {}) {
  if (a.size() != b.size())
    throw Error(detail::concat("paired_bootstrap: the two scorings have ", a.size(), " and ", b.size(),
                               " users; a paired comparison needs the same users"));
  if (options.resamples() < 1)
    throw Error(detail::concat("paired_bootstrap: resamples must be >= 1, got ", options.resamples()));
  if (!(options.confidence() > 0 && options.confidence() < 1))
    throw Error(detail::concat("paired_bootstrap: confidence must be in (0, 1), got ", options.confidence()));
  std::vector<double> d;
  d.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (!std::isnan(a[i]) && !std::isnan(b[i])) d.push_back(a[i] - b[i]);
  PairedDifference out;
  out.users = static_cast<int64_t>(d.size());
  if (d.empty()) return out;
  if (d.size() > std::numeric_limits<uint32_t>::max())
    throw Error(detail::concat("paired_bootstrap: at most 2^32 - 1 users, got ", d.size()));
  double sum = 0;
  for (double x : d) sum += x;
  const auto n = static_cast<uint32_t>(d.size());
  out.difference = sum / n;
  std::vector<double> means(static_cast<size_t>(options.resamples()));
  at::parallel_for(0, options.resamples(), 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      FastRng rng(stream_seed(options.seed(), static_cast<uint64_t>(r)));
      double s = 0;
      for (uint32_t k = 0; k < n; ++k) s += d[rng.below(n)];
      means[static_cast<size_t>(r)] = s / n;
    }
  });
  double above = 0;
  for (double m : means) above += m > 0 ? 1.0 : (m == 0 ? 0.5 : 0.0);
  out.share_above = above / static_cast<double>(means.size());
  std::sort(means.begin(), means.end());
  // Linear interpolation between order statistics (numpy's default).
  const auto quantile = [&](double q) {
    const double at = q * static_cast<double>(means.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(at));
    const size_t hi = std::min(lo + 1, means.size() - 1);
    return means[lo] + (means[hi] - means[lo]) * (at - static_cast<double>(lo));
  };
  const double tail = (1 - options.confidence()) / 2;
  out.low = quantile(tail);
  out.high = quantile(1 - tail);
  return out;
}

/// GAUC(scores_a) − GAUC(scores_b) on the same candidates, with its paired
/// bootstrap over the users (see the header comment).
inline PairedDifference paired_gauc_difference(const torch::Tensor& users, const torch::Tensor& targets,
                                               const torch::Tensor& scores_a, const torch::Tensor& scores_b,
                                               const PairedBootstrapOptions& options = {}) {
  return paired_bootstrap(gauc_per_user(users, targets, scores_a).values,
                          gauc_per_user(users, targets, scores_b).values, options);
}

} // namespace rectrain
