#pragma once
// DenseFeature: a precomputed vector per row (the challenge's 32-d content
// embedding) taken as is, or through a learned linear projection.

#include <rectrain/core/error.hpp>
#include <rectrain/nn/feature.hpp>

#include <torch/torch.h>

namespace rectrain {

struct DenseFeatureOptions {
  /* implicit */ DenseFeatureOptions(int64_t input_dim) : input_dim_(input_dim) {}
  TORCH_ARG(int64_t, input_dim);
  /// Output width of a linear projection; 0 passes the vector through.
  TORCH_ARG(int64_t, projection) = 0;
  TORCH_ARG(bool, bias) = true;
};

class DenseFeatureImpl : public torch::nn::Cloneable<DenseFeatureImpl>, public FeatureInterface {
 public:
  explicit DenseFeatureImpl(DenseFeatureOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0 || options.projection() < 0)
      throw Error(detail::concat("DenseFeature: need input_dim > 0 and projection >= 0, got ", options.input_dim(),
                                 " and ", options.projection()));
    if (options.projection() > 0)
      projection = register_module(
          "projection", torch::nn::Linear(torch::nn::LinearOptions(options.input_dim(), options.projection())
                                              .bias(options.bias())));
    else
      projection = nullptr;
  }

  /// [..., input_dim] -> [..., output_dim()].
  torch::Tensor forward(const torch::Tensor& column) override {
    detail::check_last_dim("DenseFeature", "", column, options.input_dim());
    if (!projection) return at::isFloatingType(column.scalar_type()) ? column : column.to(torch::kFloat32);
    return projection(column.to(projection->weight.scalar_type()));
  }

  int64_t output_dim() const override { return options.projection() > 0 ? options.projection() : options.input_dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::DenseFeature(input_dim=" << options.input_dim() << ", projection=" << options.projection()
           << ")";
  }

  DenseFeatureOptions options;
  torch::nn::Linear projection{nullptr};
};

TORCH_MODULE(DenseFeature);

} // namespace rectrain
