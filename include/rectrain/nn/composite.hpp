#pragma once
// Helpers for rectrain's modules that hold other modules of any type
// (Tower, Ranker, TwoTower): naming, typed lookup, rebuilding and cloning
// children.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <memory>
#include <string>

namespace rectrain {
namespace detail {

inline void check_module_name(const char* owner, const std::string& name) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw Error(concat(owner, ": name '", name, "' must be non-empty and contain no '.'"));
}

/// Child `name` of `dict` as ModuleType; `what` names it in errors.
template <typename ModuleType>
std::shared_ptr<ModuleType> typed_child(const torch::nn::ModuleDict& dict, const std::string& name, const char* what) {
  if (!dict->contains(name)) throw Error(concat(what, " '", name, "' does not exist"));
  auto module = std::dynamic_pointer_cast<ModuleType>(dict->operator[](name));
  if (!module) throw Error(concat(what, " '", name, "' is not of the requested type"));
  return module;
}

/// Registers `child` as `name` under `parent`, replacing the one there.
template <typename Holder>
Holder register_or_replace(torch::nn::Module& parent, const std::string& name, Holder child) {
  return Holder(parent.named_children().contains(name) ? parent.replace_module(name, child)
                                                       : parent.register_module(name, child));
}

/// A deep copy of `module` (on `device`, if given), as its own holder type.
template <typename Holder>
Holder clone_module(const Holder& module, const compat::optional<torch::Device>& device) {
  return Holder(std::dynamic_pointer_cast<typename Holder::ContainedType>(module->clone(device)));
}

/// Copies every parameter and buffer of `from` into `to`, a module of the
/// same structure (a clone), outside autograd.
inline void copy_weights(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  const auto src = from.named_parameters(), dst = to.named_parameters();
  for (const auto& p : src) dst[p.key()].copy_(p.value());
  const auto src_buffers = from.named_buffers(), dst_buffers = to.named_buffers();
  for (const auto& b : src_buffers) dst_buffers[b.key()].copy_(b.value());
}

} // namespace detail
} // namespace rectrain
