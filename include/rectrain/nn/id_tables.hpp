#pragma once
// A model's id tables (CategoricalFeatures) found by name anywhere in its
// module tree, so a trainer can put ALS factors into them, freeze them or
// give them their own optimizer without knowing where they sit:
//
//   set_table(*model, "item", embedding_table(als.item));  // the Tower column "item"
//   set_table(*model, "item_tower.features.item", ...);    // or its full path
//
// A name matches a module whose path is the name, or ends with "." + name.

#include <rectrain/core/error.hpp>
#include <rectrain/nn/categorical_feature.hpp>

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// The paths (as named_modules() gives them) of every CategoricalFeature in
/// `root`, in registration order.
inline std::vector<std::string> categorical_feature_paths(const torch::nn::Module& root) {
  std::vector<std::string> out;
  for (const auto& m : root.named_modules("", /*include_self=*/false))
    if (std::dynamic_pointer_cast<CategoricalFeatureImpl>(m.value())) out.push_back(m.key());
  return out;
}

namespace detail {

/// The one CategoricalFeature of `root` that `name` selects, and its path;
/// an Error listing the tables there are when none or several match.
inline std::pair<std::string, std::shared_ptr<CategoricalFeatureImpl>> match_categorical_feature(
    const torch::nn::Module& root, const std::string& name) {
  std::pair<std::string, std::shared_ptr<CategoricalFeatureImpl>> found;
  std::vector<std::string> matches, all;
  for (const auto& m : root.named_modules("", /*include_self=*/false)) {
    auto feature = std::dynamic_pointer_cast<CategoricalFeatureImpl>(m.value());
    if (!feature) continue;
    const std::string& path = m.key();
    all.push_back(path);
    const bool match = path == name || (path.size() > name.size() && path[path.size() - name.size() - 1] == '.' &&
                                        path.compare(path.size() - name.size(), name.size(), name) == 0);
    if (match) {
      matches.push_back(path);
      found = {path, feature};
    }
  }
  if (matches.size() == 1) return found;
  throw Error(concat("id table '", name, "': ", matches.empty() ? "no" : "more than one",
                     " CategoricalFeature matches (", matches.empty() ? "tables: " : "matches: ",
                     join_names(matches.empty() ? all : matches), ")"));
}

} // namespace detail

/// The CategoricalFeature of `root` that `name` selects: exactly one must
/// match, else an Error listing the tables there are.
inline std::shared_ptr<CategoricalFeatureImpl> find_categorical_feature(const torch::nn::Module& root,
                                                                        const std::string& name) {
  return detail::match_categorical_feature(root, name).second;
}

/// Puts `table` into the id table `name` selects, outside autograd:
/// [n + 1, dim] as it is, or [n, dim] with the out-of-vocabulary row zero
/// (embedding_table builds either from ALS factors). The shape must match
/// the table's; NaN and Inf are refused.
inline void set_table(const torch::nn::Module& root, const std::string& name, const torch::Tensor& table) {
  const auto [path, feature] = detail::match_categorical_feature(root, name);
  try {
    feature->set_weight(table);
  } catch (const TensorError& e) {
    throw TensorError(detail::concat("set_table('", name, "', ", path, "): ", e.what()));
  }
}

/// The weight parameters' names (named_parameters() keys) of the id tables
/// `names` select: patterns for freeze() and for splitting optimizers.
inline std::vector<std::string> table_parameter_names(const torch::nn::Module& root,
                                                      const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& name : names) out.push_back(detail::match_categorical_feature(root, name).first + ".weight");
  return out;
}

} // namespace rectrain
