#pragma once
// What a Tower asks of a feature module: turn one batch column into a
// [..., output_dim()] block. rectrain's CategoricalFeature, NumericFeature
// and DenseFeature implement it; a user's own feature module does too by
// deriving from FeatureInterface beside torch::nn::Cloneable.

#include <torch/torch.h>

#include <cstdint>

namespace rectrain {

class FeatureInterface {
 public:
  virtual ~FeatureInterface() = default;
  /// One batch column ([B, G] or [B, G, width]) -> [B, G, output_dim()].
  virtual torch::Tensor forward(const torch::Tensor& column) = 0;
  /// Width of what forward() returns.
  virtual int64_t output_dim() const = 0;
};

} // namespace rectrain
