#pragma once
// The mean of a table's rows over bags, with a sparse gradient of one row
// per distinct item. embedding_bag's sparse gradient holds one row per bag
// entry: HistoryFeature's lists at full scale are 20,480 rows x 4 lists x
// 16 items a batch, a [1.3M, 256] float block (1.3 GB) allocated, filled
// and copied on every step of an unfrozen epoch, which then ran at 3,000
// rows/s. Here the backward sums each distinct item's entries in place:
// [distinct items, dim] in sorted rows without repeats, so
// SparseAdam reads it in one pass.
//
//   const auto pooled = detail::mean_bag(table, ids, counts);  // [bags, dim]
//
// Same values as embedding_bag(mode mean) forward; float32 CPU tables
// only (HistoryFeature keeps embedding_bag elsewhere).

#include <rectrain/core/error.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace rectrain {
namespace detail {

class MeanBagFunction : public torch::autograd::Function<MeanBagFunction> {
 public:
  /// table [n, dim] float32 CPU; ids [entries] int64 in [0, n), the bags'
  /// entries one bag after the other; counts [bags] int64, summing to
  /// entries (0: an empty bag, pooled to zeros).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& table,
                               const torch::Tensor& ids, const torch::Tensor& counts) {
    ctx->save_for_backward({ids, counts});
    ctx->saved_data["rows"] = table.size(0);
    return torch::nn::functional::embedding_bag(
        ids, table, torch::nn::functional::EmbeddingBagFuncOptions().offsets(counts.cumsum(0) - counts).mode(torch::kMean));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& ids = saved[0];
    const auto& counts = saved[1];
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const auto grad = grads[0].to(torch::kFloat32).contiguous();  // [bags, dim]
    const int64_t bags = counts.size(0), dim = grad.size(1), entries = ids.numel();
    // Each entry's bag, then the entries grouped by item, in bag order
    // within an item (a stable sort): every item's sum has one order, so
    // the thread count does not change it.
    const auto bag_of = torch::repeat_interleave(torch::arange(bags, torch::kInt64), counts).contiguous();
    torch::Tensor sorted, order;
    std::tie(sorted, order) = torch::sort(ids, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    sorted = sorted.contiguous();
    order = order.contiguous();
    const int64_t* s = sorted.data_ptr<int64_t>();
    std::vector<int64_t> starts;  // where each distinct item's entries begin, then entries
    for (int64_t k = 0; k < entries; ++k)
      if (k == 0 || s[k] != s[k - 1]) starts.push_back(k);
    const auto distinct = static_cast<int64_t>(starts.size());
    starts.push_back(entries);
    auto indices = torch::empty({1, distinct}, torch::kInt64);
    auto values = torch::zeros({distinct, dim}, torch::kFloat32);
    int64_t* ip = indices.data_ptr<int64_t>();
    float* vp = values.data_ptr<float>();
    const float* gp = grad.data_ptr<float>();
    const int64_t* op = order.data_ptr<int64_t>();
    const int64_t* bp = bag_of.data_ptr<int64_t>();
    const int64_t* cp = counts.data_ptr<int64_t>();
    at::parallel_for(0, distinct, 256, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        ip[u] = s[starts[static_cast<size_t>(u)]];
        float* out = vp + u * dim;
        for (int64_t k = starts[static_cast<size_t>(u)]; k < starts[static_cast<size_t>(u + 1)]; ++k) {
          const int64_t b = bp[op[k]];
          const float scale = 1.0F / static_cast<float>(cp[b]);
          const float* g = gp + b * dim;
          for (int64_t j = 0; j < dim; ++j) out[j] += scale * g[j];
        }
      }
    });
    auto table_grad = torch::sparse_coo_tensor(indices, values, {rows, dim});
    table_grad._coalesced_(true);
    return {table_grad, torch::Tensor(), torch::Tensor()};
  }
};

/// The mean of `table`'s rows over bags (see the header comment): ids
/// [entries] int64 in [0, table rows), counts [bags] int64 summing to
/// entries; returns [bags, dim]. The gradient of `table` is sparse.
inline torch::Tensor mean_bag(const torch::Tensor& table, const torch::Tensor& ids, const torch::Tensor& counts) {
  if (!table.defined() || table.dim() != 2 || !table.is_cpu() || table.scalar_type() != torch::kFloat32)
    throw TensorError(concat("mean_bag: table must be a 2-D float32 CPU tensor, got ", type_and_shape_of(table)));
  if (!ids.defined() || ids.dim() != 1 || ids.scalar_type() != torch::kInt64 || !counts.defined() ||
      counts.dim() != 1 || counts.scalar_type() != torch::kInt64)
    throw TensorError(concat("mean_bag: ids and counts must be 1-D int64, got ", type_and_shape_of(ids), " and ",
                             type_and_shape_of(counts)));
  const int64_t total = counts.sum().item<int64_t>();
  if (total != ids.numel() || (counts.numel() > 0 && counts.min().item<int64_t>() < 0))
    throw TensorError(concat("mean_bag: counts must be >= 0 and sum to the ", ids.numel(), " ids, got a sum of ",
                             total));
  return MeanBagFunction::apply(table, ids.contiguous(), counts.contiguous());
}

} // namespace detail
} // namespace rectrain
