#pragma once
// NumericFeature: a numeric column scaled by statistics fitted once from
// data (z-score, log1p then z-score, or min-max). The statistics are
// buffers, so a saved model carries them and a loaded one scales exactly as
// the one that was trained.

#include <rectrain/core/error.hpp>
#include <rectrain/nn/feature.hpp>

#include <torch/torch.h>

#include <cstdint>

namespace rectrain {

enum class NumericScaling : uint8_t {
  ZScore,       ///< (x − mean) / std
  Log1pZScore,  ///< z-score of sign(x)·log1p(|x|): long-tailed counts and durations
  MinMax,       ///< (x − min) / (max − min)
};

struct NumericFeatureOptions {
  /* implicit */ NumericFeatureOptions(int64_t width = 1) : width_(width) {}
  /// Values per row. Width 1 takes a column without a feature dimension
  /// ([B, G] -> [B, G, 1]); a wider one takes [B, G, width].
  TORCH_ARG(int64_t, width);
  TORCH_ARG(NumericScaling, scaling) = NumericScaling::ZScore;
};

class NumericFeatureImpl : public torch::nn::Cloneable<NumericFeatureImpl>, public FeatureInterface {
 public:
  explicit NumericFeatureImpl(NumericFeatureOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.width() <= 0) throw Error(detail::concat("NumericFeature: width must be > 0, got ", options.width()));
    offset = register_buffer("offset", torch::zeros({options.width()}));
    scale = register_buffer("scale", torch::ones({options.width()}));
    fitted = register_buffer("fitted", torch::zeros({}, torch::kUInt8));
    fitted_known_ = false;
  }

  /// Fits the statistics from `data`: [N] (width 1) or [N, width], any real
  /// dtype, computed in double. Throws on empty data, NaN or Inf (naming the
  /// first bad row).
  NumericFeatureImpl& fit(const torch::Tensor& data) {
    const int64_t w = options.width();
    if (!data.defined() || !(data.dim() == 1 ? w == 1 : data.dim() == 2 && data.size(1) == w))
      throw TensorError(detail::concat("NumericFeature::fit: expected ", w == 1 ? "[N] or [N, 1]" : "[N, width]",
                                       " with width ", w, ", got ", detail::shape_of(data)));
    if (data.size(0) == 0) throw TensorError("NumericFeature::fit: data has no rows");
    if (data.scalar_type() == torch::kBool || at::isComplexType(data.scalar_type()))
      throw TensorError(detail::concat("NumericFeature::fit: expected a real tensor, got ", data.scalar_type()));
    auto x = transform(data.detach().to(torch::kCPU, torch::kDouble).reshape({data.size(0), w}));
    const auto bad = (~torch::isfinite(x)).any(1);
    if (bad.any().item<bool>()) {
      const int64_t row = bad.nonzero()[0][0].item<int64_t>();
      throw TensorError(detail::concat("NumericFeature::fit: row ", row, " is not finite (", data[row].toString(),
                                       " ", detail::concat(data[row]), ")"));
    }
    torch::Tensor shift, spread;
    if (options.scaling() == NumericScaling::MinMax) {
      shift = std::get<0>(x.min(0));
      spread = std::get<0>(x.max(0)) - shift;
    } else {
      shift = x.mean(0);
      spread = (x - shift).square().mean(0).sqrt();
    }
    // A constant column maps to 0 rather than dividing by zero.
    const auto inverse = torch::where(spread > 0, spread.reciprocal(), torch::ones_like(spread));
    torch::NoGradGuard no_grad;
    offset.copy_(shift);
    scale.copy_(inverse);
    fitted.fill_(1);
    fitted_known_ = true;
    return *this;
  }

  bool is_fitted() const { return fitted_known_ || fitted.item<uint8_t>() != 0; }

  /// [B, G] (width 1) or [B, G, width] -> [B, G, width], in the buffers' dtype.
  torch::Tensor forward(const torch::Tensor& column) override {
    if (!fitted_known_) {  // read the buffer once: it may have come from a load
      if (fitted.item<uint8_t>() == 0)
        throw Error("NumericFeature: statistics not fitted; call fit(data) or load a trained model first");
      fitted_known_ = true;
    }
    const int64_t w = options.width();
    if (!column.defined() || w > 1) detail::check_last_dim("NumericFeature", "", column, w);
    auto x = column.to(offset.scalar_type());
    if (w == 1) x = x.unsqueeze(-1);
    return (transform(x) - offset) * scale;
  }

  int64_t output_dim() const override { return options.width(); }

  void load(torch::serialize::InputArchive& archive) override {
    torch::nn::Module::load(archive);
    fitted_known_ = false;  // take the loaded flag, not the old one
  }

  void pretty_print(std::ostream& stream) const override {
    static const char* names[] = {"ZScore", "Log1pZScore", "MinMax"};
    stream << "rectrain::NumericFeature(width=" << options.width()
           << ", scaling=" << names[static_cast<int>(options.scaling())] << ")";
  }

  NumericFeatureOptions options;
  torch::Tensor offset;  ///< [width]: mean, or min for MinMax
  torch::Tensor scale;   ///< [width]: 1 / std, or 1 / (max − min); 1 for a constant column
  torch::Tensor fitted;  ///< uint8 scalar, 1 once fit() ran

 private:
  torch::Tensor transform(const torch::Tensor& x) const {
    if (options.scaling() != NumericScaling::Log1pZScore) return x;
    return torch::sign(x) * torch::log1p(x.abs());  // log1p for x ≥ 0, odd so negatives never give NaN
  }

  bool fitted_known_ = false;
};

TORCH_MODULE(NumericFeature);

} // namespace rectrain
