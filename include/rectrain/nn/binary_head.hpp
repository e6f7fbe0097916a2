#pragma once
// BinaryHead: a logit per row for a 0/1 label (like, dislike, share, ...),
// trained with binary cross-entropy on logits, optionally weighting the
// positives (rare signals such as share or bookmark).

#include <rectrain/nn/head.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

struct BinaryHeadOptions {
  BinaryHeadOptions(int64_t input_dim, std::string label) : input_dim_(input_dim), label_(std::move(label)) {}
  TORCH_ARG(int64_t, input_dim);
  /// The Batch label it learns from; values in [0, 1].
  TORCH_ARG(std::string, label);
  /// Weight of the positive term (BCE's pos_weight); 1 weighs both alike.
  TORCH_ARG(double, positive_weight) = 1.0;
  /// Reject labels outside [0, 1] (or NaN) on real rows. Costs one host
  /// sync per loss on a GPU; turn off once the data is known to be clean.
  TORCH_ARG(bool, check_labels) = true;
};

class BinaryHeadImpl : public torch::nn::Cloneable<BinaryHeadImpl>, public HeadInterface {
 public:
  BinaryHeadImpl(int64_t input_dim, std::string label) : BinaryHeadImpl(BinaryHeadOptions(input_dim, std::move(label))) {}
  explicit BinaryHeadImpl(BinaryHeadOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0) throw Error(detail::concat("BinaryHead: input_dim must be > 0, got ", options.input_dim()));
    if (!(options.positive_weight() > 0))
      throw Error(detail::concat("BinaryHead: positive_weight must be > 0, got ", options.positive_weight()));
    linear = register_module("linear", torch::nn::Linear(options.input_dim(), 1));
  }

  /// Logits [B, G].
  torch::Tensor forward(const torch::Tensor& hidden) override { return detail::linear_score(linear, hidden, "BinaryHead"); }

  torch::Tensor loss(const torch::Tensor& logits, const Batch& batch) override {
    const auto y = detail::head_label("BinaryHead", options.label(), logits, batch);
    if (options.check_labels())
      detail::check_label_rows("BinaryHead", options.label(), y, ~((y >= 0) & (y <= 1)), batch, "in [0, 1]");
    torch::Tensor pos_weight;
    if (options.positive_weight() != 1.0) pos_weight = torch::full({}, options.positive_weight(), logits.options());
    const auto elementwise =
        torch::binary_cross_entropy_with_logits(logits, y, {}, pos_weight, at::Reduction::None);
    return masked_mean(elementwise, batch.mask);
  }

  int64_t input_dim() const override { return options.input_dim(); }
  torch::nn::LinearImpl* score_layer() override { return linear.get(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::BinaryHead(input_dim=" << options.input_dim() << ", label=" << options.label() << ")";
  }

  BinaryHeadOptions options;
  torch::nn::Linear linear{nullptr};
};

TORCH_MODULE(BinaryHead);

} // namespace rectrain
