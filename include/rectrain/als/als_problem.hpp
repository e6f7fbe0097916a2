#pragma once
// The validated input both ALS solvers share: the matrix in both
// orientations with per-nonzero confidences, and the solve settings.
// Internal to fit_implicit_als (see implicit_als.hpp).

#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>

namespace rectrain {

/// How each row's normal equations are solved when confidences vary.
/// (With every confidence 1 all rows share one matrix and the exact
/// all-rows solve is used whatever this says.)
enum class AlsSolver : uint8_t {
  ConjugateGradient,  ///< `cg_steps` warm-started CG steps per row (fast)
  Cholesky,           ///< exact per-row solve, O(n f^2 + f^3) per row
};

namespace detail {

/// One orientation of the problem: solve a factor for every row of `m`
/// given the factors of its columns. `confidence` runs parallel to
/// m.indices; undefined when every confidence is 1.
struct AlsSide {
  CsrMatrix m;
  torch::Tensor confidence;  ///< [nnz] float32, or undefined (binary)
};

struct AlsProblem {
  AlsSide users;  ///< rows: users, columns: items
  AlsSide items;  ///< the transpose
  bool binary = true;
  double regularization = 0.01;
  AlsSolver solver = AlsSolver::ConjugateGradient;
  int64_t cg_steps = 3;
  double total_confidence = 0;  ///< sum of c over all rows x cols cells
  /// YᵀY of the fixed side's factors; unset: torch::mm(y.t(), y). The
  /// sharded fit (dist/sharded_als.hpp) sums each rank's rows' part.
  std::function<torch::Tensor(const torch::Tensor& y)> gram_of;
};

/// Runs fn(task, workspace) for task in [0, n) on LibTorch's intra-op
/// threads, each thread taking the next task when it is done with one:
/// rows have heavy-tailed degrees, so a static split would leave threads
/// idle. A Workspace is made once per thread. Results must not depend on
/// which thread ran a task (they do not here: a task writes its own rows).
template <class Workspace, class Fn>
void parallel_tasks(int64_t n, Fn&& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Workspace workspace;
    for (int64_t task = next.fetch_add(1, std::memory_order_relaxed); task < n;
         task = next.fetch_add(1, std::memory_order_relaxed))
      fn(task, workspace);
  });
}

/// Sets LibTorch's intra-op thread count for a scope (0: leave it).
class ThreadCountGuard {
 public:
  explicit ThreadCountGuard(int64_t threads) : previous_(at::get_num_threads()) {
    if (threads > 0 && threads != previous_) {
      at::set_num_threads(static_cast<int>(threads));
      changed_ = true;
    }
  }
  ~ThreadCountGuard() {
    if (changed_) at::set_num_threads(previous_);
  }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int previous_;
  bool changed_ = false;
};

} // namespace detail
} // namespace rectrain
