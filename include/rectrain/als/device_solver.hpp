#pragma once
// The implicit-ALS solver written in LibTorch ops only, so it runs on CUDA
// (and on CPU, which is how CI tests it). Internal to fit_implicit_als.
//
// Rows are bucketed by degree (widths up to the next power of two) and each
// bucket is stored as a padded [rows, width] table of column indices; a
// padding entry points at an extra all-zero factor row, so gathers need no
// mask. A bucket's column factors are gathered once per half-step into
// [rows, width, f] and every CG step is a pair of batched matrix products.
// Every op used is deterministic on CUDA (no atomics: sums over rows are
// reductions inside one kernel, results are written with index_copy_).

#include <rectrain/als/als_problem.hpp>
#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rectrain {
namespace detail {

class DeviceAlsSolver {
 public:
  DeviceAlsSolver(const AlsProblem& problem, torch::Device device)
      : p_(problem), device_(device), users_(make_side(problem.users)), items_(make_side(problem.items)) {}

  void solve_users(torch::Tensor& x, const torch::Tensor& y) { solve(users_, x, y); }
  void solve_items(torch::Tensor& y, const torch::Tensor& x) { solve(items_, y, x); }

  double objective(const torch::Tensor& x, const torch::Tensor& y) const {
    const auto xd = x.to(torch::kFloat64), yd = y.to(torch::kFloat64);
    double total = (torch::mm(xd.t(), xd) * torch::mm(yd.t(), yd)).sum().item<double>();
    total += p_.regularization * (xd.pow(2).sum() + yd.pow(2).sum()).item<double>();
    const auto y_ext = with_zero_row(y);
    auto sum = torch::zeros({}, xd.options());
    for (const auto& bucket : users_.buckets)
      for_chunks(bucket, y.size(1), [&](const torch::Tensor& rows, const torch::Tensor& index,
                                        const torch::Tensor& conf, const torch::Tensor&) {
        const auto s = torch::bmm(gather(y_ext, index), x.index_select(0, rows).unsqueeze(2)).squeeze(2);
        const auto sd = s.to(torch::kFloat64), c = conf.to(torch::kFloat64);
        // Padding: s = 0 and c = 0, so its term is 0.
        sum += (c * (1 - sd).pow(2) - sd.pow(2)).sum();
      });
    return total + sum.item<double>();
  }

 private:
  struct Bucket {
    torch::Tensor rows;   ///< [B] int64
    torch::Tensor index;  ///< [B, width] int64; padding = number of columns
    torch::Tensor conf;   ///< [B, width] float32 c (0 on padding)
    int64_t width = 0;
  };
  struct Side {
    std::vector<Bucket> buckets;
    torch::Tensor empty_rows;  ///< rows without nonzeros
  };

  // Bound on gathered elements per chunk: B * width * f (256 MiB in float).
  static constexpr int64_t kChunkElements = int64_t{1} << 26;

  Side make_side(const AlsSide& side) const {
    const CsrMatrix& m = side.m;
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    const int32_t* idx = m.indices.data_ptr<int32_t>();
    const float* conf = side.confidence.defined() ? side.confidence.data_ptr<float>() : nullptr;
    std::vector<std::vector<int64_t>> by_bucket(64);
    std::vector<int64_t> empty;
    for (int64_t r = 0; r < m.rows; ++r) {
      const int64_t d = ptr[r + 1] - ptr[r];
      if (d == 0) {
        empty.push_back(r);
        continue;
      }
      int b = 0;
      while ((int64_t{1} << b) < d) ++b;
      by_bucket[static_cast<size_t>(b)].push_back(r);
    }
    Side out;
    out.empty_rows = torch::tensor(empty, torch::kInt64).to(device_);
    for (const auto& rows : by_bucket) {
      if (rows.empty()) continue;
      int64_t width = 0;
      for (int64_t r : rows) width = std::max(width, ptr[r + 1] - ptr[r]);
      const int64_t n = static_cast<int64_t>(rows.size());
      auto index = torch::full({n, width}, m.cols, torch::kInt64);
      auto c = torch::zeros({n, width}, torch::kFloat32);
      int64_t* ip = index.data_ptr<int64_t>();
      float* cp = c.data_ptr<float>();
      for (int64_t j = 0; j < n; ++j) {
        const int64_t r = rows[static_cast<size_t>(j)];
        for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k) {
          ip[j * width + (k - ptr[r])] = idx[k];
          cp[j * width + (k - ptr[r])] = conf ? conf[k] : 1.0f;
        }
      }
      out.buckets.push_back({torch::tensor(rows, torch::kInt64).to(device_), index.to(device_), c.to(device_), width});
    }
    return out;
  }

  /// fn(rows, index, conf, conf - 1) for slices of a bucket small enough
  /// to gather (at least one row each).
  template <class Fn>
  static void for_chunks(const Bucket& bucket, int64_t f, Fn&& fn) {
    const int64_t n = bucket.rows.size(0);
    const int64_t step = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, bucket.width * f));
    for (int64_t begin = 0; begin < n; begin += step) {
      const int64_t end = std::min(n, begin + step);
      const auto conf = bucket.conf.slice(0, begin, end);
      fn(bucket.rows.slice(0, begin, end), bucket.index.slice(0, begin, end), conf, conf - (conf > 0).to(conf.dtype()));
    }
  }

  static torch::Tensor with_zero_row(const torch::Tensor& y) {
    return torch::cat({y, torch::zeros({1, y.size(1)}, y.options())});
  }
  static torch::Tensor gather(const torch::Tensor& y_ext, const torch::Tensor& index) {
    return y_ext.index_select(0, index.reshape({-1})).view({index.size(0), index.size(1), y_ext.size(1)});
  }

  torch::Tensor gram(const torch::Tensor& y) const {
    auto g = p_.gram_of ? p_.gram_of(y) : torch::mm(y.t(), y);
    g = 0.5 * (g + g.t());
    return g + p_.regularization * torch::eye(y.size(1), y.options());
  }

  void solve(const Side& side, torch::Tensor& x, const torch::Tensor& y) const {
    const int64_t f = y.size(1);
    const auto g = gram(y);
    const auto y_ext = with_zero_row(y);
    const auto dtype = y.scalar_type();
    if (side.empty_rows.numel() > 0) x.index_fill_(0, side.empty_rows, 0);

    if (p_.binary) {
      // X = (P Y) (YᵀY + λI)⁻¹, the inverse from a Cholesky factor in double.
      const auto g64 = g.to(torch::kFloat64);
      const auto chol = torch::linalg_cholesky_ex(g64);
      if (std::get<1>(chol).item<int64_t>() != 0)
        throw Error(concat("implicit ALS: YᵀY + λI is not positive definite (regularization ", p_.regularization,
                           ", factors ", f, "); use regularization > 0"));
      const auto inverse = torch::cholesky_inverse(std::get<0>(chol)).to(dtype);
      auto b = torch::zeros_like(x);
      for (const auto& bucket : side.buckets)
        for_chunks(bucket, f, [&](const torch::Tensor& rows, const torch::Tensor& index, const torch::Tensor&,
                                  const torch::Tensor&) { b.index_copy_(0, rows, gather(y_ext, index).sum(1)); });
      x.copy_(torch::mm(b, inverse));
      return;
    }

    for (const auto& bucket : side.buckets)
      for_chunks(bucket, f, [&](const torch::Tensor& rows, const torch::Tensor& index, const torch::Tensor& conf32,
                                const torch::Tensor& cm1_32) {
        const auto yb = gather(y_ext, index);  // [B, width, f]
        const auto conf = conf32.to(dtype), cm1 = cm1_32.to(dtype);
        // (YᵀY + λI + Ybᵀ diag(c − 1) Yb) v for each row's v.
        const auto apply = [&](const torch::Tensor& v) {
          const auto t = torch::bmm(yb, v.unsqueeze(2)).squeeze(2);
          return torch::mm(v, g) + torch::bmm(yb.transpose(1, 2), (cm1 * t).unsqueeze(2)).squeeze(2);
        };
        auto xb = x.index_select(0, rows);
        if (p_.solver == AlsSolver::Cholesky) {
          const auto a = g.unsqueeze(0) + torch::bmm(yb.transpose(1, 2), yb * cm1.unsqueeze(2));
          const auto b = torch::bmm(yb.transpose(1, 2), conf.unsqueeze(2));
          const auto chol = torch::linalg_cholesky_ex(a);
          if ((std::get<1>(chol) != 0).any().item<bool>())
            throw Error(concat("implicit ALS: a row's normal equations are not positive definite (regularization ",
                               p_.regularization, "); raise regularization (or lower alpha)"));
          x.index_copy_(0, rows, torch::cholesky_solve(b, std::get<0>(chol)).squeeze(2));
          return;
        }
        // r = b − A x = Σ c y − A x.
        auto r = torch::bmm(yb.transpose(1, 2), conf.unsqueeze(2)).squeeze(2) - apply(xb);
        auto p = r.clone();
        auto rs = (r * r).sum(1);
        auto active = rs >= 1e-20;
        for (int64_t step = 0; step < p_.cg_steps; ++step) {
          const auto ap = apply(p);
          const auto pap = (p * ap).sum(1);
          active = active & (pap > 0);
          const auto alpha = torch::where(active, rs / torch::where(active, pap, torch::ones_like(pap)),
                                          torch::zeros_like(pap));
          xb = xb + alpha.unsqueeze(1) * p;
          r = r - alpha.unsqueeze(1) * ap;
          const auto rs_new = (r * r).sum(1);
          active = active & (rs_new >= 1e-20);
          const auto beta = torch::where(active, rs_new / rs, torch::zeros_like(rs));
          p = r + beta.unsqueeze(1) * p;
          rs = torch::where(active, rs_new, rs);
        }
        x.index_copy_(0, rows, xb);
      });
  }

  const AlsProblem& p_;
  torch::Device device_;
  Side users_, items_;
};

} // namespace detail
} // namespace rectrain
