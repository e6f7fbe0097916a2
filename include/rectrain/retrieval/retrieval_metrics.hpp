#pragma once
// Full-catalogue retrieval: each user's top K items by ⟨user, item⟩ over the
// whole catalogue, their training items excluded, and the metrics of those
// lists against held-out positives.
//
// Scores are computed a block of users at a time (one matrix product), on
// the factors' device; a block's score matrix is kept under `block_bytes`.
// Ranking rule, for exact and reproducible lists: higher score first, equal
// scores by lower item index. On the CPU one pass over each row keeps the
// best K in a heap (in index order, so ties resolve by themselves); on other
// devices topk, which leaves ties in any order, so a tie across the K-th
// place is settled by a scan of that user's row.
//
// Metrics (RecBole's definitions), per user with relevant items R (the
// user's test items that are not training items), over the top-K list L:
//   Precision@K = |L ∩ R| / K          (K even when L is shorter)
//   Recall@K    = |L ∩ R| / |R|
//   NDCG@K      = Σ_{r < K, L_r ∈ R} 1/log2(r + 2) / Σ_{r < min(K, |R|)} 1/log2(r + 2)
//   HitRate@K   = 1 if L ∩ R is not empty
// averaged over the users with |R| > 0 (users without test items are not
// counted).

#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/retrieval/interactions.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace rectrain {

struct RetrievalMetricsOptions {
  /// The cut-offs to report (each >= 1).
  TORCH_ARG(std::vector<int64_t>, ks) = std::vector<int64_t>{10, 20};
  /// Most bytes of float32 scores computed at once.
  TORCH_ARG(int64_t, block_bytes) = int64_t{256} << 20;
};

struct RetrievalAtK {
  int64_t k = 0;
  double precision = 0;
  double recall = 0;
  double ndcg = 0;
  double hit_rate = 0;
};

struct RetrievalMetrics {
  std::vector<RetrievalAtK> at;  ///< one per requested K, in the order given
  int64_t users = 0;             ///< users with at least one relevant item
  double seconds = 0;

  const RetrievalAtK& at_k(int64_t k) const {
    for (const auto& m : at)
      if (m.k == k) return m;
    throw Error(detail::concat("RetrievalMetrics: K = ", k, " was not computed"));
  }
};

namespace detail {

inline void check_factors(const torch::Tensor& t, const char* name) {
  if (!t.defined() || t.dim() != 2 || !t.is_floating_point() || t.size(1) < 1)
    throw TensorError(concat(name, ": expected a floating [n, d] tensor, got ", type_and_shape_of(t)));
  if (!torch::isfinite(t).all().item<bool>()) {
    const auto at = torch::isfinite(t).logical_not().nonzero()[0];
    throw TensorError(concat(name, ": NaN or infinite value at row ", at[0].item<int64_t>(), ", column ",
                             at[1].item<int64_t>()));
  }
}

/// Both factor matrices finite, of one width, on one device.
inline void check_factor_pair(const torch::Tensor& users, const torch::Tensor& items, const char* who) {
  check_factors(users, concat(who, " user_factors").c_str());
  check_factors(items, concat(who, " item_factors").c_str());
  if (users.size(1) != items.size(1) || users.device() != items.device())
    throw TensorError(concat(who, ": user factors ", users.sizes(), " on ", users.device(), " and item factors ",
                             items.sizes(), " on ", items.device(), " must have one width and one device"));
}

/// Calls fn(user, items, n) with the top-`k` list of every user in `users`
/// (ascending dense indices; n <= k when fewer items are left after the
/// exclusion), blocks of users at a time; fn is called in parallel.
template <class Fn>
void for_each_top_k(const torch::Tensor& user_factors, const torch::Tensor& item_factors, const CsrMatrix* exclude,
                    const std::vector<int64_t>& users, int64_t k, int64_t block_bytes, Fn&& fn) {
  const int64_t num_items = item_factors.size(0);
  const int64_t kk = std::min(k, num_items);
  const int64_t block =
      std::max<int64_t>(1, block_bytes / std::max<int64_t>(1, num_items * static_cast<int64_t>(sizeof(float))));
  const auto device = user_factors.device();
  const auto items_t = item_factors.to(torch::kFloat32).t().contiguous();
  const int64_t* ex_ptr = exclude ? exclude->indptr.data_ptr<int64_t>() : nullptr;
  const int32_t* ex_idx = exclude ? exclude->indices.data_ptr<int32_t>() : nullptr;
  // The ranking rule: higher score first, equal scores by lower index.
  const auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (device.is_cpu()) {
    // One score buffer for every block (no page faults per block), then one
    // pass over each row keeping the best kk in a heap: items come in index
    // order, so an equal score never displaces an earlier item and the
    // tie rule holds without a second look.
    const auto factors = user_factors.to(torch::kFloat32);
    auto buffer = torch::empty({std::min<int64_t>(block, static_cast<int64_t>(users.size())), num_items}, torch::kFloat32);
    for (size_t start = 0; start < users.size(); start += static_cast<size_t>(block)) {
      const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(users.size() - start));
      const auto rows = torch::from_blob(const_cast<int64_t*>(users.data()) + start, {n}, torch::kInt64);
      auto scores = buffer.narrow(0, 0, n);
      at::mm_out(scores, factors.index({rows}), items_t);
      float* base = scores.data_ptr<float>();
      at::parallel_for(0, n, 4, [&](int64_t begin, int64_t end) {
        std::vector<std::pair<float, int64_t>> heap;
        std::vector<int64_t> items;
        for (int64_t i = begin; i < end; ++i) {
          const int64_t u = users[start + static_cast<size_t>(i)];
          float* row = base + i * num_items;
          if (exclude)
            for (int64_t e = ex_ptr[u]; e < ex_ptr[u + 1]; ++e) row[ex_idx[e]] = -std::numeric_limits<float>::infinity();
          heap.clear();
          int64_t item = 0;
          for (; item < num_items && static_cast<int64_t>(heap.size()) < kk; ++item) {
            heap.emplace_back(row[item], item);
            std::push_heap(heap.begin(), heap.end(), better);  // the worst on top
          }
          float worst = heap.empty() ? 0.0f : heap.front().first;
          for (; item < num_items; ++item) {
            if (!(row[item] > worst)) continue;
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = {row[item], item};
            std::push_heap(heap.begin(), heap.end(), better);
            worst = heap.front().first;
          }
          std::sort(heap.begin(), heap.end(), better);
          items.clear();
          for (const auto& h : heap)
            if (std::isfinite(h.first)) items.push_back(h.second);  // excluded items are -inf
          fn(u, items.data(), static_cast<int64_t>(items.size()));
        }
      });
    }
    return;
  }
  // One more than needed, to see whether a tie crosses the K-th place.
  const int64_t probe = std::min(kk + 1, num_items);
  const double minus_inf = -std::numeric_limits<double>::infinity();
  for (size_t start = 0; start < users.size(); start += static_cast<size_t>(block)) {
    const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(users.size() - start));
    auto rows = torch::from_blob(const_cast<int64_t*>(users.data()) + start, {n}, torch::kInt64).to(device);
    auto scores = user_factors.index({rows}).to(torch::kFloat32).mm(items_t);
    if (exclude) {
      std::vector<int64_t> r, c;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t u = users[start + static_cast<size_t>(i)];
        for (int64_t e = ex_ptr[u]; e < ex_ptr[u + 1]; ++e) {
          r.push_back(i);
          c.push_back(ex_idx[e]);
        }
      }
      if (!r.empty()) {
        const auto rt = torch::tensor(r, torch::kInt64).to(device), ct = torch::tensor(c, torch::kInt64).to(device);
        scores.index_put_({rt, ct}, minus_inf);
      }
    }
    const auto top = scores.topk(probe, 1, /*largest=*/true, /*sorted=*/true);
    const auto values = std::get<0>(top).cpu().contiguous();
    const auto indices = std::get<1>(top).cpu().contiguous();
    const float* v = values.data_ptr<float>();
    const int64_t* ix = indices.data_ptr<int64_t>();
    // Rows whose K-th score is tied with the next one need their full row.
    std::vector<int64_t> tied;
    for (int64_t i = 0; i < n; ++i)
      if (probe > kk && v[i * probe + kk - 1] == v[i * probe + kk] && std::isfinite(v[i * probe + kk])) tied.push_back(i);
    torch::Tensor tied_rows;
    if (!tied.empty())
      tied_rows = scores.index({torch::tensor(tied, torch::kInt64).to(device)}).cpu().contiguous();
    at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
      std::vector<std::pair<float, int64_t>> list;
      for (int64_t i = begin; i < end; ++i) {
        list.clear();
        const float* vi = v + i * probe;
        const int64_t* ii = ix + i * probe;
        const auto t = std::lower_bound(tied.begin(), tied.end(), i);
        if (t != tied.end() && *t == i) {
          const float threshold = vi[kk - 1];
          for (int64_t j = 0; j < kk && vi[j] > threshold; ++j) list.emplace_back(vi[j], ii[j]);
          const float* row = tied_rows.data_ptr<float>() + (t - tied.begin()) * num_items;
          for (int64_t item = 0; item < num_items && static_cast<int64_t>(list.size()) < kk; ++item)
            if (row[item] == threshold) list.emplace_back(threshold, item);
        } else {
          for (int64_t j = 0; j < kk; ++j)
            if (std::isfinite(vi[j])) list.emplace_back(vi[j], ii[j]);
        }
        std::sort(list.begin(), list.end(), better);
        std::vector<int64_t> items(list.size());
        for (size_t j = 0; j < list.size(); ++j) items[j] = list[j].second;
        fn(users[start + static_cast<size_t>(i)], items.data(), static_cast<int64_t>(items.size()));
      }
    });
  }
}

} // namespace detail

/// Each user's top `k` items [num_users, k] int64 (−1 pads lists that
/// `exclude`, e.g. the training positives, left shorter than k).
inline torch::Tensor retrieve_top_k(const torch::Tensor& user_factors, const torch::Tensor& item_factors, int64_t k,
                                    const CsrMatrix* exclude = nullptr, int64_t block_bytes = int64_t{256} << 20) {
  detail::check_factor_pair(user_factors, item_factors, "retrieve_top_k");
  if (k < 1) throw Error(detail::concat("retrieve_top_k: k must be >= 1, got ", k));
  if (exclude && (exclude->rows != user_factors.size(0) || exclude->cols != item_factors.size(0)))
    throw TensorError(detail::concat("retrieve_top_k: the excluded matrix is ", exclude->rows, " x ", exclude->cols,
                                     ", the factors give ", user_factors.size(0), " x ", item_factors.size(0)));
  const int64_t users = user_factors.size(0);
  auto out = torch::full({users, k}, -1, torch::kInt64);
  int64_t* o = out.data_ptr<int64_t>();
  std::vector<int64_t> all(static_cast<size_t>(users));
  for (int64_t u = 0; u < users; ++u) all[static_cast<size_t>(u)] = u;
  detail::for_each_top_k(user_factors, item_factors, exclude, all, k, block_bytes,
                         [&](int64_t u, const int64_t* items, int64_t n) { std::copy(items, items + n, o + u * k); });
  return out;
}

/// Precision, Recall, NDCG and HitRate at each of options.ks() of the
/// users' top lists (training items excluded) against `test`.
inline RetrievalMetrics evaluate_retrieval(const torch::Tensor& user_factors, const torch::Tensor& item_factors,
                                           const CsrMatrix& train, const CsrMatrix& test,
                                           const RetrievalMetricsOptions& options = {}) {
  Stopwatch clock;
  detail::check_factor_pair(user_factors, item_factors, "evaluate_retrieval");
  detail::check_csr_shape(train, "evaluate_retrieval train");
  detail::check_csr_shape(test, "evaluate_retrieval test");
  if (train.rows != user_factors.size(0) || test.rows != user_factors.size(0) || train.cols != item_factors.size(0) ||
      test.cols != item_factors.size(0))
    throw TensorError(detail::concat("evaluate_retrieval: train is ", train.rows, " x ", train.cols, " and test ",
                                     test.rows, " x ", test.cols, "; the factors give ", user_factors.size(0), " x ",
                                     item_factors.size(0)));
  if (options.ks().empty()) throw Error("evaluate_retrieval: no K given");
  int64_t k_max = 0;
  for (int64_t k : options.ks()) {
    if (k < 1) throw Error(detail::concat("evaluate_retrieval: every K must be >= 1, got ", k));
    k_max = std::max(k_max, k);
  }
  const int64_t* tr_ptr = train.indptr.data_ptr<int64_t>();
  const int32_t* tr_idx = train.indices.data_ptr<int32_t>();
  const int64_t* te_ptr = test.indptr.data_ptr<int64_t>();
  const int32_t* te_idx = test.indices.data_ptr<int32_t>();
  // Relevant items: test items that are not training items.
  std::vector<int64_t> relevant(static_cast<size_t>(test.rows), 0), users;
  for (int64_t u = 0; u < test.rows; ++u) {
    for (int64_t e = te_ptr[u]; e < te_ptr[u + 1]; ++e)
      relevant[static_cast<size_t>(u)] += !detail::csr_contains(tr_ptr, tr_idx, u, te_idx[e]);
    if (relevant[static_cast<size_t>(u)] > 0) users.push_back(u);
  }
  const size_t nk = options.ks().size();
  // Per user sums, reduced in user order afterwards (deterministic).
  std::vector<double> per_user(users.size() * nk * 4, 0.0);
  std::vector<int64_t> slot(static_cast<size_t>(test.rows), -1);
  for (size_t i = 0; i < users.size(); ++i) slot[static_cast<size_t>(users[i])] = static_cast<int64_t>(i);
  detail::for_each_top_k(
      user_factors, item_factors, &train, users, k_max, options.block_bytes(), [&](int64_t u, const int64_t* items, int64_t n) {
        const double r = static_cast<double>(relevant[static_cast<size_t>(u)]);
        double* out = per_user.data() + static_cast<size_t>(slot[static_cast<size_t>(u)]) * nk * 4;
        for (size_t q = 0; q < nk; ++q) {
          const int64_t k = options.ks()[q];
          double hits = 0, dcg = 0, ideal = 0;
          for (int64_t j = 0; j < std::min(k, n); ++j)
            if (detail::csr_contains(te_ptr, te_idx, u, items[j])) {
              hits += 1;
              dcg += 1.0 / std::log2(static_cast<double>(j) + 2.0);
            }
          for (int64_t j = 0; j < std::min<int64_t>(k, static_cast<int64_t>(r)); ++j)
            ideal += 1.0 / std::log2(static_cast<double>(j) + 2.0);
          out[q * 4 + 0] = hits / static_cast<double>(k);
          out[q * 4 + 1] = hits / r;
          out[q * 4 + 2] = dcg / ideal;
          out[q * 4 + 3] = hits > 0 ? 1.0 : 0.0;
        }
      });
  RetrievalMetrics result;
  result.users = static_cast<int64_t>(users.size());
  for (size_t q = 0; q < nk; ++q) {
    RetrievalAtK m;
    m.k = options.ks()[q];
    double sums[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < users.size(); ++i)
      for (int c = 0; c < 4; ++c) sums[c] += per_user[i * nk * 4 + q * 4 + static_cast<size_t>(c)];
    const double count = std::max<double>(1.0, static_cast<double>(users.size()));
    m.precision = sums[0] / count;
    m.recall = sums[1] / count;
    m.ndcg = sums[2] / count;
    m.hit_rate = sums[3] / count;
    result.at.push_back(m);
  }
  result.seconds = clock.seconds();
  return result;
}

} // namespace rectrain
