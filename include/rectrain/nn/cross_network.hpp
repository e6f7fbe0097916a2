#pragma once
// CrossNetwork: the cross layers of DCNv2 (Wang et al., "DCN V2: Improved
// Deep & Cross Network", WWW 2021). Each layer multiplies the input with a
// linear map of the previous layer's output,
//
//   x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,
//
// so L layers model feature crosses up to degree L + 1 explicitly (a
// candidate item's embedding times the user's history, say), which an MLP
// learns only approximately. rank > 0 factorises W_l = U_l V_lᵀ (the
// paper's low-rank "DCN-Mix" cost without its mixture of experts). The
// output has the input's width; Ranker runs it before its shared MLP (the
// paper's stacked structure):
//
//   CrossNetwork cross(CrossNetworkOptions(input_dim).layers(2));
//   auto y = cross(x);  // [..., input_dim]

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

struct CrossNetworkOptions {
  /* implicit */ CrossNetworkOptions(int64_t input_dim) : input_dim_(input_dim) {}
  TORCH_ARG(int64_t, input_dim);
  /// Cross layers (L).
  TORCH_ARG(int64_t, layers) = 2;
  /// 0: full-rank W_l (input_dim²); r > 0: W_l = U_l V_lᵀ with r columns.
  TORCH_ARG(int64_t, rank) = 0;
};

class CrossNetworkImpl : public torch::nn::Cloneable<CrossNetworkImpl> {
 public:
  explicit CrossNetworkImpl(CrossNetworkOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0 || options.layers() < 1 || options.rank() < 0)
      throw Error(detail::concat("CrossNetwork: need input_dim > 0, layers >= 1 and rank >= 0, got ",
                                 options.input_dim(), ", ", options.layers(), " and ", options.rank()));
    down = register_module("down", torch::nn::ModuleList());
    up = register_module("up", torch::nn::ModuleList());
    const int64_t d = options.input_dim(), r = options.rank();
    for (int64_t l = 0; l < options.layers(); ++l) {
      if (r > 0) {
        down->push_back(torch::nn::Linear(torch::nn::LinearOptions(d, r).bias(false)));
        up->push_back(torch::nn::Linear(r, d));
      } else {
        up->push_back(torch::nn::Linear(d, d));
      }
    }
    // Start each layer near the identity map (x_{l+1} ≈ x_l): the network
    // first passes the features through, then learns the crosses it needs.
    torch::NoGradGuard no_grad;
    for (const auto& m : *up) {
      auto* linear = m->as<torch::nn::Linear>();
      linear->weight.mul_(0.1);
      linear->bias.zero_();
    }
  }

  /// [..., input_dim] -> [..., input_dim].
  torch::Tensor forward(const torch::Tensor& x0) {
    detail::check_last_dim("CrossNetwork", "input", x0, options.input_dim());
    auto x = x0;
    for (int64_t l = 0; l < options.layers(); ++l) {
      auto* u = up[l]->as<torch::nn::Linear>();
      const auto projected = options.rank() > 0 ? u->forward(down[l]->as<torch::nn::Linear>()->forward(x)) : u->forward(x);
      x = torch::addcmul(x, x0, projected);
    }
    return x;
  }

  int64_t output_dim() const { return options.input_dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::CrossNetwork(input_dim=" << options.input_dim() << ", layers=" << options.layers()
           << ", rank=" << options.rank() << ")";
  }

  CrossNetworkOptions options;
  torch::nn::ModuleList down{nullptr}, up{nullptr};
};

TORCH_MODULE(CrossNetwork);

} // namespace rectrain
