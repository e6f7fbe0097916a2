#pragma once
// Adam for embedding tables with sparse gradients (PyTorch's SparseAdam,
// which LibTorch's C++ API lacks; its Adam rejects sparse gradients). Only
// the rows a step touched are updated, and only their moments move: the
// "lazy" Adam of TensorFlow and PyTorch. A dense Adam step on a table reads
// and writes every row of the table and its two moments, however few rows
// the batch used: at challenge scale (620 MB of tables) that was most of
// an unfrozen step.
//
//   CategoricalFeature user(CategoricalFeatureOptions(n, 64).sparse(true));
//   rectrain::SparseAdam tables({user->weight}, torch::optim::AdamOptions(1e-3));
//
// Options and per-parameter state are LibTorch's AdamOptions and
// AdamParamState, so checkpoints hold it as they hold an Adam (amsgrad is
// not supported). Where a step touches every row, the update equals
// torch::optim::Adam's.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

namespace rectrain {

class SparseAdam : public torch::optim::Optimizer {
 public:
  explicit SparseAdam(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                      torch::optim::AdamOptions defaults = {})
      : Optimizer(std::move(param_groups), std::make_unique<torch::optim::AdamOptions>(defaults)) {
    const auto [beta1, beta2] = defaults.betas();
    if (!(defaults.lr() >= 0) || !(defaults.eps() >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) ||
        !(defaults.weight_decay() >= 0))
      throw Error(detail::concat("SparseAdam: invalid options: lr ", defaults.lr(), ", betas (", beta1, ", ", beta2,
                                 "), eps ", defaults.eps(), ", weight_decay ", defaults.weight_decay()));
    if (defaults.amsgrad()) throw Error("SparseAdam: amsgrad is not supported");
  }
  explicit SparseAdam(std::vector<torch::Tensor> params, torch::optim::AdamOptions defaults = {})
      : SparseAdam(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
                   std::move(defaults)) {}

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    torch::Tensor loss;
    if (closure) {
      torch::AutoGradMode enable_grad(true);
      loss = closure();
    }
    for (auto& group : param_groups_) {
      const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
      const auto [beta1, beta2] = options.betas();
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        const auto& grad = p.grad();
        if (!grad.is_sparse())
          throw TensorError(detail::concat("SparseAdam: parameter ", detail::shape_of(p),
                                           " has a dense gradient; give it to torch::optim::Adam, or make its "
                                           "embedding sparse (CategoricalFeatureOptions::sparse(true))"));
        const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
        auto it = state_.find(key);
        if (it == state_.end()) {
          auto fresh = std::make_unique<torch::optim::AdamParamState>();
          fresh->step(0);
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          it = state_.emplace(key, std::move(fresh)).first;
        }
        auto& state = static_cast<torch::optim::AdamParamState&>(*it->second);
        // Repeated rows (one id several times in a batch) summed first, as
        // in a dense gradient.
        const auto coalesced = grad.coalesce();
        const auto rows = coalesced.indices()[0];
        if (rows.numel() == 0) continue;
        auto values = coalesced.values();
        state.step(state.step() + 1);
        if (options.weight_decay() != 0) values = values + options.weight_decay() * p.index_select(0, rows);
        auto exp_avg = state.exp_avg().index_select(0, rows).mul_(beta1).add_(values, 1 - beta1);
        auto exp_avg_sq = state.exp_avg_sq().index_select(0, rows).mul_(beta2).addcmul_(values, values, 1 - beta2);
        state.exp_avg().index_copy_(0, rows, exp_avg);
        state.exp_avg_sq().index_copy_(0, rows, exp_avg_sq);
        const double step = static_cast<double>(state.step());
        const double bias_correction1 = 1 - std::pow(beta1, step);
        const double bias_correction2 = 1 - std::pow(beta2, step);
        // Adam's update in its order of operations (addcdiv_: value * t1 / t2).
        const auto denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options.eps());
        p.index_add_(0, rows, exp_avg.mul_(-options.lr() / bias_correction1).div_(denom));
      }
    }
    return loss;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    torch::optim::serialize<torch::optim::AdamParamState, torch::optim::AdamOptions>(archive, *this);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::optim::serialize<torch::optim::AdamParamState, torch::optim::AdamOptions>(archive, *this);
  }
};

} // namespace rectrain
