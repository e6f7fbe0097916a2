#pragma once
// HistoryFeature: a user's past items as a Tower feature. Its column holds,
// per row, R lists of W item indices (ViewHistory::windows: the last W
// items the user liked, disliked, watched long, and the rest, before the
// row), -1 where a list is shorter. Each list becomes the mean of its
// items' rows in an item table of the feature's own (which can start from
// the same ALS factors as the item tower's), and its fill (items / W):
//
//   Tower user;
//   user->add("history", HistoryFeature(HistoryFeatureOptions(num_items, 64).window(16)));
//   // column [B, G, 4, 16] int64 -> [B, G, 4 * (64 + 1)]
//
// With query, the column has one more list whose first entry is the row's
// own item (the candidate), and each list also gives the candidate's
// similarity to it: the dot product with the list's mean and the largest
// with any of its items (as DIN's attention and item-kNN do: "like the
// things this user liked"), from the same table. With attention (and
// query), each list is pooled by a softmax over its items of a learned
// scale times their dot product with the candidate, as DIN does.
//
// Mean pooling runs through embedding_bag over the valid entries only; the
// largest similarity is found by a search over the table's rows outside
// autograd (CPU: nn/most_similar.hpp; a device: one batched product), then
// recomputed through the winning item, so no [rows, R * W, dim] block is
// built (attention builds it: its gradient reaches every item of a list).
//
// With vectors(false) (and query), the pooled vectors stay inside: each
// list gives its fill and the two similarities only, 3 numbers instead of
// dim + 3. The similarities are what carries the history (a shared MLP does
// not form dot products from the vectors itself), and the R * dim inputs
// cost: at synthetic scale 0.1 the recipe trained at 23,900 rows/s with
// them and 36,700 without (docs/results.md).

#include <rectrain/core/error.hpp>
#include <rectrain/nn/feature.hpp>
#include <rectrain/nn/freezing.hpp>
#include <rectrain/nn/mean_bag.hpp>
#include <rectrain/nn/most_similar.hpp>

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace rectrain {

struct HistoryFeatureOptions {
  HistoryFeatureOptions(int64_t num_items, int64_t dim) : num_items_(num_items), dim_(dim) {}
  /// Known items are 0..num_items-1; others (and -1) count as absent.
  TORCH_ARG(int64_t, num_items);
  TORCH_ARG(int64_t, dim);
  /// Lists per row (R): ViewHistory's reaction classes.
  TORCH_ARG(int64_t, lists) = 4;
  /// Items per list (W).
  TORCH_ARG(int64_t, window) = 16;
  TORCH_ARG(double, init_std) = 0.01;
  /// Sparse gradients (SparseAdam through TableOptimizers).
  TORCH_ARG(bool, sparse) = false;
  /// The column's last list holds the row's item: add its similarities.
  TORCH_ARG(bool, query) = false;
  /// With query: pool each list by attention with the row's item as the
  /// query (DIN) instead of the mean: softmax over the list of
  /// scale_c * (item . query), scale_c a learned number per list.
  TORCH_ARG(bool, attention) = false;
  /// The scales' start: unit-norm rows give dot products in [-1, 1], so 1
  /// starts close to the mean and training sharpens it where it pays.
  TORCH_ARG(double, attention_scale) = 1.0;
  /// Output each list's pooled vector (false: with query, only its fill
  /// and the candidate's two similarities to it).
  TORCH_ARG(bool, vectors) = true;
};

class HistoryFeatureImpl : public torch::nn::Cloneable<HistoryFeatureImpl>, public FeatureInterface {
 public:
  explicit HistoryFeatureImpl(HistoryFeatureOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.num_items() < 1 || options.dim() < 1 || options.lists() < 1 || options.window() < 1)
      throw Error(detail::concat("HistoryFeature: need num_items, dim, lists and window >= 1, got ",
                                 options.num_items(), ", ", options.dim(), ", ", options.lists(), " and ",
                                 options.window()));
    if (options.attention() && !options.query())
      throw Error("HistoryFeature: attention needs query(true): the row's item is the attention's query");
    if (!options.vectors() && !options.query())
      throw Error("HistoryFeature: vectors(false) needs query(true): without the similarities only the lists' fills "
                  "would be left");
    if (options.attention() && !std::isfinite(options.attention_scale()))
      throw Error(detail::concat("HistoryFeature: attention_scale must be finite, got ", options.attention_scale()));
    weight = register_parameter("weight", torch::empty({options.num_items(), options.dim()}));
    if (options.attention())
      attention_scale =
          register_parameter("attention_scale", torch::full({options.lists()}, options.attention_scale()));
    torch::NoGradGuard no_grad;
    weight.normal_(0, options.init_std());
  }

  /// Copies `table` ([num_items, dim], or [num_items + 1, dim] with an OOV
  /// row, which is dropped) into the weight; rejects NaN and Inf.
  void set_weight(const torch::Tensor& table) {
    const int64_t n = options.num_items();
    if (!table.defined() || table.dim() != 2 || table.size(1) != options.dim() ||
        (table.size(0) != n && table.size(0) != n + 1))
      throw TensorError(detail::concat("HistoryFeature weight: expected [", n, ", ", options.dim(), "], got ",
                                       detail::shape_of(table)));
    if (!torch::isfinite(table).all().item<bool>()) throw TensorError("HistoryFeature weight: NaN or Inf entries");
    torch::NoGradGuard no_grad;
    weight.copy_(table.narrow(0, 0, n));
  }

  /// [..., lists (+ 1 with query), window] integer -> [..., output_dim()].
  torch::Tensor forward(const torch::Tensor& column) override {
    const int64_t r = options.lists(), w = options.window(), d = options.dim();
    const int64_t rows_in = r + (options.query() ? 1 : 0);
    if (!column.defined() || column.dim() < 2 || column.size(-1) != w || column.size(-2) != rows_in ||
        at::isFloatingType(column.scalar_type()))
      throw TensorError(detail::concat("HistoryFeature: expected an integer column [..., ", rows_in, ", ", w,
                                       "], got ", detail::type_and_shape_of(column)));
    const auto all = column.reshape({-1, rows_in, w}).to(torch::kInt64);
    const auto ids = (options.query() ? all.narrow(1, 0, r) : all).reshape({-1, w});
    const auto valid = (ids >= 0) & (ids < options.num_items());
    const auto counts = valid.sum(1);
    auto lead = column.sizes().vec();
    lead.resize(lead.size() - 2);
    lead.push_back(output_dim());
    // Per list: the share of the window it fills.
    const auto fill_like = [&](const torch::Tensor& pooled) {
      return counts.to(pooled.scalar_type()).div_(static_cast<double>(w)).unsqueeze(1);
    };
    const auto mean_pooled = [&] {
      const auto entries = ids.masked_select(valid);
      // embedding_bag's sparse gradient has a row per entry (nn/mean_bag.hpp).
      if (options.sparse() && weight.is_cpu() && weight.scalar_type() == torch::kFloat32)
        return detail::mean_bag(weight, entries, counts);
      const auto offsets = counts.cumsum(0) - counts;
      return torch::nn::functional::embedding_bag(
          entries, weight,
          torch::nn::functional::EmbeddingBagFuncOptions().offsets(offsets).mode(torch::kMean).sparse(options.sparse()));
    };
    if (!options.query()) {
      const auto pooled = mean_pooled();
      return torch::cat({pooled, fill_like(pooled)}, 1).view(lead);
    }
    const int64_t n = options.num_items(), rows = all.size(0);
    const auto q_ids = all.select(1, r).select(1, 0);
    const auto q_valid = ((q_ids >= 0) & (q_ids < n)).unsqueeze(1);
    const auto lookup = torch::nn::functional::EmbeddingFuncOptions().sparse(options.sparse());
    const auto q = torch::nn::functional::embedding(q_ids.clamp(0, n - 1), weight, lookup) * q_valid;  // [rows, d]
    const auto list_valid = valid.view({rows, r, w});
    torch::Tensor pooled, max_similarity;  // [rows, r, d], [rows, r, 1]
    if (options.attention()) {
      // Every list item's row is gathered ([rows, R, W, dim]): the
      // attention's gradient reaches each of them.
      const auto items = torch::nn::functional::embedding(ids.clamp(0, n - 1), weight, lookup).view({rows, r, w, d});
      // Batched products, not elementwise ones: no second [rows, R, W,
      // dim] block is made, forward or backward.
      const auto similarity = torch::matmul(items, q.view({rows, 1, d, 1})).squeeze(-1);  // [rows, r, w]
      // Padding gets a large negative score, not -inf: an empty list's
      // softmax stays finite, and the mask then zeroes it.
      const auto scores = (similarity * attention_scale.view({1, r, 1})).masked_fill(~list_valid, -1e9);
      const auto attention = torch::softmax(scores, -1) * list_valid;
      pooled = torch::matmul(attention.unsqueeze(-2), items).squeeze(-2);
      const auto best = similarity.masked_fill(~list_valid, -std::numeric_limits<float>::infinity()).argmax(-1, true);
      max_similarity = similarity.gather(-1, best) * list_valid.any(-1, true);
    } else {
      pooled = mean_pooled().view({rows, r, d});
      // The most similar item of each list, found outside autograd, then
      // its similarity recomputed through it: the gradient of a max reaches
      // the argmax only, and a batch gathers [rows, R, dim], not
      // [rows, R * W, dim].
      const auto best = most_similar(ids.view({rows, r, w}), list_valid, q);  // [rows, r], -1: empty
      const auto best_rows = torch::nn::functional::embedding(best.clamp_min(0), weight, lookup);  // [rows, r, d]
      max_similarity = ((best_rows * q.unsqueeze(1)).sum(-1) * (best >= 0)).unsqueeze(-1);
    }
    const auto fill = fill_like(pooled).view({rows, r, 1});
    const auto pooled_similarity = (pooled * q.unsqueeze(1)).sum(-1, true);  // [rows, r, 1]
    const auto similarities = max_similarity.to(pooled.scalar_type());
    if (!options.vectors()) return torch::cat({fill, pooled_similarity, similarities}, -1).view(lead);
    return torch::cat({pooled, fill, pooled_similarity, similarities}, -1).view(lead);
  }

  int64_t output_dim() const override {
    return options.lists() * ((options.vectors() ? options.dim() : 0) + (options.query() ? 3 : 1));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::HistoryFeature(num_items=" << options.num_items() << ", dim=" << options.dim()
           << ", lists=" << options.lists() << ", window=" << options.window()
           << (options.attention() ? ", attention=true" : "") << (options.vectors() ? "" : ", vectors=false") << ")";
  }

  HistoryFeatureOptions options;
  torch::Tensor weight;
  /// [lists] learned attention scales (only with attention).
  torch::Tensor attention_scale;

 private:
  /// Per (row, list), the valid item with the largest dot product with the
  /// row's query (the first such on ties), -1 for an empty list.
  torch::Tensor most_similar(const torch::Tensor& ids, const torch::Tensor& valid, const torch::Tensor& q) const {
    torch::NoGradGuard no_grad;
    const int64_t rows = ids.size(0), r = ids.size(1), w = ids.size(2), d = options.dim();
    if (!weight.is_cpu()) {  // a device: one batched product is cheap there
      const auto items = weight.index_select(0, ids.clamp(0, options.num_items() - 1).reshape(-1)).view({rows, r * w, d});
      const auto s = torch::bmm(items, q.unsqueeze(2).to(items.scalar_type())).view({rows, r, w});
      const auto arg = s.masked_fill(~valid, -std::numeric_limits<float>::infinity()).argmax(-1, true);
      return ids.gather(-1, arg).squeeze(-1).masked_fill(~valid.any(-1), -1);
    }
    return detail::most_similar(weight, q, ids, valid);
  }
};

TORCH_MODULE(HistoryFeature);

} // namespace rectrain
