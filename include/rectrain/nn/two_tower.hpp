#pragma once
// TwoTower: the dot-product variant. Each tower encodes its side on its own
// and a row's score is ⟨user, item⟩ / temperature, optionally of unit
// vectors (cosine). The item side can then be precomputed for retrieval;
// train it with any ranking loss on forward()'s [B, G] scores.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/nn/composite.hpp>
#include <rectrain/nn/tower.hpp>

#include <torch/torch.h>

namespace rectrain {

struct TwoTowerOptions {
  /// Score unit vectors (cosine similarity).
  TORCH_ARG(bool, normalize) = false;
  TORCH_ARG(double, temperature) = 1.0;
};

class TwoTowerImpl : public torch::nn::Cloneable<TwoTowerImpl> {
 public:
  TwoTowerImpl(Tower user_tower_, Tower item_tower_, TwoTowerOptions options_ = {})
      : options(std::move(options_)), user_tower(std::move(user_tower_)), item_tower(std::move(item_tower_)) {
    reset();
  }

  void reset() override {
    if (user_tower.is_empty() || item_tower.is_empty()) throw Error("TwoTower: both towers must be given");
    if (!(options.temperature() > 0))
      throw Error(detail::concat("TwoTower: temperature must be > 0, got ", options.temperature()));
    if (user_tower->output_dim() != item_tower->output_dim())
      throw Error(detail::concat("TwoTower: the user tower gives ", user_tower->output_dim(),
                                 " dimensions and the item tower ", item_tower->output_dim(), "; they must match"));
    register_module("user_tower", user_tower);
    register_module("item_tower", item_tower);
  }

  /// [B, G, d] user vectors (unit length with normalize).
  torch::Tensor user_vectors(const Batch& batch) { return encode(user_tower->forward(batch)); }
  torch::Tensor item_vectors(const Batch& batch) { return encode(item_tower->forward(batch)); }

  /// Scores [B, G].
  torch::Tensor forward(const Batch& batch) {
    return (user_vectors(batch) * item_vectors(batch)).sum(-1) / options.temperature();
  }

  std::shared_ptr<torch::nn::Module> clone(
      const compat::optional<torch::Device>& device = compat::nullopt) const override {
    auto copy = std::make_shared<TwoTowerImpl>(detail::clone_module(user_tower, device),
                                               detail::clone_module(item_tower, device), options);
    copy->train(is_training());
    return copy;
  }

  void pretty_print(std::ostream& stream) const override { stream << "rectrain::TwoTower"; }

  TwoTowerOptions options;
  Tower user_tower{nullptr};
  Tower item_tower{nullptr};

 private:
  torch::Tensor encode(const torch::Tensor& x) const {
    return options.normalize() ? x / x.norm(2, -1, true).clamp_min(1e-12) : x;
  }
};

TORCH_MODULE(TwoTower);

} // namespace rectrain
