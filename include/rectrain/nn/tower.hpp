#pragma once
// Tower: named batch columns, each through its feature module, concatenated
// and passed through MLP blocks. The recipe's user tower is
//
//   Tower user(MlpBlocks{});                       // no blocks: the features as they are
//   user->add("user", CategoricalFeature(CategoricalFeatureOptions(users, 384).weight(als_table)))
//        .add("gender", CategoricalFeature(3, 4))
//        .add("age", NumericFeature(NumericFeatureOptions().scaling(NumericScaling::ZScore)));
//
// Like torch::nn::Sequential, a Tower holds modules of any type, so it
// clones each of them itself instead of rebuilding them in reset().

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/nn/composite.hpp>
#include <rectrain/nn/feature.hpp>
#include <rectrain/nn/mlp.hpp>

#include <torch/torch.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace rectrain {

class TowerImpl : public torch::nn::Cloneable<TowerImpl> {
 public:
  explicit TowerImpl(MlpBlocks blocks_ = {}) : blocks(std::move(blocks_)) { reset(); }

  void reset() override {
    features = register_module("features", torch::nn::ModuleDict());
    entries_.clear();
    rebuild_mlp();
  }

  /// Adds a feature that reads batch column `column` (a feature module is
  /// any Cloneable module deriving from FeatureInterface). Rebuilds the MLP
  /// for the new input width, so add every feature before creating the
  /// optimizer.
  template <typename ModuleType>
  TowerImpl& add(const std::string& column, torch::nn::ModuleHolder<ModuleType> feature) {
    static_assert(std::is_base_of<FeatureInterface, ModuleType>::value,
                  "Tower::add: the module must derive from rectrain::FeatureInterface");
    return add_module(column, feature.ptr());
  }

  /// Type-erased add(): `module` must derive from FeatureInterface.
  TowerImpl& add_module(const std::string& column, std::shared_ptr<torch::nn::Module> module) {
    detail::check_module_name("Tower::add", column);
    auto* feature = dynamic_cast<FeatureInterface*>(module.get());
    if (!feature) throw Error(detail::concat("Tower::add('", column, "'): the module does not derive from FeatureInterface"));
    if (features->contains(column)) throw Error(detail::concat("Tower::add: the tower already has a feature '", column, "'"));
    features->update({{column, module}});
    entries_.push_back({column, std::move(module), feature});
    rebuild_mlp();
    return *this;
  }

  /// Columns of `batch` (named as added) -> [B, G, output_dim()].
  torch::Tensor forward(const Batch& batch) { return encode(batch.features, batch.mask); }

  /// forward() over a plain dictionary of columns, with an optional row
  /// mask (used by BatchNorm blocks).
  torch::Tensor encode(const torch::OrderedDict<std::string, torch::Tensor>& columns, const torch::Tensor& mask = {}) {
    const auto parts = feature_parts(columns);
    auto x = parts.size() == 1 ? parts[0] : torch::cat(parts, -1);
    return mlp->forward(x, mask);
  }

  /// forward()'s output as parts whose concatenation it is: each feature's
  /// output when the tower has no MLP blocks, else the MLP's output. A
  /// model concatenating several towers builds its input in one cat.
  std::vector<torch::Tensor> output_parts(const torch::OrderedDict<std::string, torch::Tensor>& columns,
                                          const torch::Tensor& mask = {}) {
    if (mlp->linears.empty()) return feature_parts(columns);
    return {encode(columns, mask)};
  }

  /// Each feature's output [..., its output_dim()], in the order added:
  /// what encode() concatenates before the MLP.
  std::vector<torch::Tensor> feature_parts(const torch::OrderedDict<std::string, torch::Tensor>& columns) {
    if (entries_.empty()) throw Error("Tower: no features; add() some first");
    std::vector<torch::Tensor> parts;
    parts.reserve(entries_.size());
    for (const auto& e : entries_) {
      const auto* column = columns.find(e.column);
      if (!column)
        throw Error(detail::concat("Tower: no column '", e.column, "' in the batch (columns: ",
                                   detail::join_names(columns.keys()), ")"));
      parts.push_back(e.feature->forward(*column));
      if (parts.back().dim() == 0 || parts.back().size(-1) != e.feature->output_dim())
        throw TensorError(detail::concat("Tower: feature '", e.column, "' returned ", parts.back().sizes(),
                                         ", expected [..., ", e.feature->output_dim(), "]"));
    }
    return parts;
  }

  /// The feature module reading `column`, as its own type.
  template <typename ModuleType>
  std::shared_ptr<ModuleType> feature(const std::string& column) const {
    return detail::typed_child<ModuleType>(features, column, "Tower: feature");
  }

  std::vector<std::string> columns() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.column);
    return out;
  }

  /// Width of the concatenated features (the MLP's input).
  int64_t feature_dim() const {
    int64_t dim = 0;
    for (const auto& e : entries_) dim += e.feature->output_dim();
    return dim;
  }
  int64_t output_dim() const { return mlp->output_dim(); }

  std::shared_ptr<torch::nn::Module> clone(
      const compat::optional<torch::Device>& device = compat::nullopt) const override {
    auto copy = std::make_shared<TowerImpl>(blocks);
    for (const auto& e : entries_) copy->add_module(e.column, e.module->clone(device));
    copy->mlp = copy->replace_module("mlp", detail::clone_module(mlp, device));
    copy->train(is_training());
    return copy;
  }

  void pretty_print(std::ostream& stream) const override { stream << "rectrain::Tower"; }

  MlpBlocks blocks;
  torch::nn::ModuleDict features{nullptr};
  Mlp mlp{nullptr};

 private:
  struct Entry {
    std::string column;
    std::shared_ptr<torch::nn::Module> module;
    FeatureInterface* feature;
  };

  void rebuild_mlp() {
    // A tower with no features yet gets a placeholder width of 1.
    mlp = detail::register_or_replace(*this, "mlp", Mlp(blocks.with_input(std::max<int64_t>(1, feature_dim()))));
  }

  std::vector<Entry> entries_;
};

TORCH_MODULE(Tower);

} // namespace rectrain
