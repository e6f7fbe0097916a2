#pragma once
// Compressed sparse row matrices of interactions, the input of implicit ALS:
// user x item, or user x source through each item's source. A stored value
// is r, the number of interactions of the pair or the sum of a signal over
// them; ImplicitAlsOptions::alpha turns it into a confidence (binary by
// default). Built in O(nnz) by a counting sort, duplicates merged per row in
// parallel.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// Row r holds columns indices[indptr[r] .. indptr[r + 1]) in ascending
/// order, without repeats, with their values. CPU tensors.
struct CsrMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  torch::Tensor indptr;   ///< [rows + 1] int64
  torch::Tensor indices;  ///< [nnz] int32 column indices
  torch::Tensor values;   ///< [nnz] float32 r: interaction count or summed signal

  int64_t nnz() const { return indices.defined() ? indices.numel() : 0; }

  /// The transpose, in the same format (rows of the result are our
  /// columns). O(nnz + rows + cols); rows of the result come out sorted.
  /// Chunks of rows are counted and scattered in parallel, each after the
  /// chunks before it, so the result is the serial one.
  CsrMatrix transpose() const {
    CsrMatrix t;
    t.rows = cols;
    t.cols = rows;
    const int64_t n = nnz();
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int32_t* idx = indices.data_ptr<int32_t>();
    const float* val = values.data_ptr<float>();
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / (int64_t{1} << 20)));
    std::vector<int64_t> bounds(static_cast<size_t>(chunks + 1), rows);
    for (int64_t c = 0; c < chunks; ++c)
      bounds[static_cast<size_t>(c)] = std::lower_bound(ptr, ptr + rows, c * n / chunks) - ptr;
    bounds[0] = 0;
    // next[c][j]: where chunk c writes its next entry of column j.
    std::vector<std::vector<int64_t>> next(static_cast<size_t>(chunks));
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        auto& count = next[static_cast<size_t>(c)];
        count.assign(static_cast<size_t>(cols), 0);
        for (int64_t k = ptr[bounds[static_cast<size_t>(c)]]; k < ptr[bounds[static_cast<size_t>(c) + 1]]; ++k)
          ++count[static_cast<size_t>(idx[k])];
      }
    });
    t.indptr = torch::empty({cols + 1}, torch::kInt64);
    int64_t* t_ptr = t.indptr.data_ptr<int64_t>();
    int64_t running = 0;
    for (int64_t j = 0; j < cols; ++j) {
      t_ptr[j] = running;
      for (auto& count : next) {
        const int64_t here = count[static_cast<size_t>(j)];
        count[static_cast<size_t>(j)] = running;
        running += here;
      }
    }
    t_ptr[cols] = running;
    t.indices = torch::empty({n}, torch::kInt32);
    t.values = torch::empty({n}, torch::kFloat32);
    int32_t* t_idx = t.indices.data_ptr<int32_t>();
    float* t_val = t.values.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        auto& slot = next[static_cast<size_t>(c)];
        for (int64_t r = bounds[static_cast<size_t>(c)]; r < bounds[static_cast<size_t>(c) + 1]; ++r)
          for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k) {
            const int64_t at = slot[static_cast<size_t>(idx[k])]++;
            t_idx[at] = static_cast<int32_t>(r);
            t_val[at] = val[k];
          }
      }
    });
    return t;
  }

  /// Dense [rows, cols] float32 copy (small matrices: tests, debugging).
  torch::Tensor to_dense() const {
    auto dense = torch::zeros({rows, cols}, torch::kFloat32);
    const auto row_of = torch::repeat_interleave(torch::arange(rows), indptr.diff());
    dense.index_put_({row_of, indices.to(torch::kInt64)}, values);
    return dense;
  }
};

namespace detail {

inline void check_coordinate(const torch::Tensor& t, const char* name, int64_t n, int64_t limit) {
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kInt64 || !t.device().is_cpu() ||
      t.size(0) != n)
    throw TensorError(concat("build_csr ", name, ": expected a 1-D int64 CPU tensor of ", n, " entries, got ",
                             type_and_shape_of(t)));
  if (n == 0) return;
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  if (lo < -1 || hi >= limit)
    throw TensorError(concat("build_csr ", name, ": values must be in [-1, ", limit, ") (-1 = unknown, skipped); found ",
                             lo < -1 ? lo : hi));
}

} // namespace detail

/// A rows x cols matrix from coordinate lists: entry k is (row[k], col[k])
/// with signal[k] (optional). Pairs with row or column -1 are skipped;
/// repeated pairs are merged: the stored value is the sum of their signals,
/// or their count when no signal is given.
inline CsrMatrix build_csr(const torch::Tensor& row, const torch::Tensor& col, int64_t rows, int64_t cols,
                           const torch::Tensor& signal = {}) {
  if (rows < 0 || cols < 0 || cols > std::numeric_limits<int32_t>::max())
    throw TensorError(detail::concat("build_csr: bad shape [", rows, ", ", cols, "] (columns must fit in int32)"));
  const int64_t n = row.defined() ? row.numel() : 0;
  detail::check_coordinate(row, "row", n, rows);
  detail::check_coordinate(col, "col", n, cols);
  torch::Tensor r;
  if (signal.defined()) {
    if (signal.dim() != 1 || signal.size(0) != n)
      throw TensorError(detail::concat("build_csr signal: expected [", n, "], got ", signal.sizes()));
    r = signal.to(torch::kCPU, torch::kFloat32).contiguous();
    if (n > 0 && !torch::isfinite(r).all().item<bool>())
      throw TensorError("build_csr signal: NaN or infinite values");
  }
  const auto rc = row.contiguous(), cc = col.contiguous();
  const int64_t* rp = rc.data_ptr<int64_t>();
  const int64_t* cp = cc.data_ptr<int64_t>();
  const float* sp = r.defined() ? r.data_ptr<float>() : nullptr;

  // Counting sort by row (file order kept within a row).
  std::vector<int64_t> start(static_cast<size_t>(rows + 1), 0);
  for (int64_t k = 0; k < n; ++k)
    if (rp[k] >= 0 && cp[k] >= 0) ++start[static_cast<size_t>(rp[k]) + 1];
  for (int64_t i = 0; i < rows; ++i) start[static_cast<size_t>(i + 1)] += start[static_cast<size_t>(i)];
  const int64_t kept = start.back();
  std::vector<std::pair<int32_t, float>> entries(static_cast<size_t>(kept));
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t k = 0; k < n; ++k)
      if (rp[k] >= 0 && cp[k] >= 0)
        entries[static_cast<size_t>(next[static_cast<size_t>(rp[k])]++)] = {static_cast<int32_t>(cp[k]),
                                                                             sp ? sp[k] : 1.0f};
  }
  // Per row: sort by column and merge repeats (in place), in parallel.
  std::vector<int64_t> merged(static_cast<size_t>(rows + 1), 0);
  at::parallel_for(0, rows, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      auto first = entries.begin() + start[static_cast<size_t>(i)];
      auto last = entries.begin() + start[static_cast<size_t>(i + 1)];
      std::sort(first, last, [](const auto& a, const auto& b) { return a.first < b.first; });
      auto out = first;
      for (auto it = first; it != last; ++it) {
        if (out != first && (out - 1)->first == it->first)
          (out - 1)->second += it->second;
        else
          *out++ = *it;
      }
      merged[static_cast<size_t>(i + 1)] = out - first;
    }
  });
  for (int64_t i = 0; i < rows; ++i) merged[static_cast<size_t>(i + 1)] += merged[static_cast<size_t>(i)];

  CsrMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = torch::from_blob(merged.data(), {rows + 1}, torch::kInt64).clone();
  m.indices = torch::empty({merged.back()}, torch::kInt32);
  m.values = torch::empty({merged.back()}, torch::kFloat32);
  int32_t* idx = m.indices.data_ptr<int32_t>();
  float* val = m.values.data_ptr<float>();
  at::parallel_for(0, rows, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t from = start[static_cast<size_t>(i)], to = merged[static_cast<size_t>(i)];
      const int64_t count = merged[static_cast<size_t>(i + 1)] - to;
      for (int64_t k = 0; k < count; ++k) {
        const auto& e = entries[static_cast<size_t>(from + k)];
        idx[to + k] = e.first;
        val[to + k] = e.second;
      }
    }
  });
  return m;
}

/// Users x items of a dataset's interactions. `signal` names an interaction
/// column to sum per pair (empty: count the pair's interactions).
inline CsrMatrix user_item_matrix(const Dataset& ds, const std::string& signal = "") {
  return build_csr(ds.interactions["user"], ds.interactions["item"], ds.num_users(), ds.num_items(),
                   signal.empty() ? torch::Tensor() : ds.interactions[signal]);
}

/// Users x sources: each interaction counts for its item's source; items
/// with an unknown source are skipped.
inline CsrMatrix user_source_matrix(const Dataset& ds, const std::string& signal = "") {
  const auto source = ds.items["source"].index_select(0, ds.interactions["item"]);
  return build_csr(ds.interactions["user"], source, ds.num_users(), ds.num_sources(),
                   signal.empty() ? torch::Tensor() : ds.interactions[signal]);
}

} // namespace rectrain
