#pragma once
// Freezing named groups of parameters between epochs (the recipe trains
// with the embedding tables frozen, then unfreezes them for a last epoch).
//
// A group is a pattern over full parameter names as named_parameters()
// gives them ("user_tower.features.user.weight"): '*' matches any run of
// characters, and a pattern without '*' matches that name and everything
// under it ("user_tower.features" is the whole group). A pattern matching
// nothing is an error, so a typo never leaves a group silently trainable.
//
// Freezing clears the gradient as well as requires_grad: LibTorch's
// optimizers skip a parameter whose gradient is undefined, whereas a stale
// (or zeroed) one would let Adam's momentum keep moving it. Unfreezing
// resumes the optimizer's state for it where it stopped; frozen parameters
// can stay in the optimizer the whole time.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rectrain {

namespace detail {

/// Glob match with '*' only.
inline bool glob_match(const char* pattern, const char* text) {
  const char* star = nullptr;
  const char* resume = nullptr;
  while (*text) {
    if (*pattern == '*') {
      star = pattern++;
      resume = text;
    } else if (*pattern == *text) {
      ++pattern;
      ++text;
    } else if (star) {
      pattern = star + 1;
      text = ++resume;
    } else {
      return false;
    }
  }
  while (*pattern == '*') ++pattern;
  return *pattern == '\0';
}

inline bool parameter_matches(const std::string& pattern, const std::string& name) {
  if (pattern.find('*') != std::string::npos) return glob_match(pattern.c_str(), name.c_str());
  return name == pattern || (name.size() > pattern.size() && name.compare(0, pattern.size(), pattern) == 0 &&
                             name[pattern.size()] == '.');
}

/// Starts or stops gradients to one parameter; stopping also drops its
/// gradient, which optimizers then skip (see the top of this header).
inline void set_trainable(torch::Tensor parameter, bool trainable) {
  parameter.set_requires_grad(trainable);
  if (!trainable) parameter.mutable_grad().reset();
}

inline void set_trainable(torch::nn::Module& module, const std::vector<std::string>& patterns, bool trainable) {
  const auto params = module.named_parameters();
  for (const auto& pattern : patterns) {
    bool any = false;
    for (const auto& p : params)
      if (parameter_matches(pattern, p.key())) {
        any = true;
        set_trainable(p.value(), trainable);
      }
    if (!any)
      throw Error(concat(trainable ? "unfreeze" : "freeze", ": no parameter matches '", pattern,
                         "' (parameters: ", join_names(params.keys()), ")"));
  }
}

} // namespace detail

/// Names of the parameters of `module` that `pattern` selects.
inline std::vector<std::string> matching_parameters(const torch::nn::Module& module, const std::string& pattern) {
  std::vector<std::string> out;
  for (const auto& p : module.named_parameters())
    if (detail::parameter_matches(pattern, p.key())) out.push_back(p.key());
  return out;
}

/// Stops gradients to every parameter a pattern selects.
inline void freeze(torch::nn::Module& module, const std::vector<std::string>& patterns) {
  detail::set_trainable(module, patterns, false);
}

/// Lets gradients reach every parameter a pattern selects again.
inline void unfreeze(torch::nn::Module& module, const std::vector<std::string>& patterns) {
  detail::set_trainable(module, patterns, true);
}

/// Whether any parameter `pattern` selects is frozen.
inline bool is_frozen(const torch::nn::Module& module, const std::string& pattern) {
  for (const auto& p : module.named_parameters())
    if (detail::parameter_matches(pattern, p.key()) && !p.value().requires_grad()) return true;
  return false;
}

} // namespace rectrain
