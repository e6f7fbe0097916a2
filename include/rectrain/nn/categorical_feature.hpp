#pragma once
// CategoricalFeature: an embedding table over ids 0..num_categories-1 with
// one out-of-vocabulary row last. Every other id (-1 for unknown or padded
// rows, ids past the vocabulary) reads that row, so a model never indexes
// out of range on unseen users or items. The table can start from factors
// (embedding_table()'s output: ALS rows, OOV row last), be frozen, return
// L2-normalised rows, and produce sparse gradients.

#include <rectrain/core/error.hpp>
#include <rectrain/nn/feature.hpp>
#include <rectrain/nn/freezing.hpp>

#include <torch/torch.h>

namespace rectrain {

struct CategoricalFeatureOptions {
  CategoricalFeatureOptions(int64_t num_categories, int64_t dim) : num_categories_(num_categories), dim_(dim) {}
  /// Known ids are 0..num_categories-1; the table has num_categories + 1 rows.
  TORCH_ARG(int64_t, num_categories);
  TORCH_ARG(int64_t, dim);
  /// Initial table: [num_categories + 1, dim] (OOV row included) or
  /// [num_categories, dim] (the OOV row starts at zero). Undefined: random
  /// N(0, init_std²) rows and a zero OOV row.
  TORCH_ARG(torch::Tensor, weight) = {};
  TORCH_ARG(double, init_std) = 0.01;
  /// Divide every looked-up row by its L2 norm (a zero row stays zero).
  TORCH_ARG(bool, normalize) = false;
  /// Sparse gradients (for optimizers that take them: SGD, Adagrad).
  TORCH_ARG(bool, sparse) = false;
  /// Start with the table frozen (no gradient until unfreeze()).
  TORCH_ARG(bool, frozen) = false;
};

class CategoricalFeatureImpl : public torch::nn::Cloneable<CategoricalFeatureImpl>, public FeatureInterface {
 public:
  CategoricalFeatureImpl(int64_t num_categories, int64_t dim)
      : CategoricalFeatureImpl(CategoricalFeatureOptions(num_categories, dim)) {}
  explicit CategoricalFeatureImpl(CategoricalFeatureOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.num_categories() < 0 || options.dim() <= 0)
      throw Error(detail::concat("CategoricalFeature: need num_categories >= 0 and dim > 0, got ",
                                 options.num_categories(), " and ", options.dim()));
    if (!(options.init_std() >= 0))
      throw Error(detail::concat("CategoricalFeature: init_std must be >= 0, got ", options.init_std()));
    weight = register_parameter("weight", torch::empty({options.num_categories() + 1, options.dim()}));
    if (options.weight().defined()) {
      set_weight(options.weight());
      options.weight(torch::Tensor());  // the parameter holds it now; don't keep a second copy alive
    } else {
      torch::NoGradGuard no_grad;
      weight.normal_(0, options.init_std());
      weight[options.num_categories()].zero_();
    }
    weight.set_requires_grad(!options.frozen());
  }

  /// Copies `table` into the weight (outside autograd): [n + 1, dim] as is,
  /// or [n, dim] with the OOV row set to zero. Rejects NaN and Inf.
  void set_weight(const torch::Tensor& table) {
    const int64_t n = options.num_categories();
    if (!table.defined() || table.dim() != 2 || table.size(1) != options.dim() ||
        (table.size(0) != n && table.size(0) != n + 1))
      throw TensorError(detail::concat("CategoricalFeature weight: expected [", n + 1, ", ", options.dim(), "] or [",
                                       n, ", ", options.dim(), "], got ", detail::shape_of(table)));
    if (!at::isFloatingType(table.scalar_type()))
      throw TensorError(detail::concat("CategoricalFeature weight: expected a floating tensor, got ", table.scalar_type()));
    if (!torch::isfinite(table).all().item<bool>())
      throw TensorError("CategoricalFeature weight: the table has NaN or Inf entries");
    torch::NoGradGuard no_grad;
    weight.narrow(0, 0, table.size(0)).copy_(table);
    if (table.size(0) == n) weight[n].zero_();
  }

  void freeze() {
    detail::set_trainable(weight, false);
    options.frozen(true);
  }
  void unfreeze() {
    detail::set_trainable(weight, true);
    options.frozen(false);
  }
  bool is_frozen() const { return !weight.requires_grad(); }

  /// Row of `id` in the table: id itself when known, else the OOV row.
  torch::Tensor rows(const torch::Tensor& ids) const {
    if (!ids.defined() || at::isFloatingType(ids.scalar_type()) || ids.scalar_type() == torch::kBool)
      throw TensorError(detail::concat("CategoricalFeature: ids must be an integer tensor, got ",
                                       ids.defined() ? detail::concat(ids.scalar_type(), " ", ids.sizes())
                                                     : std::string("undefined")));
    const int64_t n = options.num_categories();
    auto index = ids.to(torch::kInt64);
    return index.masked_fill((index < 0) | (index >= n), n);
  }

  /// ids of any shape -> [..., dim].
  torch::Tensor forward(const torch::Tensor& ids) override {
    auto out = torch::embedding(weight, rows(ids), /*padding_idx=*/-1, /*scale_grad_by_freq=*/false, options.sparse());
    if (options.normalize()) out = out / out.norm(2, -1, true).clamp_min(1e-12);
    return out;
  }

  int64_t output_dim() const override { return options.dim(); }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::CategoricalFeature(num_categories=" << options.num_categories() << ", dim=" << options.dim()
           << (options.normalize() ? ", normalize" : "") << (options.sparse() ? ", sparse" : "")
           << (is_frozen() ? ", frozen" : "") << ")";
  }

  CategoricalFeatureOptions options;
  /// [num_categories + 1, dim]; the last row is the out-of-vocabulary row.
  torch::Tensor weight;
};

TORCH_MODULE(CategoricalFeature);

} // namespace rectrain
