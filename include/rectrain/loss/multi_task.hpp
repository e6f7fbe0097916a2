#pragma once
// MultiTaskLoss: one number from the heads' losses, either a fixed weighted
// sum or learned uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018):
//
//   total = Σ_i ½·exp(−s_i)·L_i + ½·s_i,   s_i = log σ_i², learned
//
// so a task whose loss stays large (noisy) is down-weighted, and the ½·s_i
// term stops every σ from growing without bound. The s_i are parameters of
// this module: hand them to the optimizer with the model's (a Ranker owns
// its MultiTaskLoss, so ranker->parameters() already includes them).

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace rectrain {

enum class TaskWeighting : uint8_t {
  Fixed,        ///< Σ w_i·L_i
  Uncertainty,  ///< Kendall et al.: Σ ½·exp(−s_i)·L_i + ½·s_i with learned s_i
};

struct MultiTaskLossOptions {
  /* implicit */ MultiTaskLossOptions(std::vector<std::string> tasks = {}) : tasks_(std::move(tasks)) {}
  /// Task names, as the keys of the losses passed to forward().
  TORCH_ARG(std::vector<std::string>, tasks);
  /// Fixed weight per task (same order); empty means 1 each. Under
  /// Uncertainty they scale each task's term: w_i·(½·exp(−s_i)·L_i + ½·s_i).
  TORCH_ARG(std::vector<double>, weights) = {};
  TORCH_ARG(TaskWeighting, weighting) = TaskWeighting::Fixed;
  /// Starting s_i = log σ_i² under Uncertainty (0: every task weighted ½).
  TORCH_ARG(double, initial_log_variance) = 0.0;
};

class MultiTaskLossImpl : public torch::nn::Cloneable<MultiTaskLossImpl> {
 public:
  explicit MultiTaskLossImpl(MultiTaskLossOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    const auto& tasks = options.tasks();
    for (size_t i = 0; i < tasks.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (tasks[i] == tasks[j]) throw Error(detail::concat("MultiTaskLoss: task '", tasks[i], "' listed twice"));
    if (!options.weights().empty() && options.weights().size() != tasks.size())
      throw Error(detail::concat("MultiTaskLoss: ", options.weights().size(), " weights for ", tasks.size(), " tasks"));
    for (size_t i = 0; i < options.weights().size(); ++i)
      if (!(options.weights()[i] >= 0) || !std::isfinite(options.weights()[i]))
        throw Error(detail::concat("MultiTaskLoss: weight of '", tasks[i], "' must be finite and >= 0, got ",
                                   options.weights()[i]));
    std::vector<double> w = options.weights();
    if (w.empty()) w.assign(tasks.size(), 1.0);
    weights = register_buffer("weights", torch::tensor(w, torch::kFloat32).reshape({static_cast<int64_t>(w.size())}));
    if (options.weighting() == TaskWeighting::Uncertainty)
      log_variance = register_parameter(
          "log_variance", torch::full({static_cast<int64_t>(tasks.size())}, options.initial_log_variance()));
    else
      log_variance = torch::Tensor();
  }

  /// Combined loss of `losses` (task name -> scalar). Every task must be
  /// present, and nothing else: a misspelt name never silently drops a loss.
  torch::Tensor forward(const torch::OrderedDict<std::string, torch::Tensor>& losses) {
    const auto& tasks = options.tasks();
    if (tasks.empty()) throw Error("MultiTaskLoss: no tasks");
    for (const auto& item : losses.keys())
      if (std::find(tasks.begin(), tasks.end(), item) == tasks.end())
        throw Error(detail::concat("MultiTaskLoss: loss '", item, "' is not one of its tasks"));
    std::vector<torch::Tensor> terms;
    terms.reserve(tasks.size());
    for (size_t i = 0; i < tasks.size(); ++i) {
      const auto* loss = losses.find(tasks[i]);
      if (!loss) throw Error(detail::concat("MultiTaskLoss: no loss for task '", tasks[i], "'"));
      if (loss->numel() != 1)
        throw TensorError(detail::concat("MultiTaskLoss: loss '", tasks[i], "' must be a scalar, got ", loss->sizes()));
      auto term = loss->reshape({});
      if (log_variance.defined()) {
        const auto s = log_variance[static_cast<int64_t>(i)].to(term.scalar_type());
        term = 0.5 * torch::exp(-s) * term + 0.5 * s;
      }
      terms.push_back(term * weights[static_cast<int64_t>(i)].to(term.scalar_type()));
    }
    return torch::stack(terms).sum();
  }

  /// The factor each task's loss is multiplied by now (for logging):
  /// w_i, or w_i·½·exp(−s_i) under Uncertainty.
  torch::Tensor effective_weights() const {
    torch::NoGradGuard no_grad;
    if (!log_variance.defined()) return weights.clone();
    return weights * 0.5 * torch::exp(-log_variance.to(weights.scalar_type()));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::MultiTaskLoss(tasks=" << options.tasks().size()
           << (options.weighting() == TaskWeighting::Uncertainty ? ", uncertainty" : ", fixed") << ")";
  }

  MultiTaskLossOptions options;
  torch::Tensor weights;       ///< [T] buffer
  torch::Tensor log_variance;  ///< [T] parameter s_i under Uncertainty, else undefined
};

TORCH_MODULE(MultiTaskLoss);

} // namespace rectrain
