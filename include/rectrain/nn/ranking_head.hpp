#pragma once
// RankingHead: a score per row, trained with a ranking loss inside each
// group ([B, G]: one user's candidates) against a graded label (the
// challenge's target: like 1 > neutral 0 > dislike −1).

#include <rectrain/loss/ranking.hpp>
#include <rectrain/nn/head.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

struct RankingHeadOptions {
  RankingHeadOptions(int64_t input_dim, std::string label = "target")
      : input_dim_(input_dim), label_(std::move(label)) {}
  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(std::string, label);
  /// The recipe's pairwise margin loss by default.
  TORCH_ARG(RankingLossOptions, loss) = {};
};

class RankingHeadImpl : public torch::nn::Cloneable<RankingHeadImpl>, public HeadInterface {
 public:
  explicit RankingHeadImpl(int64_t input_dim) : RankingHeadImpl(RankingHeadOptions(input_dim)) {}
  explicit RankingHeadImpl(RankingHeadOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0)
      throw Error(detail::concat("RankingHead: input_dim must be > 0, got ", options.input_dim()));
    linear = register_module("linear", torch::nn::Linear(options.input_dim(), 1));
  }

  /// Scores [B, G].
  torch::Tensor forward(const torch::Tensor& hidden) override { return detail::linear_score(linear, hidden, "RankingHead"); }

  torch::Tensor loss(const torch::Tensor& scores, const Batch& batch) override {
    const auto targets = detail::head_label("RankingHead", options.label(), scores, batch);
    return ranking_loss(scores, targets, batch.mask, options.loss());
  }

  int64_t input_dim() const override { return options.input_dim(); }
  torch::nn::LinearImpl* score_layer() override { return linear.get(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::RankingHead(input_dim=" << options.input_dim() << ", label=" << options.label() << ")";
  }

  RankingHeadOptions options;
  torch::nn::Linear linear{nullptr};
};

TORCH_MODULE(RankingHead);

} // namespace rectrain
