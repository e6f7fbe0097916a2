#pragma once
// Implicit-feedback alternating least squares (Hu, Koren & Volinsky 2008):
// factors X (rows) and Y (columns) minimising
//     Σ_{all cells} c_ui (p_ui − x_uᵀy_i)² + λ (Σ_u ‖x_u‖² + Σ_i ‖y_i‖²),
// p = 1 and c = 1 + alpha·r on the matrix's nonzeros (r the stored value),
// p = 0 and c = 1 elsewhere. alpha = 0 (the default, the recipe's choice)
// makes every confidence 1: then every row shares one matrix and each
// half-step is solved exactly for all rows at once.
//
// Two implementations of the same mathematics:
// - AlsBackend::Eigen: the CPU solver (cpu_solver.hpp), parallel over
//   LibTorch's intra-op threads.
// - AlsBackend::TensorOps: LibTorch ops only (device_solver.hpp), so it
//   runs on CUDA as well as on CPU.
//
// Rows or columns without nonzeros get a zero factor: it is the exact
// minimiser of their terms (they have no positive cell).

#include <rectrain/als/als_problem.hpp>
#include <rectrain/als/cpu_solver.hpp>
#include <rectrain/als/device_solver.hpp>
#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/huge_pages.hpp>
#include <rectrain/core/random.hpp>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace rectrain {

enum class AlsBackend : uint8_t {
  Auto,       ///< Eigen on CPU, TensorOps on any other device
  Eigen,      ///< the CPU solver (CPU only)
  TensorOps,  ///< LibTorch ops on `device`
};

/// One ALS iteration (a user half-step and an item half-step).
struct AlsIterationStats {
  int64_t iteration = 0;  ///< 1-based
  double seconds = 0;     ///< wall time of both half-steps (objective excluded)
  /// The objective after the iteration and the same divided by the sum of
  /// confidences over all cells (the figure `implicit` reports); NaN unless
  /// ImplicitAlsOptions::compute_loss.
  double objective = std::numeric_limits<double>::quiet_NaN();
  double loss = std::numeric_limits<double>::quiet_NaN();
};

struct ImplicitAlsOptions {
  /* implicit */ ImplicitAlsOptions(int64_t factors = 64) : factors_(factors) {}
  /// Length of each factor vector.
  TORCH_ARG(int64_t, factors);
  /// λ, on both sides. Must be >= 0 (> 0 unless YᵀY is invertible).
  TORCH_ARG(double, regularization) = 0.01;
  /// Confidence of a nonzero: 1 + alpha * (stored value). 0: binary.
  TORCH_ARG(double, alpha) = 0.0;
  TORCH_ARG(int64_t, iterations) = 15;
  /// Per-row solver when confidences vary (ignored when all are 1).
  TORCH_ARG(AlsSolver, solver) = AlsSolver::ConjugateGradient;
  /// CG steps per row and half-step, warm-started from the last factors.
  TORCH_ARG(int64_t, cg_steps) = 3;
  /// kFloat32 or kFloat64.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// Intra-op threads for the fit (0: keep at::get_num_threads()).
  TORCH_ARG(int64_t, threads) = 0;
  /// Seeds the initial factors: uniform in [0, init_scale), a stream per row.
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(double, init_scale) = 0.01;
  TORCH_ARG(AlsBackend, backend) = AlsBackend::Auto;
  /// Where the TensorOps backend runs (the factors are returned there).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Compute the exact objective after every iteration.
  TORCH_ARG(bool, compute_loss) = false;
  /// Called after every iteration (for progress output).
  TORCH_ARG(std::function<void(const AlsIterationStats&)>, on_iteration) = nullptr;
};

struct AlsFactors {
  torch::Tensor user;  ///< [rows, factors]: x_u
  torch::Tensor item;  ///< [cols, factors]: y_i
  std::vector<AlsIterationStats> history;
};

namespace detail {

/// Checks that m is a well-formed CSR matrix (any violation names the
/// field or the first bad row) and computes its confidences: the users'
/// side of the problem, without the transpose (all an objective needs).
inline AlsProblem make_user_side(const CsrMatrix& m, const ImplicitAlsOptions& o) {
  const auto fail = [](const std::string& what) { throw TensorError("implicit ALS matrix: " + what); };
  if (m.rows <= 0 || m.cols <= 0) fail(concat("empty matrix [", m.rows, ", ", m.cols, "]"));
  if (!m.indptr.defined() || m.indptr.dim() != 1 || m.indptr.scalar_type() != torch::kInt64 ||
      !m.indptr.device().is_cpu() || m.indptr.size(0) != m.rows + 1 || !m.indptr.is_contiguous())
    fail(concat("indptr must be a contiguous int64 CPU tensor of rows + 1 = ", m.rows + 1, " entries"));
  if (!m.indices.defined() || m.indices.dim() != 1 || m.indices.scalar_type() != torch::kInt32 ||
      !m.indices.device().is_cpu() || !m.indices.is_contiguous())
    fail("indices must be a contiguous 1-D int32 CPU tensor");
  if (!m.values.defined() || m.values.dim() != 1 || m.values.scalar_type() != torch::kFloat32 ||
      !m.values.device().is_cpu() || m.values.size(0) != m.indices.size(0) || !m.values.is_contiguous())
    fail("values must be a contiguous float32 CPU tensor as long as indices");
  const int64_t nnz = m.indices.size(0);
  if (nnz == 0) fail(concat("no nonzeros in the ", m.rows, " x ", m.cols, " matrix"));
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  if (ptr[0] != 0 || ptr[m.rows] != nnz) fail(concat("indptr must run from 0 to nnz = ", nnz));
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const auto bad_range = [&](int64_t r) { return ptr[r + 1] < ptr[r] || ptr[r] < 0 || ptr[r + 1] > nnz; };
  const auto bad_column = [&](int64_t r, int64_t k) {
    return idx[k] < 0 || idx[k] >= m.cols || (k > ptr[r] && idx[k] <= idx[k - 1]);
  };
  // In parallel, then the first bad row (the same report for any thread count).
  std::atomic<int64_t> first_bad{m.rows};
  at::parallel_for(0, m.rows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end && r < first_bad.load(std::memory_order_relaxed); ++r) {
      bool bad = bad_range(r);
      for (int64_t k = ptr[r]; !bad && k < ptr[r + 1]; ++k) bad = bad_column(r, k);
      if (bad) {
        int64_t seen = first_bad.load();
        while (r < seen && !first_bad.compare_exchange_weak(seen, r)) {
        }
        return;
      }
    }
  });
  if (const int64_t r = first_bad.load(); r < m.rows) {
    if (bad_range(r)) fail(concat("indptr decreases or leaves [0, nnz] at row ", r));
    for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k)
      if (bad_column(r, k)) fail(concat("row ", r, ": column ", idx[k], " out of [0, ", m.cols, ") or not ascending"));
  }

  AlsProblem p;
  p.regularization = o.regularization();
  p.solver = o.solver();
  p.cg_steps = o.cg_steps();
  p.users.m = m;
  if (o.alpha() != 0) {
    auto confidence = m.values * static_cast<float>(o.alpha()) + 1.0f;  // float: no nnz-long double temporaries
    const auto bad = ~torch::isfinite(confidence) | (confidence <= 0);
    if (bad.any().item<bool>()) {
      const int64_t k = bad.nonzero()[0][0].item<int64_t>();
      const int64_t row = std::upper_bound(ptr, ptr + m.rows + 1, k) - ptr - 1;
      fail(concat("confidence 1 + alpha * value = 1 + ", o.alpha(), " * ", m.values[k].item<float>(),
                  " at row ", row, ", column ", idx[k], " is not a finite positive number"));
    }
    p.binary = (confidence == 1).all().item<bool>();
    if (!p.binary) p.users.confidence = confidence;
  } else if (!torch::isfinite(m.values).all().item<bool>()) {
    fail("values contain NaN or infinity");
  }
  const double cells = static_cast<double>(m.rows) * static_cast<double>(m.cols);
  p.total_confidence = cells - static_cast<double>(nnz) +
                       (p.binary ? static_cast<double>(nnz) : p.users.confidence.sum(torch::kFloat64).item<double>());
  return p;
}

/// The whole problem: the users' side and its transpose.
inline AlsProblem make_als_problem(const CsrMatrix& m, const ImplicitAlsOptions& o) {
  AlsProblem p = make_user_side(m, o);
  // Transposing a matrix whose values are the confidences carries them
  // along to the items' side.
  CsrMatrix weighted = m;
  if (!p.binary) weighted.values = p.users.confidence;
  p.items.m = weighted.transpose();
  if (!p.binary) p.items.confidence = p.items.m.values;
  return p;
}

/// Uniform [0, scale) factors, one random stream per (side, row): the same
/// for any thread count.
inline torch::Tensor initial_factors(int64_t rows, int64_t f, uint64_t seed, uint64_t side, double scale) {
  auto out = torch::empty({rows, f}, torch::kFloat64);
  double* p = out.data_ptr<double>();
  at::parallel_for(0, rows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      FastRng rng(stream_seed(seed, side, static_cast<uint64_t>(r)));
      for (int64_t j = 0; j < f; ++j) p[r * f + j] = rng.uniform() * scale;
    }
  });
  return out;
}

inline void check_finite_factors(const torch::Tensor& t, const char* side, int64_t iteration) {
  if (!torch::isfinite(t).all().item<bool>())
    throw Error(concat("implicit ALS diverged: ", side, " factors are not finite after iteration ", iteration,
                       " (lower alpha or raise regularization)"));
}

} // namespace detail

/// The float64 factors fit_implicit_als starts from, for `rows` rows of one
/// side (0: users, 1: items) with `options`' factors, seed and init_scale:
/// uniform in [0, init_scale), one random stream per row (the same for any
/// thread count). For a reference solver that must start where it does.
inline torch::Tensor initial_als_factors(int64_t rows, int side, const ImplicitAlsOptions& options) {
  return detail::initial_factors(rows, options.factors(), options.seed(), static_cast<uint64_t>(side),
                                 options.init_scale());
}

namespace detail {

/// Throws on options fit_implicit_als cannot use; returns the backend Auto
/// stands for.
inline AlsBackend check_implicit_als_options(const ImplicitAlsOptions& o) {
  if (o.factors() <= 0) throw Error(detail::concat("implicit ALS: factors must be > 0, got ", o.factors()));
  if (!(o.regularization() >= 0) || !std::isfinite(o.regularization()))
    throw Error(detail::concat("implicit ALS: regularization must be a finite number >= 0, got ", o.regularization()));
  if (!std::isfinite(o.alpha()) || o.alpha() < 0)
    throw Error(detail::concat("implicit ALS: alpha must be a finite number >= 0, got ", o.alpha()));
  if (o.iterations() < 0) throw Error(detail::concat("implicit ALS: iterations must be >= 0, got ", o.iterations()));
  if (o.cg_steps() <= 0) throw Error(detail::concat("implicit ALS: cg_steps must be > 0, got ", o.cg_steps()));
  if (o.dtype() != torch::kFloat32 && o.dtype() != torch::kFloat64)
    throw Error("implicit ALS: dtype must be kFloat32 or kFloat64");
  if (!(o.init_scale() >= 0) || !std::isfinite(o.init_scale()))
    throw Error(detail::concat("implicit ALS: init_scale must be a finite number >= 0, got ", o.init_scale()));
  const AlsBackend backend =
      o.backend() == AlsBackend::Auto ? (o.device().is_cpu() ? AlsBackend::Eigen : AlsBackend::TensorOps) : o.backend();
  if (backend == AlsBackend::Eigen && !o.device().is_cpu())
    throw Error(detail::concat("implicit ALS: the Eigen backend runs on CPU, not ", o.device().str()));
  return backend;
}

/// The starting factors of one side on the fit's device and type (huge
/// pages on CPU: factors are gathered row by row at random).
inline torch::Tensor place_initial_factors(int64_t rows, int side, const ImplicitAlsOptions& o) {
  const auto init = initial_factors(rows, o.factors(), o.seed(), static_cast<uint64_t>(side), o.init_scale());
  const auto options_on = torch::TensorOptions().dtype(o.dtype()).device(o.device());
  if (!o.device().is_cpu()) return init.to(options_on);
  auto t = empty_huge_pages(init.sizes(), options_on);
  t.copy_(init);
  return t;
}

/// The iterations of a fit: `half_steps(solver, it)` solves both sides;
/// the objective (from `solver` over `out`'s factors) and the callbacks as
/// the options say. Runs the backend's solver for `problem`.
template <typename HalfSteps>
void run_implicit_als(const AlsProblem& problem, const AlsProblem& objective_problem, AlsBackend backend,
                      const ImplicitAlsOptions& o, AlsFactors& out, HalfSteps&& half_steps) {
  const auto run = [&](auto& solver, auto& objective_solver) {
    for (int64_t it = 1; it <= o.iterations(); ++it) {
      const auto start = std::chrono::steady_clock::now();
      half_steps(solver, it);
      AlsIterationStats stats;
      stats.iteration = it;
      stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (o.compute_loss()) {
        stats.objective = objective_solver.objective(out.user, out.item);
        stats.loss = stats.objective / objective_problem.total_confidence;
      }
      out.history.push_back(stats);
      if (o.on_iteration()) o.on_iteration()(stats);
    }
  };
  const bool separate = &problem != &objective_problem;
  if (backend == AlsBackend::Eigen) {
    if (o.dtype() == torch::kFloat32) {
      CpuAlsSolver<float> solver(problem);
      if (!separate || !o.compute_loss()) return run(solver, solver);
      CpuAlsSolver<float> whole(objective_problem);
      run(solver, whole);
    } else {
      CpuAlsSolver<double> solver(problem);
      if (!separate || !o.compute_loss()) return run(solver, solver);
      CpuAlsSolver<double> whole(objective_problem);
      run(solver, whole);
    }
  } else {
    DeviceAlsSolver solver(problem, o.device());
    if (!separate || !o.compute_loss()) return run(solver, solver);
    DeviceAlsSolver whole(objective_problem, o.device());
    run(solver, whole);
  }
}

} // namespace detail

/// Fits implicit ALS to `matrix` (rows: users, columns: items).
inline AlsFactors fit_implicit_als(const CsrMatrix& matrix, const ImplicitAlsOptions& options = {}) {
  const auto& o = options;
  const AlsBackend backend = detail::check_implicit_als_options(o);
  detail::ThreadCountGuard threads(o.threads());
  const detail::AlsProblem problem = detail::make_als_problem(matrix, o);
  AlsFactors out;
  out.user = detail::place_initial_factors(matrix.rows, 0, o);
  out.item = detail::place_initial_factors(matrix.cols, 1, o);
  detail::run_implicit_als(problem, problem, backend, o, out, [&](auto& solver, int64_t it) {
    solver.solve_users(out.user, out.item);
    detail::check_finite_factors(out.user, "user", it);
    solver.solve_items(out.item, out.user);
    detail::check_finite_factors(out.item, "item", it);
  });
  return out;
}

/// The objective of given factors (the quantity ALS minimises; see the top
/// of this header), e.g. to compare runs. Factors on CPU or `device`.
inline double implicit_als_objective(const CsrMatrix& matrix, const torch::Tensor& user, const torch::Tensor& item,
                                     const ImplicitAlsOptions& options = {}) {
  const detail::AlsProblem problem = detail::make_user_side(matrix, options);
  if (user.dim() != 2 || item.dim() != 2 || user.size(0) != matrix.rows || item.size(0) != matrix.cols ||
      user.size(1) != item.size(1))
    throw TensorError(detail::concat("implicit_als_objective: factors ", user.sizes(), " and ", item.sizes(),
                                     " do not fit a ", matrix.rows, " x ", matrix.cols, " matrix"));
  const auto x = user.to(torch::kCPU, torch::kFloat64).contiguous();
  const auto y = item.to(torch::kCPU, torch::kFloat64).contiguous();
  return detail::als_objective<double>(problem, x, y);
}

} // namespace rectrain
