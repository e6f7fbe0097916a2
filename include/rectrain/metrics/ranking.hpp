#pragma once
// Ranking metrics. GAUC is exactly DATA_FORMAT.md's: per user, the share of
// candidate pairs with different targets that the scores order correctly,
// a score tie counting 1/2; users whose targets hold one value are skipped;
// the unweighted mean over users. O(n log n) per user.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace rectrain {

struct GroupMetric {
  double value = std::numeric_limits<double>::quiet_NaN();  ///< NaN when no user counts
  int64_t users = 0;  ///< users that count (for GAUC: two or more distinct targets)
};

namespace detail {

/// The mean of the values that are not NaN (users whose metric is
/// defined), and how many there are.
inline GroupMetric mean_of_defined(const std::vector<double>& per_user) {
  GroupMetric result;
  double sum = 0;
  for (const double v : per_user)
    if (!std::isnan(v)) {
      sum += v;
      ++result.users;
    }
  if (result.users > 0) result.value = sum / static_cast<double>(result.users);
  return result;
}

inline torch::Tensor metric_input(const torch::Tensor& t, const char* name, int64_t n) {
  if (!t.defined() || t.dim() != 1 || (n >= 0 && t.size(0) != n))
    throw TensorError(concat(name, ": expected a 1-D tensor", n >= 0 ? concat(" of ", n, " entries") : "",
                             ", got ", shape_of(t)));
  auto out = t.to(torch::kCPU, torch::kFloat64).contiguous();
  if (n != 0 && !torch::isfinite(out).all().item<bool>()) {
    const int64_t at = torch::isfinite(out).logical_not().nonzero()[0][0].item<int64_t>();
    throw TensorError(concat(name, ": NaN or infinite value at position ", at));
  }
  return out;
}

/// Twice the number of correctly ordered pairs (ties count 1 here, i.e.
/// 1/2 after halving) and the number of pairs with different targets, over
/// the entries idx[0..n) of score/target. `idx` is reordered.
inline std::pair<double, double> concordance(const double* score, const double* target,
                                             int64_t* idx, int64_t n) {
  if (n < 2) return {0.0, 0.0};
  std::vector<double> levels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) levels[static_cast<size_t>(i)] = target[idx[i]];
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  const int64_t m = static_cast<int64_t>(levels.size());
  if (m < 2) return {0.0, 0.0};
  auto rank = [&](int64_t row) {
    return std::lower_bound(levels.begin(), levels.end(), target[row]) - levels.begin();
  };
  std::sort(idx, idx + n, [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  std::vector<int64_t> tree(static_cast<size_t>(m + 1), 0);  // Fenwick, counts per rank
  std::vector<int64_t> total(static_cast<size_t>(m), 0);
  std::vector<int64_t> block;
  double correct2 = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && score[idx[j]] == score[idx[i]]) ++j;
    block.clear();
    for (int64_t k = i; k < j; ++k) {
      const int64_t r = rank(idx[k]);
      block.push_back(r);
      int64_t below = 0;  // earlier (lower score) entries with a lower target
      for (int64_t p = r; p > 0; p -= p & -p) below += tree[static_cast<size_t>(p)];
      correct2 += 2.0 * static_cast<double>(below);
    }
    // Tied scores: each pair with different targets is half right.
    std::sort(block.begin(), block.end());
    double same = 0;
    for (size_t a = 0; a < block.size();) {
      size_t b = a;
      while (b < block.size() && block[b] == block[a]) ++b;
      same += static_cast<double>((b - a) * (b - a));
      a = b;
    }
    const double size = static_cast<double>(block.size());
    correct2 += (size * size - same) / 2.0;
    for (int64_t r : block) {
      ++total[static_cast<size_t>(r)];
      for (int64_t p = r + 1; p <= m; p += p & -p) ++tree[static_cast<size_t>(p)];
    }
    i = j;
  }
  double same = 0;
  for (int64_t c : total) same += static_cast<double>(c) * static_cast<double>(c);
  const double pairs = (static_cast<double>(n) * static_cast<double>(n) - same) / 2.0;
  return {correct2, pairs};
}

/// Row indices grouped by user: (order, group bounds), users in ascending
/// id order, rows of a user in input order.
inline std::pair<std::vector<int64_t>, std::vector<int64_t>> group_rows(const torch::Tensor& users) {
  const auto u = users.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* p = u.data_ptr<int64_t>();
  const int64_t n = u.numel();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] < p[b]; });
  std::vector<int64_t> bounds{0};
  for (int64_t i = 1; i <= n; ++i)
    if (i == n || p[order[static_cast<size_t>(i)]] != p[order[static_cast<size_t>(i - 1)]])
      bounds.push_back(i);
  if (n == 0) bounds.assign(1, 0);
  return {std::move(order), std::move(bounds)};
}

} // namespace detail

/// Graded ROC-AUC (concordance) of one list; NaN when the targets hold
/// fewer than two distinct values.
inline double auc(const torch::Tensor& scores, const torch::Tensor& targets) {
  const auto s = detail::metric_input(scores, "auc scores", -1);
  const auto t = detail::metric_input(targets, "auc targets", s.size(0));
  std::vector<int64_t> idx(static_cast<size_t>(s.size(0)));
  std::iota(idx.begin(), idx.end(), 0);
  const auto [correct2, pairs] = detail::concordance(s.data_ptr<double>(), t.data_ptr<double>(),
                                                     idx.data(), s.size(0));
  return pairs > 0 ? correct2 / (2.0 * pairs) : std::numeric_limits<double>::quiet_NaN();
}

/// Each user's AUC, the terms of GAUC: `users` the distinct user ids in
/// ascending order ([U] int64), `values` their AUCs (NaN for a user whose
/// targets hold one value). What a paired comparison of two scorings
/// resamples (metrics/paired_bootstrap.hpp).
struct PerUserMetric {
  torch::Tensor users;
  std::vector<double> values;
  /// The mean over the users whose value is defined: for gauc_per_user, gauc().
  GroupMetric mean() const { return detail::mean_of_defined(values); }
};

/// gauc()'s per-user terms; gauc() is their mean over the defined ones.
inline PerUserMetric gauc_per_user(const torch::Tensor& users, const torch::Tensor& targets,
                                   const torch::Tensor& scores) {
  const auto s = detail::metric_input(scores, "gauc scores", -1);
  const auto t = detail::metric_input(targets, "gauc targets", s.size(0));
  if (!users.defined() || users.dim() != 1 || users.size(0) != s.size(0))
    throw TensorError(detail::concat("gauc users: expected a 1-D tensor of ", s.size(0), " entries"));
  // Named members, not a structured binding: C++17 lambdas may not capture one.
  auto grouped = detail::group_rows(users);
  std::vector<int64_t>& order = grouped.first;
  const std::vector<int64_t>& bounds = grouped.second;
  const int64_t groups = static_cast<int64_t>(bounds.size()) - 1;
  PerUserMetric out;
  out.values.assign(static_cast<size_t>(std::max<int64_t>(groups, 0)), std::numeric_limits<double>::quiet_NaN());
  out.users = torch::empty({std::max<int64_t>(groups, 0)}, torch::kInt64);
  const auto ids = users.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* ip = ids.data_ptr<int64_t>();
  int64_t* up = out.users.data_ptr<int64_t>();
  for (int64_t g = 0; g < groups; ++g) up[g] = ip[order[static_cast<size_t>(bounds[static_cast<size_t>(g)])]];
  const double* sp = s.data_ptr<double>();
  const double* tp = t.data_ptr<double>();
  double* vp = out.values.data();
  at::parallel_for(0, groups, 256, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t lo = bounds[static_cast<size_t>(g)], hi = bounds[static_cast<size_t>(g + 1)];
      const auto [correct2, pairs] = detail::concordance(sp, tp, order.data() + lo, hi - lo);
      if (pairs > 0) vp[g] = correct2 / (2.0 * pairs);
    }
  });
  return out;
}

/// GAUC over users (see the header comment). Tensors are 1-D and equally
/// long, on any device; users may be raw ids or dense indices.
inline GroupMetric gauc(const torch::Tensor& users, const torch::Tensor& targets,
                       const torch::Tensor& scores) {
  return gauc_per_user(users, targets, scores).mean();
}

/// The users gauc() would count: those with two different targets (a
/// validation or candidate set where this is 0 has no GAUC, whatever the
/// scores).
inline int64_t gauc_users(const torch::Tensor& users, const torch::Tensor& targets) {
  return gauc(users, targets, torch::zeros({users.numel()}, torch::kFloat32)).users;
}

namespace detail {

/// Tie-aware NDCG@k over entries idx[0..n) of score/relevance (validated
/// by the caller); `idx` is reordered. NaN when every relevance is 0.
inline double ndcg_of(const double* sp, const double* rp, int64_t* idx, int64_t n, int64_t k) {
  std::sort(idx, idx + n, [&](int64_t a, int64_t b) { return sp[a] > sp[b]; });
  auto discount = [](int64_t pos) { return 1.0 / std::log2(static_cast<double>(pos) + 2.0); };
  double dcg = 0;
  for (int64_t i = 0; i < n && i < k;) {
    int64_t j = i;
    double gain = 0;
    while (j < n && sp[idx[j]] == sp[idx[i]]) gain += std::exp2(rp[idx[j++]]) - 1.0;
    gain /= static_cast<double>(j - i);
    for (int64_t p = i; p < j && p < k; ++p) dcg += gain * discount(p);
    i = j;
  }
  std::vector<double> ideal(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ideal[static_cast<size_t>(i)] = rp[idx[i]];
  std::sort(ideal.begin(), ideal.end(), std::greater<double>());
  double idcg = 0;
  for (int64_t p = 0; p < n && p < k; ++p) idcg += (std::exp2(ideal[static_cast<size_t>(p)]) - 1.0) * discount(p);
  return idcg > 0 ? dcg / idcg : std::numeric_limits<double>::quiet_NaN();
}

inline torch::Tensor relevance_input(const torch::Tensor& relevance, int64_t n) {
  auto r = metric_input(relevance, "ndcg relevance", n);
  if (n > 0 && r.min().item<double>() < 0)
    throw TensorError("ndcg relevance: values must be >= 0 (shift graded targets first)");
  return r;
}

} // namespace detail

/// NDCG@k of one list with gains 2^relevance - 1 (relevance >= 0). Tied
/// scores share their positions' discounts evenly (tie-aware DCG), so the
/// value does not depend on how ties happen to be ordered. NaN when every
/// relevance is 0.
inline double ndcg_at_k(const torch::Tensor& scores, const torch::Tensor& relevance, int64_t k) {
  if (k < 1) throw Error(detail::concat("ndcg_at_k: k must be >= 1, got ", k));
  const auto s = detail::metric_input(scores, "ndcg scores", -1);
  const auto r = detail::relevance_input(relevance, s.size(0));
  std::vector<int64_t> idx(static_cast<size_t>(s.size(0)));
  std::iota(idx.begin(), idx.end(), 0);
  return detail::ndcg_of(s.data_ptr<double>(), r.data_ptr<double>(), idx.data(), s.size(0), k);
}

/// Mean NDCG@k over users whose lists hold a positive relevance.
inline GroupMetric group_ndcg_at_k(const torch::Tensor& users, const torch::Tensor& relevance,
                                   const torch::Tensor& scores, int64_t k) {
  if (k < 1) throw Error(detail::concat("group_ndcg_at_k: k must be >= 1, got ", k));
  const auto s = detail::metric_input(scores, "ndcg scores", -1);
  const auto r = detail::relevance_input(relevance, s.size(0));
  auto [order, bounds] = detail::group_rows(users);
  std::vector<double> per_user(bounds.size() - 1);
  for (size_t g = 0; g + 1 < bounds.size(); ++g)
    per_user[g] = detail::ndcg_of(s.data_ptr<double>(), r.data_ptr<double>(), order.data() + bounds[g],
                                  bounds[g + 1] - bounds[g], k);
  return detail::mean_of_defined(per_user);
}

} // namespace rectrain
