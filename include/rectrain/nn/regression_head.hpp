#pragma once
// RegressionHead: a value per row for a real label (watch time), with MSE
// or Huber loss, optionally on log1p of the label (then the prediction is
// in log1p space too, and decode() maps it back).

#include <rectrain/nn/head.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

enum class RegressionLoss : uint8_t { MSE, Huber };

struct RegressionHeadOptions {
  RegressionHeadOptions(int64_t input_dim, std::string label) : input_dim_(input_dim), label_(std::move(label)) {}
  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(std::string, label);
  TORCH_ARG(RegressionLoss, loss) = RegressionLoss::MSE;
  /// Where Huber turns from quadratic to linear.
  TORCH_ARG(double, huber_delta) = 1.0;
  /// Learn log1p(label) instead of the label. Labels below 0 count as 0
  /// (the head is meant for non-negative targets: times, counts).
  TORCH_ARG(bool, log1p_label) = false;
  /// Reject NaN or infinite labels on real rows (one host sync per loss on
  /// a GPU).
  TORCH_ARG(bool, check_labels) = true;
};

class RegressionHeadImpl : public torch::nn::Cloneable<RegressionHeadImpl>, public HeadInterface {
 public:
  RegressionHeadImpl(int64_t input_dim, std::string label)
      : RegressionHeadImpl(RegressionHeadOptions(input_dim, std::move(label))) {}
  explicit RegressionHeadImpl(RegressionHeadOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0)
      throw Error(detail::concat("RegressionHead: input_dim must be > 0, got ", options.input_dim()));
    if (!(options.huber_delta() > 0))
      throw Error(detail::concat("RegressionHead: huber_delta must be > 0, got ", options.huber_delta()));
    linear = register_module("linear", torch::nn::Linear(options.input_dim(), 1));
  }

  torch::Tensor forward(const torch::Tensor& hidden) override {
    return detail::linear_score(linear, hidden, "RegressionHead");
  }

  torch::Tensor loss(const torch::Tensor& prediction, const Batch& batch) override {
    auto y = detail::head_label("RegressionHead", options.label(), prediction, batch);
    if (options.check_labels())
      detail::check_label_rows("RegressionHead", options.label(), y, ~torch::isfinite(y), batch, "finite");
    if (options.log1p_label()) y = torch::log1p(y.clamp_min(0));
    const auto elementwise = options.loss() == RegressionLoss::MSE
                                 ? torch::mse_loss(prediction, y, at::Reduction::None)
                                 : torch::huber_loss(prediction, y, at::Reduction::None, options.huber_delta());
    return masked_mean(elementwise, batch.mask);
  }

  /// A prediction in the label's own units.
  torch::Tensor decode(const torch::Tensor& prediction) const {
    return options.log1p_label() ? torch::expm1(prediction) : prediction;
  }

  int64_t input_dim() const override { return options.input_dim(); }
  torch::nn::LinearImpl* score_layer() override { return linear.get(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::RegressionHead(input_dim=" << options.input_dim() << ", label=" << options.label() << ")";
  }

  RegressionHeadOptions options;
  torch::nn::Linear linear{nullptr};
};

TORCH_MODULE(RegressionHead);

} // namespace rectrain
