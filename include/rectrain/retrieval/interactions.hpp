#pragma once
// Positive interactions for retrieval training: a `user_id,item_id[,weight]`
// file read into raw-id columns, the id spaces (Catalogue) that map them to
// dense indices, and the user × item matrix of positives (a CsrMatrix:
// each user's items ascending, repeats merged, the value the summed weight
// or the count). A user's own positives are what negative samplers exclude
// and what full-catalogue evaluation masks.

#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/data/csv.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace rectrain {

/// The rows of an interactions file, raw ids as read.
struct InteractionLog {
  torch::Tensor user_id;  ///< [n] int64 raw ids
  torch::Tensor item_id;  ///< [n] int64 raw ids
  torch::Tensor weight;   ///< [n] float32 >= 0; undefined when the file has no `weight` column
  std::string source;     ///< the file it came from, for messages

  int64_t size() const { return user_id.defined() ? user_id.numel() : 0; }
};

/// Reads `user_id,item_id[,weight]` (any column order, other columns
/// ignored with one warning). Errors name the file, line and column.
inline InteractionLog read_interaction_log(const std::string& path) {
  const Table table = read_csv(path, {{"user_id", CsvType::Id},
                                      {"item_id", CsvType::Id},
                                      {"weight", CsvType::NonNegativeNumber, /*required=*/false}});
  InteractionLog log;
  log.user_id = table["user_id"];
  log.item_id = table["item_id"];
  if (table.contains("weight")) log.weight = table["weight"];
  log.source = path;
  if (log.size() == 0) throw Error(detail::concat(path, ": no interactions (the file has a header only)"));
  return log;
}

/// The user and item id spaces: dense index i stands for raw id
/// users.raw_ids()[i] (ascending).
struct Catalogue {
  IdMap users;
  IdMap items;

  int64_t num_users() const { return users.size(); }
  int64_t num_items() const { return items.size(); }

  /// Every user and item of the logs (train and test together, so an item
  /// seen only in the test file still has an index and a factor).
  static Catalogue of(const std::vector<const InteractionLog*>& logs) {
    std::vector<torch::Tensor> users, items;
    for (const auto* log : logs) {
      users.push_back(log->user_id);
      items.push_back(log->item_id);
    }
    Catalogue c;
    c.users = IdMap::from_ids(users);
    c.items = IdMap::from_ids(items);
    return c;
  }
};

/// The log's positives as a [num_users, num_items] matrix over `catalogue`.
/// Every id must be in the catalogue (an Error names the first that is not).
inline CsrMatrix positives_matrix(const InteractionLog& log, const Catalogue& catalogue) {
  const auto user = catalogue.users.encode(log.user_id);
  const auto item = catalogue.items.encode(log.item_id);
  for (const auto* side : {&user, &item}) {
    const auto unknown = (*side < 0);
    if (unknown.any().item<bool>()) {
      const int64_t row = unknown.nonzero()[0][0].item<int64_t>();
      const bool is_user = side == &user;
      throw Error(detail::concat(log.source, ": data row ", row + 1, ": ", is_user ? "user_id " : "item_id ",
                                 (is_user ? log.user_id : log.item_id)[row].item<int64_t>(),
                                 " is not in the catalogue"));
    }
  }
  return build_csr(user, item, catalogue.num_users(), catalogue.num_items(), log.weight);
}

namespace detail {

/// Whether row `r` of m holds column `c` (rows are sorted: binary search).
inline bool csr_contains(const int64_t* indptr, const int32_t* indices, int64_t r, int64_t c) noexcept {
  const int32_t* begin = indices + indptr[r];
  const int32_t* end = indices + indptr[r + 1];
  return std::binary_search(begin, end, static_cast<int32_t>(c));
}

inline void check_csr_shape(const CsrMatrix& m, const char* name) {
  if (!m.indptr.defined() || m.indptr.numel() != m.rows + 1 || !m.indices.defined() || !m.values.defined())
    throw TensorError(concat(name, ": not a built CsrMatrix (use build_csr or positives_matrix)"));
}

/// A CsrMatrix from per-row lists that are already sorted.
inline CsrMatrix csr_from_rows(int64_t rows, int64_t cols, const std::vector<std::vector<int32_t>>& idx,
                               const std::vector<std::vector<float>>& val) {
  CsrMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = torch::zeros({rows + 1}, torch::kInt64);
  int64_t* ptr = m.indptr.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) ptr[r + 1] = ptr[r] + static_cast<int64_t>(idx[static_cast<size_t>(r)].size());
  m.indices = torch::empty({ptr[rows]}, torch::kInt32);
  m.values = torch::empty({ptr[rows]}, torch::kFloat32);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(idx[static_cast<size_t>(r)].begin(), idx[static_cast<size_t>(r)].end(),
              m.indices.data_ptr<int32_t>() + ptr[r]);
    std::copy(val[static_cast<size_t>(r)].begin(), val[static_cast<size_t>(r)].end(),
              m.values.data_ptr<float>() + ptr[r]);
  }
  return m;
}

} // namespace detail

/// A train/test split of one matrix of positives.
struct InteractionSplit {
  CsrMatrix train;
  CsrMatrix test;
};

/// Holds out, per user, round(test_fraction × n) of the user's n positives
/// (at most n − 1, so every user keeps a training item), chosen uniformly
/// by a random stream of (seed, user): the same split for any thread count.
inline InteractionSplit split_per_user(const CsrMatrix& positives, double test_fraction, uint64_t seed) {
  detail::check_csr_shape(positives, "split_per_user");
  if (!(test_fraction >= 0 && test_fraction < 1))
    throw Error(detail::concat("split_per_user: test_fraction must be in [0, 1), got ", test_fraction));
  const int64_t rows = positives.rows;
  const int64_t* ptr = positives.indptr.data_ptr<int64_t>();
  const int32_t* idx = positives.indices.data_ptr<int32_t>();
  const float* val = positives.values.data_ptr<float>();
  std::vector<std::vector<int32_t>> train_idx(static_cast<size_t>(rows)), test_idx(static_cast<size_t>(rows));
  std::vector<std::vector<float>> train_val(static_cast<size_t>(rows)), test_val(static_cast<size_t>(rows));
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> order;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = ptr[u + 1] - ptr[u];
      const int64_t held = std::min<int64_t>(std::max<int64_t>(n - 1, 0),
                                             static_cast<int64_t>(std::llround(test_fraction * static_cast<double>(n))));
      order.resize(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) order[static_cast<size_t>(k)] = k;
      FastRng rng(stream_seed(seed, 0x5eed5b17ULL, static_cast<uint64_t>(u)));
      for (int64_t k = 0; k < held; ++k) {  // partial Fisher-Yates: the first `held` are the test items
        const int64_t j = k + static_cast<int64_t>(rng.below(static_cast<uint32_t>(n - k)));
        std::swap(order[static_cast<size_t>(k)], order[static_cast<size_t>(j)]);
      }
      std::vector<char> is_test(static_cast<size_t>(n), 0);
      for (int64_t k = 0; k < held; ++k) is_test[static_cast<size_t>(order[static_cast<size_t>(k)])] = 1;
      for (int64_t k = 0; k < n; ++k) {  // in column order, so both rows stay sorted
        auto& to_idx = is_test[static_cast<size_t>(k)] ? test_idx[static_cast<size_t>(u)] : train_idx[static_cast<size_t>(u)];
        auto& to_val = is_test[static_cast<size_t>(k)] ? test_val[static_cast<size_t>(u)] : train_val[static_cast<size_t>(u)];
        to_idx.push_back(idx[ptr[u] + k]);
        to_val.push_back(val[ptr[u] + k]);
      }
    }
  });
  return {detail::csr_from_rows(rows, positives.cols, train_idx, train_val),
          detail::csr_from_rows(rows, positives.cols, test_idx, test_val)};
}

/// How many positives each item has in m: [cols] float64 (the values are
/// not used: an item's popularity is how many users have it).
inline torch::Tensor item_counts(const CsrMatrix& m) {
  detail::check_csr_shape(m, "item_counts");
  auto counts = torch::zeros({m.cols}, torch::kFloat64);
  double* c = counts.data_ptr<double>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  for (int64_t k = 0; k < m.nnz(); ++k) c[idx[k]] += 1;
  return counts;
}

/// Writes m's entries as `user_id,item_id[,weight]` rows (raw ids of
/// `catalogue`), for splits other programs can read.
inline std::string interaction_rows_csv(const CsrMatrix& m, const Catalogue& catalogue, bool with_weight) {
  std::string out = with_weight ? "user_id,item_id,weight\n" : "user_id,item_id\n";
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const float* val = m.values.data_ptr<float>();
  const int64_t* user_raw = catalogue.users.raw_ids().data_ptr<int64_t>();
  const int64_t* item_raw = catalogue.items.raw_ids().data_ptr<int64_t>();
  for (int64_t u = 0; u < m.rows; ++u)
    for (int64_t k = ptr[u]; k < ptr[u + 1]; ++k) {
      out += std::to_string(user_raw[u]);
      out += ',';
      out += std::to_string(item_raw[idx[k]]);
      if (with_weight) {
        out += ',';
        out += detail::concat(val[k]);
      }
      out += '\n';
    }
  return out;
}

} // namespace rectrain
