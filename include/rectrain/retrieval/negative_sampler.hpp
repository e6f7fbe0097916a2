#pragma once
// Negative samplers for retrieval training: for each (user, positive item)
// row of a batch, items the user has no positive with.
//
// - StaticNegativeSampler draws from a fixed distribution over the catalogue:
//   uniform, or popularity^β (uniform_negatives, popularity_negatives). A
//   draw that hits one of the user's positives is redrawn, so a user's
//   negatives follow the distribution restricted to the items they have not
//   interacted with; after `max_tries` misses the draw is made exactly over
//   that complement (users who have most of the catalogue).
// - InBatchNegatives: the batch's other positives, with the log-Q
//   correction of Yi et al. (RecSys 2019): an item shows up in a batch with
//   probability ∝ its count among the positives.
// - DynamicNegativeSampler (Zhang et al., SIGIR 2013): a pool drawn by a
//   static sampler, scored by the current model, the highest-scoring kept.
// - The augmented sampler (ANS, Zhao et al., RecSys 2023) needs the pool's
//   vectors and learned gates: augmented_negative.hpp.
//
// Draws are CPU work, one random stream per (seed, step, row): the same
// items for any thread count and any device the model is on.

#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/retrieval/interactions.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace rectrain {

/// Negatives for a batch of B rows: k per row.
struct NegativeSample {
  torch::Tensor items;  ///< [B, k] int64 item indices (CPU)
  /// [B, k] float32: log of the probability the sampler proposes each item
  /// with (the log-Q correction's term); undefined when it has none.
  torch::Tensor log_q;
  /// [B, k] bool, false where an entry must be ignored (in-batch: the
  /// user's own positives); undefined when every entry counts.
  torch::Tensor valid;
};

struct StaticNegativeSamplerOptions {
  /// Redraws of a draw that hit a positive before the exact fallback.
  TORCH_ARG(int64_t, max_tries) = 64;
  TORCH_ARG(uint64_t, seed) = 0;
};

namespace detail {

/// Vose's alias table: O(1) draws from a discrete distribution.
class AliasTable {
 public:
  AliasTable() = default;
  explicit AliasTable(const std::vector<double>& weights) {
    const int64_t n = static_cast<int64_t>(weights.size());
    double total = 0;
    for (double w : weights) total += w;
    probability_.assign(static_cast<size_t>(n), 0.0);
    alias_.assign(static_cast<size_t>(n), 0);
    std::vector<double> scaled(static_cast<size_t>(n));
    std::vector<int32_t> small, large;
    for (int64_t i = 0; i < n; ++i) {
      scaled[static_cast<size_t>(i)] = weights[static_cast<size_t>(i)] * static_cast<double>(n) / total;
      (scaled[static_cast<size_t>(i)] < 1.0 ? small : large).push_back(static_cast<int32_t>(i));
    }
    while (!small.empty() && !large.empty()) {
      const int32_t s = small.back(), l = large.back();
      small.pop_back();
      probability_[static_cast<size_t>(s)] = scaled[static_cast<size_t>(s)];
      alias_[static_cast<size_t>(s)] = l;
      scaled[static_cast<size_t>(l)] -= 1.0 - scaled[static_cast<size_t>(s)];
      if (scaled[static_cast<size_t>(l)] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    for (int32_t i : large) probability_[static_cast<size_t>(i)] = 1.0;
    for (int32_t i : small) probability_[static_cast<size_t>(i)] = 1.0;  // rounding leftovers
  }

  int64_t draw(FastRng& rng) const noexcept {
    const uint32_t column = rng.below(static_cast<uint32_t>(probability_.size()));
    return rng.uniform() < probability_[column] ? column : alias_[column];
  }

 private:
  std::vector<double> probability_;
  std::vector<int32_t> alias_;
};

inline void check_users(const torch::Tensor& users, int64_t num_users, const char* who) {
  if (!users.defined() || users.dim() != 1 || users.scalar_type() != torch::kInt64)
    throw TensorError(concat(who, ": users must be a 1-D int64 tensor, got ", type_and_shape_of(users)));
  if (users.numel() > 0) {
    const auto cpu = users.cpu();
    const int64_t lo = cpu.min().item<int64_t>(), hi = cpu.max().item<int64_t>();
    if (lo < 0 || hi >= num_users)
      throw TensorError(concat(who, ": user index ", lo < 0 ? lo : hi, " out of [0, ", num_users, ")"));
  }
}

} // namespace detail

/// Draws from a fixed distribution over the catalogue (weights ∝ `item_weights`,
/// uniform when undefined), each user's positives excluded.
class StaticNegativeSampler {
 public:
  StaticNegativeSampler(CsrMatrix positives, torch::Tensor item_weights = {},
                        StaticNegativeSamplerOptions options = {})
      : positives_(std::move(positives)), options_(options) {
    detail::check_csr_shape(positives_, "StaticNegativeSampler positives");
    if (options_.max_tries() < 1)
      throw Error(detail::concat("StaticNegativeSampler: max_tries must be >= 1, got ", options_.max_tries()));
    const int64_t n = positives_.cols;
    if (n <= 0) throw Error("StaticNegativeSampler: the catalogue has no items");
    if (item_weights.defined()) {
      if (item_weights.dim() != 1 || item_weights.numel() != n)
        throw TensorError(detail::concat("StaticNegativeSampler item_weights: expected [", n, "], got ",
                                         detail::shape_of(item_weights)));
      const auto w = item_weights.to(torch::kCPU, torch::kFloat64).contiguous();
      if (!(torch::isfinite(w).all().item<bool>() && (w >= 0).all().item<bool>()) || !(w.sum().item<double>() > 0))
        throw TensorError("StaticNegativeSampler item_weights: must be finite, >= 0, and not all zero");
      weights_.assign(w.data_ptr<double>(), w.data_ptr<double>() + n);
      alias_ = detail::AliasTable(weights_);
      const double total = w.sum().item<double>();
      log_q_ = (w / total).log().to(torch::kFloat32);
    } else {
      log_q_ = torch::full({n}, -std::log(static_cast<double>(n)), torch::kFloat32);
    }
  }

  int64_t num_items() const { return positives_.cols; }
  int64_t num_users() const { return positives_.rows; }
  const CsrMatrix& positives() const { return positives_; }
  /// log q(i) of every item [num_items] float32 (before exclusion).
  const torch::Tensor& log_q() const { return log_q_; }

  /// k negatives for each user of `users` [B] (dense indices), the draws
  /// of step `step` (any integer naming the batch: same step, same draws).
  NegativeSample sample(const torch::Tensor& users, int64_t k, uint64_t step) const {
    detail::check_users(users, num_users(), "StaticNegativeSampler::sample");
    if (k < 1) throw Error(detail::concat("StaticNegativeSampler::sample: k must be >= 1, got ", k));
    const auto u = users.cpu().contiguous();
    const int64_t b = u.numel();
    NegativeSample out;
    out.items = torch::empty({b, k}, torch::kInt64);
    const int64_t* uu = u.data_ptr<int64_t>();
    int64_t* items = out.items.data_ptr<int64_t>();
    std::vector<int64_t> stuck(static_cast<size_t>(b), -1);  // rows whose user has no negative
    at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        FastRng rng(stream_seed(options_.seed(), step, static_cast<uint64_t>(r)));
        for (int64_t j = 0; j < k; ++j) {
          const int64_t item = draw_for(uu[r], rng);
          if (item < 0) {
            stuck[static_cast<size_t>(r)] = uu[r];
            break;
          }
          items[r * k + j] = item;
        }
      }
    });
    for (int64_t r = 0; r < b; ++r)
      if (stuck[static_cast<size_t>(r)] >= 0)
        throw Error(detail::concat("negative sampling: user ", stuck[static_cast<size_t>(r)], " (batch row ", r,
                                   ") has a positive with every one of the ", num_items(),
                                   " items, so there is no negative to draw"));
    out.log_q = log_q_.index({out.items.reshape(-1)}).reshape({b, k});
    return out;
  }

 private:
  /// A draw for `user`, its positives excluded; -1 when it has none to give.
  int64_t draw_for(int64_t user, FastRng& rng) const {
    const int64_t* ptr = positives_.indptr.data_ptr<int64_t>();
    const int32_t* idx = positives_.indices.data_ptr<int32_t>();
    for (int64_t t = 0; t < options_.max_tries(); ++t) {
      const int64_t item = weights_.empty() ? static_cast<int64_t>(rng.below(static_cast<uint32_t>(num_items())))
                                            : alias_.draw(rng);
      if (!detail::csr_contains(ptr, idx, user, item)) return item;
    }
    // Exactly, over the complement: cumulative weights of the items the
    // user has no positive with.
    double total = 0;
    int64_t k = ptr[user];
    for (int64_t i = 0; i < num_items(); ++i) {
      if (k < ptr[user + 1] && idx[k] == i) {
        ++k;
        continue;
      }
      total += weights_.empty() ? 1.0 : weights_[static_cast<size_t>(i)];
    }
    if (!(total > 0)) return -1;
    double target = rng.uniform() * total;
    int64_t last = -1;
    k = ptr[user];
    for (int64_t i = 0; i < num_items(); ++i) {
      if (k < ptr[user + 1] && idx[k] == i) {
        ++k;
        continue;
      }
      const double w = weights_.empty() ? 1.0 : weights_[static_cast<size_t>(i)];
      if (w <= 0) continue;
      last = i;
      if (target < w) return i;
      target -= w;
    }
    return last;  // rounding at the very end
  }

  CsrMatrix positives_;
  StaticNegativeSamplerOptions options_;
  std::vector<double> weights_;  // empty: uniform
  detail::AliasTable alias_;
  torch::Tensor log_q_;
};

/// Uniform over the items each user has no positive with.
inline StaticNegativeSampler uniform_negatives(const CsrMatrix& positives, StaticNegativeSamplerOptions options = {}) {
  return StaticNegativeSampler(positives, {}, options);
}

/// ∝ count(i)^beta over the items each user has no positive with (count:
/// how many users have i; beta = 0.75 as word2vec). Items without a
/// positive get weight 0 unless `smoothing` > 0 is added to every count.
inline StaticNegativeSampler popularity_negatives(const CsrMatrix& positives, double beta = 0.75,
                                                  StaticNegativeSamplerOptions options = {}, double smoothing = 0) {
  if (!std::isfinite(beta) || beta < 0)
    throw Error(detail::concat("popularity_negatives: beta must be a finite number >= 0, got ", beta));
  if (!std::isfinite(smoothing) || smoothing < 0)
    throw Error(detail::concat("popularity_negatives: smoothing must be >= 0, got ", smoothing));
  return StaticNegativeSampler(positives, (item_counts(positives) + smoothing).pow(beta), options);
}

/// The batch's positives as every row's negatives: items [B, B], valid
/// false where the item is one of the row's user's positives (its own
/// positive included), log_q = log(count(i) / nnz).
class InBatchNegatives {
 public:
  explicit InBatchNegatives(CsrMatrix positives) : positives_(std::move(positives)) {
    detail::check_csr_shape(positives_, "InBatchNegatives positives");
    const auto counts = item_counts(positives_);
    log_q_ = (counts / std::max<double>(1.0, static_cast<double>(positives_.nnz()))).log().to(torch::kFloat32);
  }

  const torch::Tensor& log_q() const { return log_q_; }

  NegativeSample sample(const torch::Tensor& users, const torch::Tensor& items) const {
    detail::check_users(users, positives_.rows, "InBatchNegatives::sample");
    if (!items.defined() || items.sizes() != users.sizes() || items.scalar_type() != torch::kInt64)
      throw TensorError(detail::concat("InBatchNegatives::sample: items must be int64 shaped like users ",
                                       users.sizes(), ", got ", detail::type_and_shape_of(items)));
    const auto u = users.cpu().contiguous();
    const auto it = items.cpu().contiguous();
    const int64_t b = u.numel();
    NegativeSample out;
    out.items = it.unsqueeze(0).expand({b, b});  // a view: every row holds the same items
    out.valid = torch::empty({b, b}, torch::kBool);
    const int64_t* uu = u.data_ptr<int64_t>();
    const int64_t* ii = it.data_ptr<int64_t>();
    bool* valid = out.valid.data_ptr<bool>();
    const int64_t* ptr = positives_.indptr.data_ptr<int64_t>();
    const int32_t* idx = positives_.indices.data_ptr<int32_t>();
    // The batch's items in ascending order, merged with each user's sorted
    // positives: O(B + n_u) per row instead of B binary searches.
    std::vector<int64_t> by_item(static_cast<size_t>(b));
    for (int64_t j = 0; j < b; ++j) by_item[static_cast<size_t>(j)] = j;
    std::sort(by_item.begin(), by_item.end(), [ii](int64_t x, int64_t y) { return ii[x] < ii[y] || (ii[x] == ii[y] && x < y); });
    at::parallel_for(0, b, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        bool* row = valid + r * b;
        int64_t k = ptr[uu[r]];
        const int64_t k_end = ptr[uu[r] + 1];
        for (const int64_t j : by_item) {
          while (k < k_end && idx[k] < ii[j]) ++k;
          row[j] = !(k < k_end && idx[k] == ii[j]) && ii[j] != ii[r];
        }
      }
    });
    out.log_q = log_q_.index({it}).unsqueeze(0).expand({b, b});
    return out;
  }

 private:
  CsrMatrix positives_;
  torch::Tensor log_q_;
};

/// Of each row's pool of candidates [B, M] with scores [B, M], the k with
/// the highest scores (dynamic negative sampling); ties go to the earlier
/// candidate. The scores carry no gradient.
inline NegativeSample hardest_of_pool(const NegativeSample& pool, const torch::Tensor& scores, int64_t k) {
  if (!scores.defined() || scores.dim() != 2 || scores.sizes() != pool.items.sizes())
    throw TensorError(detail::concat("hardest_of_pool: scores must be shaped like the pool ", pool.items.sizes(),
                                     ", got ", detail::shape_of(scores)));
  if (k < 1 || k > pool.items.size(1))
    throw Error(detail::concat("hardest_of_pool: k must be in [1, ", pool.items.size(1), "], got ", k));
  auto s = scores.detach().to(torch::kCPU, torch::kFloat64);
  if (pool.valid.defined()) s = s.masked_fill(pool.valid.logical_not(), -std::numeric_limits<double>::infinity());
  // A stable descending order: ties keep the pool's order.
  const auto order = std::get<1>(s.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true)).narrow(1, 0, k);
  NegativeSample out;
  out.items = pool.items.gather(1, order);
  if (pool.log_q.defined()) out.log_q = pool.log_q.gather(1, order);
  if (pool.valid.defined()) out.valid = pool.valid.gather(1, order);
  return out;
}

} // namespace rectrain
