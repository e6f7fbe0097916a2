#pragma once
// The CPU implicit-ALS solver, on Eigen. Internal to fit_implicit_als.
//
// Solving one side (say users, item factors Y fixed) means, for every user
// u with items I(u) and confidences c_ui,
//     (YᵀY + λI + Σ_{i∈I(u)} (c_ui − 1) y_i y_iᵀ) x_u = Σ_{i∈I(u)} c_ui y_i.
// - Every c = 1 (the recipe's binary case): all users share the matrix
//   A = YᵀY + λI, so X = (P Y) A⁻¹ with P the 0/1 matrix: one sparse sum of
//   rows per user, one f×f factorisation, one GEMM. Exact, and cheaper than
//   any iterative method.
// - Otherwise conjugate gradient, warm-started from the previous factors,
//   applying the matrix as YᵀY p + Σ (c − 1)(y_iᵀp) y_i (the YᵀY trick of
//   Takács et al.: no per-user f×f matrix), in the eigenbasis of YᵀY + λI,
//   where that product is diagonal. Users are solved in batches of similar
//   degree, and each user's rows of Y are copied once into a contiguous
//   block that every CG pass then reads with the vector kernel of
//   confidence_pass.hpp, for the CPU's ISA.
// - Or, on request, an exact per-row Cholesky solve.

#include <rectrain/als/als_problem.hpp>
#include <rectrain/als/confidence_pass.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/huge_pages.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Dense>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace rectrain {
namespace detail {

/// Rows with at least one nonzero, longest first (ties by index), so the
/// heaviest rows start first and the dynamic split ends evenly.
inline std::vector<int64_t> rows_by_degree(const CsrMatrix& m) {
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(m.rows));
  for (int64_t r = 0; r < m.rows; ++r)
    if (ptr[r + 1] > ptr[r]) order.push_back(r);
  std::stable_sort(order.begin(), order.end(),
                   [ptr](int64_t a, int64_t b) { return ptr[a + 1] - ptr[a] > ptr[b + 1] - ptr[b]; });
  return order;
}

/// Contiguous ranges of rows holding about `target` nonzeros each (at least
/// one row): tasks for loops whose cost is proportional to nonzeros.
inline std::vector<int64_t> nnz_balanced_ranges(const CsrMatrix& m, int64_t target) {
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  std::vector<int64_t> bounds{0};
  int64_t since = 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    since += ptr[r + 1] - ptr[r] + 1;
    if (since >= target) {
      bounds.push_back(r + 1);
      since = 0;
    }
  }
  if (bounds.back() != m.rows) bounds.push_back(m.rows);
  return bounds;
}

/// Σ_all cells c (p − xᵀy)² + λ(‖X‖² + ‖Y‖²), computed as
/// tr(XᵀX YᵀY) + Σ_nonzeros [c (1 − s)² − s²] + λ(…), s = x_uᵀy_i. Reads
/// only the users' side of the problem.
template <class T>
double als_objective(const AlsProblem& p, const torch::Tensor& x, const torch::Tensor& y) {
  using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  const auto xtx = torch::mm(x.t(), x), yty = torch::mm(y.t(), y);
  double total = (xtx.to(torch::kFloat64) * yty.to(torch::kFloat64)).sum().item<double>();
  total += p.regularization * (x.pow(2).sum(torch::kFloat64).item<double>() +
                               y.pow(2).sum(torch::kFloat64).item<double>());
  const CsrMatrix& m = p.users.m;
  const int64_t f = x.size(1);
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const float* conf = p.users.confidence.defined() ? p.users.confidence.data_ptr<float>() : nullptr;
  const T* xp = x.data_ptr<T>();
  const T* yp = y.data_ptr<T>();
  // Fixed ranges and an in-order sum of their partials: the same result
  // for any thread count.
  const auto bounds = nnz_balanced_ranges(m, 1 << 16);
  std::vector<double> partial(bounds.size() - 1, 0.0);
  parallel_tasks<int>(static_cast<int64_t>(partial.size()), [&](int64_t task, int&) {
    double sum = 0;
    for (int64_t u = bounds[static_cast<size_t>(task)]; u < bounds[static_cast<size_t>(task) + 1]; ++u) {
      const ConstVectorMap xu(xp + u * f, f);
      for (int64_t k = ptr[u]; k < ptr[u + 1]; ++k) {
        const double s = static_cast<double>(xu.dot(ConstVectorMap(yp + int64_t{idx[k]} * f, f)));
        const double c = conf ? conf[k] : 1.0;
        sum += c * (1 - s) * (1 - s) - s * s;
      }
    }
    partial[static_cast<size_t>(task)] = sum;
  });
  for (double v : partial) total += v;
  return total;
}

template <class T>
class CpuAlsSolver {
 public:
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using VectorMap = Eigen::Map<Vector>;
  using ConstVectorMap = Eigen::Map<const Vector>;
  using ConstRowMatrixMap = Eigen::Map<const RowMatrix>;

  /// The degree orders serve the per-row solvers only: the shared solve of
  /// the binary case does not need them.
  explicit CpuAlsSolver(const AlsProblem& problem) : p_(problem) {
    if (!problem.binary) {
      user_order_ = rows_by_degree(problem.users.m);
      item_order_ = rows_by_degree(problem.items.m);
    }
  }

  /// x_u for every user given item factors y ([items, f]); x ([users, f])
  /// is read as the CG starting point and overwritten.
  void solve_users(torch::Tensor& x, const torch::Tensor& y) { solve(p_.users, user_order_, x, y, user_scratch_); }
  void solve_items(torch::Tensor& y, const torch::Tensor& x) { solve(p_.items, item_order_, y, x, item_scratch_); }

  double objective(const torch::Tensor& x, const torch::Tensor& y) const { return als_objective<T>(p_, x, y); }

 private:
  // Short rows are grouped until their copied rows reach this size (they
  // then stay in L2 across the CG steps).
  static constexpr int64_t kBlockBytes = 384 * 1024;
  static constexpr int64_t kMaxBatch = 32;
  // The CG pass reads each chunk of rows twice (confidence_pass.hpp): about
  // 16 KiB of them, so that the second read finds them in L1.
  static int64_t chunk_rows(int64_t f) {
    return std::clamp<int64_t>(16384 / (f * static_cast<int64_t>(sizeof(T))), 8, 64);
  }

  struct CgWorkspace {
    Matrix x, r, p, ap;
    Vector t;
    std::vector<T, Eigen::aligned_allocator<T>> block;  // rows start aligned when f * sizeof(T) % 64 == 0
    std::vector<int64_t> offset;
    std::vector<T> rs;
    std::vector<char> active;
  };

  /// Buffers kept across iterations, per side: fresh pages of this size
  /// every half-step would cost their zeroing each time.
  struct Scratch {
    torch::Tensor fixed;   ///< like the fixed side: its rotated rows (CG)
    torch::Tensor solved;  ///< like the solved side: P Y (binary), rotated rows (CG)
  };

  void solve(const AlsSide& side, const std::vector<int64_t>& order, torch::Tensor& x, const torch::Tensor& y,
             Scratch& scratch) {
    if (p_.binary)
      solve_shared(side, x, y, scratch);
    else if (p_.solver == AlsSolver::Cholesky)
      solve_cholesky(side, order, x, y);
    else
      solve_cg(side, order, x, y, scratch);
  }

  /// `scratch`, (re)allocated to the shape and type of `like`.
  static torch::Tensor& scratch_like(torch::Tensor& scratch, const torch::Tensor& like) {
    if (!scratch.defined() || scratch.sizes() != like.sizes() || scratch.scalar_type() != like.scalar_type())
      scratch = empty_huge_pages(like.sizes(), like.options());
    return scratch;
  }

  /// YᵀY + λI as an Eigen matrix (GEMM through LibTorch's BLAS),
  /// symmetrised against rounding.
  Eigen::MatrixXd gram(const torch::Tensor& y) const {
    const int64_t f = y.size(1);
    const torch::Tensor g = (p_.gram_of ? p_.gram_of(y) : torch::mm(y.t(), y)).to(torch::kFloat64).contiguous();
    Eigen::MatrixXd a = Eigen::Map<const Eigen::MatrixXd>(g.data_ptr<double>(), f, f);
    a = (0.5 * (a + a.transpose())).eval();
    a.diagonal().array() += p_.regularization;
    return a;
  }

  static void zero_empty_rows(const CsrMatrix& m, torch::Tensor& x) {
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    T* xp = x.data_ptr<T>();
    const int64_t f = x.size(1);
    for (int64_t r = 0; r < m.rows; ++r)
      if (ptr[r + 1] == ptr[r]) std::fill(xp + r * f, xp + (r + 1) * f, T(0));
  }

  // ---- every confidence 1: X = (P Y) (YᵀY + λI)⁻¹ -------------------------
  void solve_shared(const AlsSide& side, torch::Tensor& x, const torch::Tensor& y, Scratch& scratch) {
    const CsrMatrix& m = side.m;
    const int64_t f = y.size(1);
    torch::Tensor& b = scratch_like(scratch.solved, x);
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    const int32_t* idx = m.indices.data_ptr<int32_t>();
    const T* yp = y.data_ptr<T>();
    T* bp = b.data_ptr<T>();
    const auto bounds = nnz_balanced_ranges(m, 1 << 15);
    parallel_tasks<int>(static_cast<int64_t>(bounds.size()) - 1, [&](int64_t task, int&) {
      for (int64_t r = bounds[static_cast<size_t>(task)]; r < bounds[static_cast<size_t>(task) + 1]; ++r) {
        VectorMap acc(bp + r * f, f);
        acc.setZero();
        int64_t k = ptr[r];
        const auto row = [&](int64_t j) { return ConstVectorMap(yp + int64_t{idx[j]} * f, f); };
        // Four rows per pass over the accumulator: a quarter of its loads
        // and stores.
        for (; k + 4 <= ptr[r + 1]; k += 4) acc += (row(k) + row(k + 1)) + (row(k + 2) + row(k + 3));
        for (; k < ptr[r + 1]; ++k) acc += row(k);
      }
    });
    const Eigen::MatrixXd a = gram(y);
    Eigen::LLT<Eigen::MatrixXd> llt(a);
    if (llt.info() != Eigen::Success)
      throw Error(concat("implicit ALS: YᵀY + λI is not positive definite (regularization ", p_.regularization,
                         ", factors ", f, "); use regularization > 0"));
    const Eigen::MatrixXd inverse = llt.solve(Eigen::MatrixXd::Identity(f, f));
    const auto inv = torch::from_blob(const_cast<double*>(inverse.data()), {f, f}, torch::kFloat64)
                         .to(x.scalar_type());
    torch::mm_out(x, b, inv);
  }

  // ---- conjugate gradient ---------------------------------------------------
  /// A range of the degree order solved together: short rows in groups (so
  /// YᵀY meets their vectors in one GEMM), a row longer than kBlockBytes
  /// alone.
  std::vector<std::pair<int64_t, int64_t>> make_batches(const CsrMatrix& m, const std::vector<int64_t>& order,
                                                        int64_t f) const {
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    const int64_t row_bytes = f * static_cast<int64_t>(sizeof(T));
    std::vector<std::pair<int64_t, int64_t>> batches;
    const int64_t n = static_cast<int64_t>(order.size());
    for (int64_t i = 0; i < n;) {
      int64_t j = i, bytes = 0;
      do {
        bytes += (ptr[order[static_cast<size_t>(j)] + 1] - ptr[order[static_cast<size_t>(j)]]) * row_bytes;
        ++j;
      } while (j < n && j - i < kMaxBatch &&
               bytes + (ptr[order[static_cast<size_t>(j)] + 1] - ptr[order[static_cast<size_t>(j)]]) * row_bytes <=
                   kBlockBytes);
      batches.emplace_back(i, j);
      i = j;
    }
    return batches;
  }

  /// Copies rows idx[0..len) of y into dst, prefetching about 6 KiB of rows
  /// ahead: the gather is the one pass that reads far memory, and with only
  /// two rows ahead (f = 128) it waited on memory for most of its time.
  static void gather_rows(const T* y, int64_t f, const int32_t* idx, int64_t len, const int32_t* idx_end, T* dst) {
    const int64_t bytes = f * static_cast<int64_t>(sizeof(T));
    const int64_t ahead = std::max<int64_t>(2, 6144 / bytes);
    for (int64_t q = 0; q < len; ++q) {
      if (idx + q + ahead < idx_end) {
        const char* next = reinterpret_cast<const char*>(y + int64_t{idx[q + ahead]} * f);
#if defined(__GNUC__) || defined(__clang__)
        for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(next + b);
#else
        (void)next;
#endif
      }
      std::memcpy(dst + q * f, y + int64_t{idx[q]} * f, static_cast<size_t>(bytes));  // libc's copy: the CPU's widest
    }
  }

  /// Conjugate gradients on the k rows in w.x (their starting points, in the
  /// eigenbasis, where YᵀY + λI is diag(`lambda`)), `steps` at most, each
  /// row stopping on its own; `pass(j, residual, v, acc)` adds row j's data
  /// term (see solve_cg).
  template <typename Pass>
  static void cg_rows(CgWorkspace& w, int64_t k, const Vector& lambda, int64_t steps, const Pass& pass) {
    const auto apply_gram = [&](const Matrix& in, Matrix& out) { out.noalias() = lambda.asDiagonal() * in; };
    // r = b − A x, as −(YᵀY + λI) x + Σ (c − (c − 1) yᵀx) y.
    apply_gram(w.x, w.r);
    w.r = -w.r;
    for (int64_t j = 0; j < k; ++j) pass(j, true, w.x.col(j).data(), w.r.col(j).data());
    w.p = w.r;
    w.rs.resize(static_cast<size_t>(k));
    w.active.assign(static_cast<size_t>(k), 1);
    for (int64_t j = 0; j < k; ++j) {
      w.rs[static_cast<size_t>(j)] = w.r.col(j).squaredNorm();
      if (w.rs[static_cast<size_t>(j)] < T(1e-20)) w.active[static_cast<size_t>(j)] = 0;
    }
    for (int64_t step = 0; step < steps; ++step) {
      apply_gram(w.p, w.ap);
      bool any = false;
      for (int64_t j = 0; j < k; ++j) {
        if (!w.active[static_cast<size_t>(j)]) continue;
        pass(j, false, w.p.col(j).data(), w.ap.col(j).data());
        const T pap = w.p.col(j).dot(w.ap.col(j));
        T& rs = w.rs[static_cast<size_t>(j)];
        if (!(pap > 0)) {
          w.active[static_cast<size_t>(j)] = 0;
          continue;
        }
        const T alpha = rs / pap;
        w.x.col(j) += alpha * w.p.col(j);
        w.r.col(j) -= alpha * w.ap.col(j);
        const T rs_new = w.r.col(j).squaredNorm();
        if (rs_new < T(1e-20)) {
          w.active[static_cast<size_t>(j)] = 0;
          continue;
        }
        w.p.col(j) = w.r.col(j) + (rs_new / rs) * w.p.col(j);
        rs = rs_new;
        any = true;
      }
      if (!any) break;
    }
  }

  void solve_cg(const AlsSide& side, const std::vector<int64_t>& order, torch::Tensor& x, const torch::Tensor& y,
                Scratch& scratch) {
    const CsrMatrix& m = side.m;
    const int64_t f = y.size(1);
    const int64_t steps = p_.cg_steps;
    const Eigen::MatrixXd g64 = gram(y);
    zero_empty_rows(m, x);  // the exact solution for a row without nonzeros
    // CG applies YᵀY + λI to every row's vectors 1 + steps times. In the
    // eigenbasis of that matrix, G = Q Λ Qᵀ, it is diagonal: solve there
    // for z = Qᵀx against rotated rows Qᵀy_i (CG is invariant under
    // rotations: the same iterates up to rounding). The rotations, of the
    // fixed side and of this side in and out, are three GEMMs through
    // LibTorch's BLAS, which picks its kernel for the CPU at run time, in
    // place of (1 + steps) f² per row in Eigen (whose vector width is the
    // build's: SSE2 without -march).
    const auto eig = torch::linalg_eigh(torch::from_blob(const_cast<double*>(g64.data()), {f, f}, torch::kFloat64));
    const auto values = std::get<0>(eig).contiguous();
    const Vector lambda = Eigen::Map<const Eigen::VectorXd>(values.data_ptr<double>(), f).template cast<T>();
    const auto q = std::get<1>(eig).to(y.scalar_type()).contiguous();
    torch::Tensor& source = scratch_like(scratch.fixed, y);
    torch::mm_out(source, y, q);  // rows y_iᵀQ = (Qᵀy_i)ᵀ
    torch::Tensor& z = scratch_like(scratch.solved, x);
    torch::mm_out(z, x, q);
    const auto batches = make_batches(m, order, f);
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    const int32_t* idx = m.indices.data_ptr<int32_t>();
    const float* conf = side.confidence.data_ptr<float>();
    const T* yp = source.data_ptr<T>();
    T* xp = z.data_ptr<T>();
    const ConfidencePass<T> kernel = confidence_pass_for<T>(f, cpu_isa());
    const int64_t chunk = chunk_rows(f);

    parallel_tasks<CgWorkspace>(static_cast<int64_t>(batches.size()), [&](int64_t task, CgWorkspace& w) {
      const int64_t first = batches[static_cast<size_t>(task)].first;
      const int64_t k = batches[static_cast<size_t>(task)].second - first;
      const auto row_of = [&](int64_t j) { return order[static_cast<size_t>(first + j)]; };
      w.offset.assign(static_cast<size_t>(k + 1), 0);
      for (int64_t j = 0; j < k; ++j)
        w.offset[static_cast<size_t>(j + 1)] = w.offset[static_cast<size_t>(j)] + ptr[row_of(j) + 1] - ptr[row_of(j)];
      w.block.resize(static_cast<size_t>(w.offset.back() * f));
      w.t.resize(chunk);

      // acc += Σ_i s_i y_i over row j's nonzeros, s_i = c_i − (c_i − 1) y_iᵀv
      // (the residual pass, which also copies the rows into the block) or
      // s_i = (c_i − 1) y_iᵀv. Chunks of rows small enough that the second
      // read of each row finds it in L1.
      const auto pass = [&](int64_t j, bool residual, const T* v, T* acc) {
        const int64_t row = row_of(j), n = ptr[row + 1] - ptr[row];
        const float* c = conf + ptr[row];
        T* base = w.block.data() + w.offset[static_cast<size_t>(j)] * f;
        for (int64_t s = 0; s < n; s += chunk) {
          const int64_t len = std::min(chunk, n - s);
          if (residual) gather_rows(yp, f, idx + ptr[row] + s, len, idx + ptr[row + 1], base + s * f);
          if (kernel) {
            kernel(base + s * f, len, f, c + s, residual, v, acc);
            continue;
          }
          const ConstRowMatrixMap rows(base + s * f, len, f);
          auto t = w.t.head(len);
          t.noalias() = rows * ConstVectorMap(v, f);
          if (residual)
            for (int64_t e = 0; e < len; ++e) t[e] = T(c[s + e]) - T(c[s + e] - 1) * t[e];
          else
            for (int64_t e = 0; e < len; ++e) t[e] *= T(c[s + e] - 1);
          VectorMap(acc, f).noalias() += rows.transpose() * t;
        }
      };
      w.x.resize(f, k);
      for (int64_t j = 0; j < k; ++j) w.x.col(j) = ConstVectorMap(xp + row_of(j) * f, f);
      cg_rows(w, k, lambda, steps, pass);
      for (int64_t j = 0; j < k; ++j) VectorMap(xp + row_of(j) * f, f) = w.x.col(j);
    });
    torch::mm_out(x, z, q.t());  // back: x = Q z (empty rows: 0 in, 0 out)
  }

  // ---- exact per-row solve --------------------------------------------------
  static constexpr int64_t kCholeskyChunkRows = 64;
  struct CholeskyWorkspace {
    Matrix a;
    Vector b, c;
    std::vector<T> block;
  };

  void solve_cholesky(const AlsSide& side, const std::vector<int64_t>& order, torch::Tensor& x,
                      const torch::Tensor& y) {
    const CsrMatrix& m = side.m;
    const int64_t f = y.size(1);
    const Matrix g = gram(y).template cast<T>();
    zero_empty_rows(m, x);
    const int64_t* ptr = m.indptr.data_ptr<int64_t>();
    const int32_t* idx = m.indices.data_ptr<int32_t>();
    const float* conf = side.confidence.data_ptr<float>();
    const T* yp = y.data_ptr<T>();
    T* xp = x.data_ptr<T>();
    parallel_tasks<CholeskyWorkspace>(static_cast<int64_t>(order.size()), [&](int64_t task, CholeskyWorkspace& w) {
      const int64_t row = order[static_cast<size_t>(task)];
      w.a = g;
      w.b.setZero(f);
      for (int64_t s = ptr[row]; s < ptr[row + 1]; s += kCholeskyChunkRows) {
        const int64_t len = std::min(kCholeskyChunkRows, ptr[row + 1] - s);
        w.block.resize(static_cast<size_t>(len * f));
        for (int64_t q = 0; q < len; ++q) std::copy_n(yp + int64_t{idx[s + q]} * f, f, w.block.data() + q * f);
        const ConstRowMatrixMap block(w.block.data(), len, f);
        w.c = Eigen::Map<const Eigen::VectorXf>(conf + s, len).template cast<T>();
        w.b.noalias() += block.transpose() * w.c;
        w.c.array() -= T(1);
        w.a.noalias() += block.transpose() * (w.c.asDiagonal() * block);
      }
      Eigen::LLT<Matrix> llt(w.a);
      if (llt.info() != Eigen::Success)
        throw Error(concat("implicit ALS: the normal equations of row ", row,
                           " are not positive definite (regularization ", p_.regularization,
                           "); raise regularization (or lower alpha)"));
      VectorMap(xp + row * f, f) = llt.solve(w.b);
    });
  }

  const AlsProblem& p_;
  std::vector<int64_t> user_order_, item_order_;
  Scratch user_scratch_, item_scratch_;
};

} // namespace detail
} // namespace rectrain
