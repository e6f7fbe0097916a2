#pragma once
// What a Ranker asks of a head: a prediction per row from the shared
// representation, and a loss against the head's own label in the Batch over
// the batch's real rows. BinaryHead, RegressionHead and RankingHead
// implement it; a user's own head does the same (see
// examples/custom_head/ and docs/heads.md) without touching the library.

#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>

#include <torch/torch.h>

#include <cstdint>

namespace rectrain {

class HeadInterface {
 public:
  virtual ~HeadInterface() = default;
  /// [B, G, input_dim()] shared representation -> [B, G] prediction (a
  /// logit, a value or a score).
  virtual torch::Tensor forward(const torch::Tensor& hidden) = 0;
  /// Scalar loss of `prediction` ([B, G], from forward) against this head's
  /// label in `batch`, over the rows where batch.mask is true.
  virtual torch::Tensor loss(const torch::Tensor& prediction, const Batch& batch) = 0;
  /// Width of the representation forward() takes.
  virtual int64_t input_dim() const = 0;
  /// The head's Linear(input_dim, 1) when forward() is exactly
  /// `linear(hidden).squeeze(-1)`, else nullptr (the default). A Ranker
  /// scores all such heads with one matrix product: a GEMV per head, and
  /// the sum of their input gradients, cost more than that product.
  virtual torch::nn::LinearImpl* score_layer() { return nullptr; }
};

/// Mean of `elementwise` over the true entries of `mask` (0 when none is
/// true): how a head's loss() averages over a batch's real rows. where()
/// rather than a product with the mask, so a non-finite value on a padded
/// row can reach neither the value nor the gradient.
inline torch::Tensor masked_mean(const torch::Tensor& elementwise, const torch::Tensor& mask) {
  if (!mask.defined()) return elementwise.mean();
  if (mask.sizes() != elementwise.sizes())
    throw TensorError(
        detail::concat("masked_mean: mask ", mask.sizes(), " does not match the loss ", elementwise.sizes()));
  const auto kept = torch::where(mask, elementwise, torch::zeros_like(elementwise));
  return kept.sum() / mask.sum().clamp_min(1).to(elementwise.scalar_type());
}

/// The weighted mean Σ w·x / Σ w over the true entries of `mask` (0 when
/// their weights sum to 0): per-row weights (a sample weight, a class
/// weight per label) shaped like `elementwise`, finite and >= 0.
inline torch::Tensor masked_mean(const torch::Tensor& elementwise, const torch::Tensor& mask,
                                 const torch::Tensor& weights) {
  if (!weights.defined() || weights.sizes() != elementwise.sizes() || !weights.is_floating_point())
    throw TensorError(detail::concat("masked_mean: weights must be a floating tensor shaped like the loss ",
                                     elementwise.sizes(), ", got ", detail::type_and_shape_of(weights)));
  if (mask.defined() && mask.sizes() != elementwise.sizes())
    throw TensorError(
        detail::concat("masked_mean: mask ", mask.sizes(), " does not match the loss ", elementwise.sizes()));
  const auto keep = mask.defined() ? mask : torch::ones_like(elementwise, torch::kBool);
  const auto w = torch::where(keep, weights.to(elementwise.scalar_type()), torch::zeros_like(elementwise));
  if (!torch::isfinite(w).all().item<bool>() || (w < 0).any().item<bool>())
    throw TensorError("masked_mean: weights must be finite and >= 0");
  const auto kept = torch::where(keep, elementwise, torch::zeros_like(elementwise));
  const auto total = w.sum();
  return (kept * w).sum() / torch::where(total > 0, total, torch::ones_like(total));
}

namespace detail {

/// `label` of `batch`, checked to match `prediction`'s [B, G] shape and
/// converted to its dtype.
inline torch::Tensor head_label(const char* head, const std::string& label, const torch::Tensor& prediction,
                                const Batch& batch) {
  const auto& y = batch.label(label);
  if (y.sizes() != prediction.sizes())
    throw TensorError(concat(head, ": label '", label, "' is ", y.sizes(), " but the prediction is ",
                             prediction.sizes()));
  return y.to(prediction.scalar_type());
}

/// Throws when `bad` ([B, G] bool) is true on a real row of `batch`,
/// naming the first such position and its label value. One host sync.
inline void check_label_rows(const char* head, const std::string& label, const torch::Tensor& y,
                             const torch::Tensor& bad, const Batch& batch, const char* expected) {
  const auto flagged = batch.mask.defined() ? bad & batch.mask : bad;
  if (!flagged.any().item<bool>()) return;
  const auto first = flagged.nonzero()[0];
  const int64_t b = first[0].item<int64_t>(), g = first[1].item<int64_t>();
  throw TensorError(concat(head, ": label '", label, "' must be ", expected, "; it is ", y[b][g].item<double>(),
                           " at [", b, ", ", g, "]"));
}

/// A head's Linear(input_dim, 1) applied to [B, G, input_dim] -> [B, G].
inline torch::Tensor linear_score(torch::nn::Linear& linear, const torch::Tensor& hidden, const char* head) {
  check_last_dim(head, "hidden", hidden, linear->options.in_features());
  return linear(hidden).squeeze(-1);
}

} // namespace detail

} // namespace rectrain
