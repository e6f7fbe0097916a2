#pragma once
// Mlp: blocks of Linear -> activation -> normalisation -> dropout, the
// building block of towers and of the ranker's shared layers. Works on
// [..., input_dim]; with a row mask, BatchNorm statistics come from the
// real rows only (padded rows of a group would otherwise skew them).

#include <rectrain/core/error.hpp>
#include <rectrain/nn/dropout.hpp>
#include <rectrain/nn/fused_block.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rectrain {

enum class Activation : uint8_t { ReLU, GELU, SiLU };
enum class Normalization : uint8_t { None, LayerNorm, BatchNorm };

struct MlpOptions {
  MlpOptions(int64_t input_dim, std::vector<int64_t> widths) : input_dim_(input_dim), widths_(std::move(widths)) {}
  TORCH_ARG(int64_t, input_dim);
  /// Output width of each block; empty makes the Mlp the identity.
  TORCH_ARG(std::vector<int64_t>, widths);
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(Normalization, normalization) = Normalization::None;
  TORCH_ARG(double, dropout) = 0.0;
};

/// The block settings of an Mlp whose input width is not known yet (a
/// tower's or ranker's: it is the width of what they concatenate).
struct MlpBlocks {
  /* implicit */ MlpBlocks(std::vector<int64_t> widths = {}) : widths_(std::move(widths)) {}
  TORCH_ARG(std::vector<int64_t>, widths);
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(Normalization, normalization) = Normalization::None;
  TORCH_ARG(double, dropout) = 0.0;

  // (TORCH_ARG leaves the section private)
 public:
  MlpOptions with_input(int64_t input_dim) const {
    return MlpOptions(input_dim, widths()).activation(activation()).normalization(normalization()).dropout(dropout());
  }
};

class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  MlpImpl(int64_t input_dim, std::vector<int64_t> widths) : MlpImpl(MlpOptions(input_dim, std::move(widths))) {}
  explicit MlpImpl(MlpOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0) throw Error(detail::concat("Mlp: input_dim must be > 0, got ", options.input_dim()));
    if (!(options.dropout() >= 0 && options.dropout() < 1))
      throw Error(detail::concat("Mlp: dropout must be in [0, 1), got ", options.dropout()));
    linears.clear();
    layer_norms.clear();
    batch_norms.clear();
    int64_t width = options.input_dim();
    for (size_t i = 0; i < options.widths().size(); ++i) {
      const int64_t out = options.widths()[i];
      if (out <= 0) throw Error(detail::concat("Mlp: widths[", i, "] must be > 0, got ", out));
      const auto index = std::to_string(i);
      linears.push_back(register_module("linear" + index, torch::nn::Linear(width, out)));
      if (options.normalization() == Normalization::LayerNorm)
        layer_norms.push_back(register_module("norm" + index, torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}))));
      else if (options.normalization() == Normalization::BatchNorm)
        batch_norms.push_back(register_module("norm" + index, torch::nn::BatchNorm1d(out)));
      width = out;
    }
  }

  /// [..., input_dim] -> [..., output_dim()]. `mask` ([...] bool, optional)
  /// marks the real rows; only BatchNorm in training mode looks at it.
  torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& mask = {}) {
    detail::check_last_dim("Mlp", "input", input, options.input_dim());
    if (mask.defined() && (mask.dim() != input.dim() - 1 || mask.sizes() != input.sizes().slice(0, mask.dim())))
      throw TensorError(detail::concat("Mlp: mask ", mask.sizes(), " does not match input ", input.sizes()));
    if (linears.empty()) return input;
    // Rows flattened to [N, in]: Linear on a 2-D input is one addmm with the
    // bias fused, forward and backward, instead of matmul + add on 3-D views.
    auto x = input.reshape({-1, options.input_dim()});
    const auto flat_mask = mask.defined() ? mask.reshape({-1}) : mask;
    for (size_t i = 0; i < linears.size(); ++i) {
      if (fused_block(x)) {  // the recipe's block: mm, then one pass (fused_block.hpp)
        auto& linear = linears[i];
        const auto& norm = layer_norms[i];
        x = torch::mm(x, linear->weight.t());
        if (x.scalar_type() == torch::kFloat) {
          x = relu_layer_norm_dropout(x, linear->bias, norm->weight, norm->bias, norm->options.eps(),
                                      options.dropout(), is_training());
          continue;
        }
        x = x + linear->bias.to(x.scalar_type());  // autocast made it bf16: the plain ops follow
      } else {
        x = linears[i](x);
      }
      switch (options.activation()) {
        case Activation::ReLU: x = torch::relu(x); break;
        case Activation::GELU: x = torch::gelu(x); break;
        case Activation::SiLU: x = torch::silu(x); break;
      }
      // Normalisation in its parameters' precision: LibTorch's CPU kernels
      // take no bf16 input with float32 weights (what autocast leaves).
      if (!layer_norms.empty()) x = layer_norms[i](x.to(layer_norms[i]->weight.scalar_type()));
      if (!batch_norms.empty()) x = batch_norm(batch_norms[i], x.to(batch_norms[i]->weight.scalar_type()), flat_mask);
      if (options.dropout() > 0) x = rectrain::dropout(x, options.dropout(), is_training());
    }
    auto shape = input.sizes().vec();
    shape.back() = x.size(1);
    return x.view(shape);
  }

  int64_t output_dim() const { return options.widths().empty() ? options.input_dim() : options.widths().back(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::Mlp(input_dim=" << options.input_dim() << ", widths=[";
    for (size_t i = 0; i < options.widths().size(); ++i) stream << (i ? ", " : "") << options.widths()[i];
    stream << "])";
  }

  MlpOptions options;
  std::vector<torch::nn::Linear> linears;
  std::vector<torch::nn::LayerNorm> layer_norms;
  std::vector<torch::nn::BatchNorm1d> batch_norms;

 private:
  /// Linear -> ReLU -> LayerNorm -> dropout on float32 CPU rows: an mm,
  /// then one fused kernel.
  bool fused_block(const torch::Tensor& x) const {
    return options.activation() == Activation::ReLU && !layer_norms.empty() &&
           layer_norms[0]->options.elementwise_affine() && linears[0]->options.bias() && x.device().is_cpu() &&
           x.scalar_type() == torch::kFloat;
  }

  /// BatchNorm over [N, width] rows; in training, statistics from the rows
  /// `mask` ([N] bool) marks.
  torch::Tensor batch_norm(torch::nn::BatchNorm1d& norm, const torch::Tensor& rows, const torch::Tensor& mask) const {
    if (!is_training() || !mask.defined()) return norm(rows);
    const auto real = mask.nonzero().squeeze(1);
    return torch::zeros_like(rows).index_copy(0, real, norm(rows.index_select(0, real)));
  }
};

TORCH_MODULE(Mlp);

} // namespace rectrain
