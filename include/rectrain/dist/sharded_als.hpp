#pragma once
// Implicit ALS over the ranks of a ProcessGroup: each rank solves its
// contiguous share of the users, then of the items; YᵀY (and XᵀX) is the
// all-reduced sum of each rank's share of the rows; after each half-step
// the solved side is all-gathered, so every rank holds both factor tables
// whole, as fit_implicit_als returns them. The factors are one process's
// up to float rounding (the Gram matrix is summed in another order).
//
//   auto factors = rectrain::fit_implicit_als_sharded(matrix, *group, options);
//
// Every rank holds the whole matrix (both orientations) and both tables:
// W ranks divide the solve time by about W, not the memory. What to do
// when the tables stop fitting is in docs/distributed.md.

#include <rectrain/als/implicit_als.hpp>
#include <rectrain/dist/process_group.hpp>
#include <rectrain/dist/sharded_compute.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <utility>

namespace rectrain {

namespace detail {

/// Rows [first, first + count) of one side of an ALS problem.
inline AlsSide row_slice(const AlsSide& side, int64_t first, int64_t count) {
  AlsSide out;
  const auto& m = side.m;
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  const int64_t begin = ptr[first], end = ptr[first + count];
  out.m.rows = count;
  out.m.cols = m.cols;
  out.m.indptr = (m.indptr.narrow(0, first, count + 1) - begin).contiguous();
  out.m.indices = m.indices.narrow(0, begin, end - begin);
  out.m.values = m.values.narrow(0, begin, end - begin);
  if (side.confidence.defined()) out.confidence = side.confidence.narrow(0, begin, end - begin);
  return out;
}

} // namespace detail

/// fit_implicit_als over `group`'s ranks (see the top of this header). Every
/// rank passes the same matrix and options (checked) and gets the same
/// factors. options.device must be the group's device.
inline AlsFactors fit_implicit_als_sharded(const CsrMatrix& matrix, ProcessGroup& group,
                                           const ImplicitAlsOptions& options = {}) {
  const auto& o = options;
  const AlsBackend backend = detail::check_implicit_als_options(o);
  if (o.device() != group.device())
    throw DistributedError(detail::concat("fit_implicit_als_sharded: options.device ", o.device(),
                                          " is not the process group's device ", group.device()));
  detail::ThreadCountGuard threads(o.threads());
  const detail::AlsProblem whole = detail::make_als_problem(matrix, o);
  agree_across_ranks(group, "the ALS matrix and options",
                     detail::concat(matrix.rows, " x ", matrix.cols, ", ", matrix.nnz(), " nonzeros, value sum ",
                                    matrix.values.sum(torch::kFloat64).item<double>(), "\nfactors ", o.factors(),
                                    ", regularization ", o.regularization(), ", alpha ", o.alpha(), ", iterations ",
                                    o.iterations(), ", cg_steps ", o.cg_steps(), ", seed ", o.seed()));
  const auto users = rank_rows(matrix.rows, group.rank(), group.world_size());
  const auto items = rank_rows(matrix.cols, group.rank(), group.world_size());
  detail::AlsProblem local = whole;
  local.users = detail::row_slice(whole.users, users.first, users.second);
  local.items = detail::row_slice(whole.items, items.first, items.second);
  // The fixed side's Gram matrix: this rank's rows of it, summed over ranks.
  std::pair<int64_t, int64_t> fixed_rows;
  local.gram_of = [&](const torch::Tensor& y) {
    const auto mine = y.narrow(0, fixed_rows.first, fixed_rows.second);
    auto g = torch::mm(mine.t(), mine).contiguous();
    group.all_reduce_sum(g, "all-reduce of ALS's Gram matrix");
    return g;
  };
  AlsFactors out;
  out.user = detail::place_initial_factors(matrix.rows, 0, o);
  out.item = detail::place_initial_factors(matrix.cols, 1, o);
  const auto gather = [&](torch::Tensor& whole_side, const std::pair<int64_t, int64_t>& rows, const char* what) {
    const auto all = group.all_gather_rows(whole_side.narrow(0, rows.first, rows.second).contiguous(), nullptr,
                                           detail::concat("all-gather of the ALS ", what, " factors"));
    whole_side.copy_(all);
  };
  detail::run_implicit_als(local, whole, backend, o, out, [&](auto& solver, int64_t it) {
    fixed_rows = items;
    auto x = out.user.narrow(0, users.first, users.second);
    solver.solve_users(x, out.item);
    detail::check_finite_factors(x, "user", it);
    gather(out.user, users, "user");
    fixed_rows = users;
    auto y = out.item.narrow(0, items.first, items.second);
    solver.solve_items(y, out.user);
    detail::check_finite_factors(y, "item", it);
    gather(out.item, items, "item");
  });
  return out;
}

} // namespace rectrain
