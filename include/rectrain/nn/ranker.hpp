#pragma once
// Ranker: the recipe's model. A user tower and an item tower encode each
// row, a shared MLP reads their concatenation, and every head predicts its
// own signal from that representation; a MultiTaskLoss combines the heads'
// losses (fixed weights or learned uncertainty weighting).
//
//   Ranker ranker(user_tower, item_tower, RankerOptions(MlpBlocks({512, 256})));
//   ranker->add_head("target", RankingHead(ranker->hidden_dim()))
//          .add_head("like", BinaryHead(ranker->hidden_dim(), "like"));
//   auto predictions = ranker->forward(batch);        // head -> [B, G]
//   auto loss = ranker->loss(predictions, batch);     // scalar
//   auto terms = ranker->loss_terms(predictions, batch);  // per head, and combined

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/loss/loss_terms.hpp>
#include <rectrain/loss/multi_task.hpp>
#include <rectrain/nn/composite.hpp>
#include <rectrain/nn/cross_network.hpp>
#include <rectrain/nn/expert_gates.hpp>
#include <rectrain/nn/head.hpp>
#include <rectrain/nn/mlp.hpp>
#include <rectrain/nn/tower.hpp>

#include <torch/torch.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace rectrain {

struct RankerOptions {
  /* implicit */ RankerOptions(MlpBlocks shared = {}) : shared_(std::move(shared)) {}
  /// Blocks of the MLP over [user tower ‖ item tower].
  TORCH_ARG(MlpBlocks, shared);
  /// How the heads' losses are combined (weights come with add_head).
  TORCH_ARG(TaskWeighting, weighting) = TaskWeighting::Fixed;
  /// DCNv2 cross layers over [user tower ‖ item tower] before the shared
  /// MLP (0: none; CrossNetwork).
  TORCH_ARG(int64_t, cross_layers) = 0;
  /// Their rank (0: full-rank).
  TORCH_ARG(int64_t, cross_rank) = 0;
  /// Multi-task experts instead of the one shared MLP (0: none): this many
  /// experts, each an MLP of the `shared` blocks, which every head mixes
  /// with a gate of its own (MMoE; ExpertGates).
  TORCH_ARG(int64_t, experts) = 0;
  /// Experts of each head's own beside those (PLE's gate control).
  TORCH_ARG(int64_t, task_experts) = 0;
};

class RankerImpl : public torch::nn::Cloneable<RankerImpl> {
 public:
  RankerImpl(Tower user_tower_, Tower item_tower_, RankerOptions options_ = {})
      : options(std::move(options_)), user_tower(std::move(user_tower_)), item_tower(std::move(item_tower_)) {
    reset();
  }

  void reset() override {
    if (user_tower.is_empty() || item_tower.is_empty()) throw Error("Ranker: both towers must be given");
    register_module("user_tower", user_tower);
    register_module("item_tower", item_tower);
    const int64_t input = user_tower->output_dim() + item_tower->output_dim();
    if (options.cross_layers() < 0) throw Error(detail::concat("Ranker: cross_layers must be >= 0, got ", options.cross_layers()));
    cross = options.cross_layers() > 0
                ? register_module("cross", CrossNetwork(CrossNetworkOptions(input).layers(options.cross_layers())
                                                            .rank(options.cross_rank())))
                : nullptr;
    if (options.experts() < 0 || options.task_experts() < 0)
      throw Error(detail::concat("Ranker: experts and task_experts must be >= 0, got ", options.experts(), " and ",
                                 options.task_experts()));
    if (options.experts() + options.task_experts() > 0) {
      if (options.shared().widths().empty()) throw Error("Ranker: experts need the shared blocks' widths (an expert's layers)");
      experts = register_module("experts", ExpertGates(ExpertGatesOptions(input, options.shared())
                                                           .shared_experts(options.experts())
                                                           .task_experts(options.task_experts())));
      mlp = register_module("mlp", Mlp(MlpOptions(input, {})));  // the identity: the experts are the shared layers
    } else {
      experts = nullptr;
      mlp = register_module("mlp", Mlp(options.shared().with_input(input)));
    }
    heads = register_module("heads", torch::nn::ModuleDict());
    entries_.clear();
    rebuild_task_loss();
  }

  /// Adds a head (any Cloneable module deriving from HeadInterface) whose
  /// loss enters the total with `weight`. Add every head before creating
  /// the optimizer.
  template <typename ModuleType>
  RankerImpl& add_head(const std::string& name, torch::nn::ModuleHolder<ModuleType> head, double weight = 1.0) {
    static_assert(std::is_base_of<HeadInterface, ModuleType>::value,
                  "Ranker::add_head: the module must derive from rectrain::HeadInterface");
    return add_head_module(name, head.ptr(), weight);
  }

  /// Type-erased add_head(): `module` must derive from HeadInterface.
  RankerImpl& add_head_module(const std::string& name, std::shared_ptr<torch::nn::Module> module, double weight = 1.0) {
    detail::check_module_name("Ranker::add_head", name);
    auto* head = dynamic_cast<HeadInterface*>(module.get());
    if (!head) throw Error(detail::concat("Ranker::add_head('", name, "'): the module does not derive from HeadInterface"));
    if (heads->contains(name)) throw Error(detail::concat("Ranker::add_head: the ranker already has a head '", name, "'"));
    if (head->input_dim() != hidden_dim())
      throw Error(detail::concat("Ranker::add_head('", name, "'): the head takes ", head->input_dim(),
                                 " inputs but the shared MLP gives ", hidden_dim(), " (use hidden_dim())"));
    heads->update({{name, module}});
    if (experts) experts->add_task(name);
    entries_.push_back({name, std::move(module), head, weight});
    rebuild_task_loss();
    return *this;
  }

  /// Width of the representation the heads read.
  int64_t hidden_dim() const { return experts ? experts->output_dim() : mlp->output_dim(); }

  /// The shared representation [B, G, hidden_dim()] (with experts: their
  /// input, [B, G, tower outputs]; each head reads its own mix).
  torch::Tensor hidden(const Batch& batch) {
    // Both towers' outputs as parts: towers that pass their features
    // through (the recipe's) give every feature, so one concatenation
    // builds the MLP's input instead of three.
    auto parts = user_tower->output_parts(batch.features, batch.mask);
    for (auto& part : item_tower->output_parts(batch.features, batch.mask)) parts.push_back(std::move(part));
    auto x = torch::cat(parts, -1);
    if (cross) x = cross(x);
    return mlp->forward(x, batch.mask);
  }

  /// Head name -> prediction [B, G], in the order the heads were added.
  torch::OrderedDict<std::string, torch::Tensor> forward(const Batch& batch) {
    if (entries_.empty()) throw Error("Ranker: no heads; add_head() some first");
    const auto h = hidden(batch);
    if (experts) {
      const auto per_head = experts->forward(h, batch.mask);
      torch::OrderedDict<std::string, torch::Tensor> out("Ranker prediction");
      for (size_t k = 0; k < entries_.size(); ++k) out.insert(entries_[k].name, entries_[k].head->forward(per_head[k]));
      return out;
    }
    // Heads that are one Linear(hidden, 1) (score_layer()) share one product.
    std::vector<bool> shared;
    std::vector<torch::Tensor> weights, biases;
    for (const auto& e : entries_) {
      auto* layer = e.head->score_layer();
      shared.push_back(layer && layer->bias.defined());
      if (shared.back()) {
        weights.push_back(layer->weight);
        biases.push_back(layer->bias);
      }
    }
    torch::Tensor shared_scores;  // [heads, rows]
    if (weights.size() > 1)
      shared_scores =
          torch::addmm(torch::cat(biases), h.reshape({-1, h.size(-1)}), torch::cat(weights).t()).t().contiguous();
    torch::OrderedDict<std::string, torch::Tensor> out("Ranker prediction");
    int64_t next = 0;
    for (size_t k = 0; k < entries_.size(); ++k) {
      const auto& e = entries_[k];
      if (shared_scores.defined() && shared[k])
        out.insert(e.name, shared_scores[next++].view(h.sizes().slice(0, h.dim() - 1)));
      else
        out.insert(e.name, e.head->forward(h));
    }
    return out;
  }

  /// Head name -> its loss on `batch`.
  torch::OrderedDict<std::string, torch::Tensor> losses(const torch::OrderedDict<std::string, torch::Tensor>& predictions,
                                                        const Batch& batch) {
    torch::OrderedDict<std::string, torch::Tensor> out("Ranker loss");
    for (const auto& e : entries_) {
      const auto* p = predictions.find(e.name);
      if (!p) throw Error(detail::concat("Ranker::losses: no prediction for head '", e.name, "'"));
      out.insert(e.name, e.head->loss(*p, batch));
    }
    return out;
  }

  /// Every head's loss and their combination: what train_epoch asks of a
  /// model (see LossTerms).
  LossTerms loss_terms(const torch::OrderedDict<std::string, torch::Tensor>& predictions, const Batch& batch) {
    LossTerms terms{losses(predictions, batch), {}};
    terms.total = task_loss->forward(terms.heads);
    return terms;
  }

  /// The combined training loss.
  torch::Tensor loss(const torch::OrderedDict<std::string, torch::Tensor>& predictions, const Batch& batch) {
    return loss_terms(predictions, batch).total;
  }

  /// The head registered as `name`, as its own type.
  template <typename ModuleType>
  std::shared_ptr<ModuleType> head(const std::string& name) const {
    return detail::typed_child<ModuleType>(heads, name, "Ranker: head");
  }

  std::vector<std::string> head_names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

  std::shared_ptr<torch::nn::Module> clone(
      const compat::optional<torch::Device>& device = compat::nullopt) const override {
    auto copy = std::make_shared<RankerImpl>(detail::clone_module(user_tower, device),
                                             detail::clone_module(item_tower, device), options);
    if (cross) copy->cross = copy->replace_module("cross", detail::clone_module(cross, device));
    copy->mlp = copy->replace_module("mlp", detail::clone_module(mlp, device));
    for (const auto& e : entries_) copy->add_head_module(e.name, e.module->clone(device), e.weight);
    if (experts) copy->experts = copy->replace_module("experts", detail::clone_module(experts, device));
    copy->task_loss = copy->replace_module("task_loss", detail::clone_module(task_loss, device));
    copy->train(is_training());
    return copy;
  }

  void pretty_print(std::ostream& stream) const override { stream << "rectrain::Ranker"; }

  RankerOptions options;
  Tower user_tower{nullptr};
  Tower item_tower{nullptr};
  CrossNetwork cross{nullptr};  ///< null without cross layers
  ExpertGates experts{nullptr};  ///< null without experts
  Mlp mlp{nullptr};
  torch::nn::ModuleDict heads{nullptr};
  MultiTaskLoss task_loss{nullptr};

 private:
  struct Entry {
    std::string name;
    std::shared_ptr<torch::nn::Module> module;
    HeadInterface* head;
    double weight;
  };

  void rebuild_task_loss() {
    std::vector<std::string> names;
    std::vector<double> weights;
    for (const auto& e : entries_) {
      names.push_back(e.name);
      weights.push_back(e.weight);
    }
    task_loss = detail::register_or_replace(
        *this, "task_loss", MultiTaskLoss(MultiTaskLossOptions(names).weights(weights).weighting(options.weighting())));
  }

  std::vector<Entry> entries_;
};

TORCH_MODULE(Ranker);

} // namespace rectrain
