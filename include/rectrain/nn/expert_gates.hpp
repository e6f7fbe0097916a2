#pragma once
// ExpertGates: multi-task expert layers. Shared experts (MLPs over the same
// input) serve every task; each task mixes them with a gate of its own, a
// softmax over the experts computed from the input:
//
//   h_t = Σ_k softmax(W_t x)_k · E_k(x)
//
// That is MMoE (Ma et al., KDD 2018). With task_experts > 0, each task also
// has experts of its own, which only its gate sees (Customized Gate
// Control, the layer of PLE: Tang et al., RecSys 2020): tasks that
// disagree (like against watch time) stop pulling the same weights.
//
//   ExpertGates experts(ExpertGatesOptions(in, MlpBlocks({256})).shared_experts(4).task_experts(1));
//   experts->add_task("target");
//   experts->add_task("like");
//   auto h = experts(x);  // one [..., 256] per task, in the order added
//
// Ranker builds one when RankerOptions::experts is set, and gives each
// head its own task's output.

#include <rectrain/core/error.hpp>
#include <rectrain/nn/composite.hpp>
#include <rectrain/nn/mlp.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

namespace rectrain {

struct ExpertGatesOptions {
  ExpertGatesOptions(int64_t input_dim, MlpBlocks expert) : input_dim_(input_dim), expert_(std::move(expert)) {}
  TORCH_ARG(int64_t, input_dim);
  /// Each expert's blocks (its last width is the output width).
  TORCH_ARG(MlpBlocks, expert);
  /// Experts every task's gate mixes.
  TORCH_ARG(int64_t, shared_experts) = 4;
  /// Experts of each task's own (0: MMoE; > 0: PLE's gate control).
  TORCH_ARG(int64_t, task_experts) = 0;
};

class ExpertGatesImpl : public torch::nn::Cloneable<ExpertGatesImpl> {
 public:
  explicit ExpertGatesImpl(ExpertGatesOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.input_dim() <= 0 || options.expert().widths().empty() || options.shared_experts() < 0 ||
        options.task_experts() < 0 || options.shared_experts() + options.task_experts() < 1)
      throw Error(detail::concat("ExpertGates: need input_dim > 0, expert widths, and at least one expert, got "
                                 "input_dim ", options.input_dim(), ", ", options.expert().widths().size(),
                                 " widths, ", options.shared_experts(), " shared and ", options.task_experts(),
                                 " task experts"));
    shared = register_module("shared", torch::nn::ModuleList());
    for (int64_t k = 0; k < options.shared_experts(); ++k) shared->push_back(make_expert());
    tasks = register_module("tasks", torch::nn::ModuleDict());
    names_.clear();
    own_.clear();
    gates_.clear();
  }

  /// Adds a task: its gate and its own experts. Add every task before
  /// creating the optimizer.
  ExpertGatesImpl& add_task(const std::string& name) {
    detail::check_module_name("ExpertGates::add_task", name);
    if (tasks->contains(name)) throw Error(detail::concat("ExpertGates: the task '", name, "' exists already"));
    auto task = std::make_shared<torch::nn::Module>();
    auto own = torch::nn::ModuleList();
    for (int64_t k = 0; k < options.task_experts(); ++k) own->push_back(make_expert());
    own_.push_back(task->register_module("experts", own));
    gates_.push_back(task->register_module(
        "gate", torch::nn::Linear(options.input_dim(), options.shared_experts() + options.task_experts())));
    tasks->update({{name, task}});
    names_.push_back(name);
    return *this;
  }

  /// [..., input_dim] -> one [..., output_dim()] per task, in the order
  /// added. `mask` as Mlp's (BatchNorm statistics from real rows).
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& mask = {}) {
    if (names_.empty()) throw Error("ExpertGates: no tasks; add_task() some first");
    detail::check_last_dim("ExpertGates", "input", x, options.input_dim());
    std::vector<torch::Tensor> shared_out;
    for (const auto& e : *shared) shared_out.push_back(e->as<MlpImpl>()->forward(x, mask));
    std::vector<torch::Tensor> out;
    for (size_t t = 0; t < names_.size(); ++t) {
      auto outputs = shared_out;
      for (const auto& e : *own_[t]) outputs.push_back(e->as<MlpImpl>()->forward(x, mask));
      const auto gate = torch::softmax(gates_[t]->forward(x), -1);
      // [..., experts, width] weighted by [..., experts, 1]
      out.push_back((torch::stack(outputs, -2) * gate.unsqueeze(-1)).sum(-2));
    }
    return out;
  }

  /// Each task's gate weights over its experts ([..., shared + task experts]):
  /// which experts a task leans on.
  torch::Tensor gate_weights(const std::string& task, const torch::Tensor& x) {
    const auto at = std::find(names_.begin(), names_.end(), task);
    if (at == names_.end()) throw Error(detail::concat("ExpertGates: no task '", task, "'"));
    return torch::softmax(gates_[static_cast<size_t>(at - names_.begin())]->forward(x), -1);
  }

  int64_t output_dim() const { return options.expert().widths().back(); }
  /// Every expert (shared, then each task's own), and every task's gate.
  std::vector<const MlpImpl*> expert_modules() const {
    std::vector<const MlpImpl*> out;
    for (const auto& e : *shared) out.push_back(e->as<MlpImpl>());
    for (const auto& own : own_)
      for (const auto& e : *own) out.push_back(e->as<MlpImpl>());
    return out;
  }
  std::vector<const torch::nn::LinearImpl*> gate_modules() const {
    std::vector<const torch::nn::LinearImpl*> out;
    for (const auto& g : gates_) out.push_back(g.get());
    return out;
  }
  const std::vector<std::string>& task_names() const { return names_; }

  std::shared_ptr<torch::nn::Module> clone(
      const compat::optional<torch::Device>& device = compat::nullopt) const override {
    auto copy = std::make_shared<ExpertGatesImpl>(options);
    for (const auto& name : names_) copy->add_task(name);
    detail::copy_weights(*this, *copy);
    if (device) copy->to(*device);
    copy->train(is_training());
    return copy;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::ExpertGates(input_dim=" << options.input_dim() << ", shared_experts="
           << options.shared_experts() << ", task_experts=" << options.task_experts() << ", tasks=" << names_.size()
           << ")";
  }

  ExpertGatesOptions options;
  torch::nn::ModuleList shared{nullptr};
  torch::nn::ModuleDict tasks{nullptr};

 private:
  Mlp make_expert() const { return Mlp(options.expert().with_input(options.input_dim())); }
  std::vector<std::string> names_;
  std::vector<torch::nn::ModuleList> own_;
  std::vector<torch::nn::Linear> gates_;
};

TORCH_MODULE(ExpertGates);

} // namespace rectrain
