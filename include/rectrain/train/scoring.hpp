#pragma once
// Scores with a trained multi-head model: groups of rows are gathered by a
// BatchSpec in chunks, run in eval mode without autograd on the model's
// device, and one head's predictions come back on the CPU. Used for
// validation (held-out groups) and for candidates.csv.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/batch_spec.hpp>

#include <torch/torch.h>

#include <string>

namespace rectrain {

/// Puts a module in eval mode for a scope and restores its train / eval
/// mode on leaving it, by an exception too.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& module) : module_(module), was_training_(module.is_training()) {
    module_.eval();
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;
  ~EvalModeGuard() { module_.train(was_training_); }

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

struct ScoreOptions {
  /// The head whose prediction is the score.
  TORCH_ARG(std::string, head) = "target";
  /// Rows gathered and scored at once (rounded to whole groups).
  TORCH_ARG(int64_t, chunk_rows) = 65536;
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Forward under autocast to this type, as in training.
  TORCH_ARG(compat::optional<at::ScalarType>, autocast) = compat::nullopt;
};

/// Scores of `rows` ([N, G] int64 indices into `spec`'s rows, -1 padding)
/// as a [N, G] float32 CPU tensor (padding scores 0). The model's train /
/// eval mode is restored afterwards, also when scoring throws.
template <typename ModelHolder>
torch::Tensor score_groups(ModelHolder& model, const BatchSpec& spec, const torch::Tensor& rows,
                           const ScoreOptions& options = {}) {
  if (!rows.defined() || rows.dim() != 2 || rows.scalar_type() != torch::kInt64)
    throw TensorError(detail::concat("score_groups rows: expected [N, G] int64, got ", detail::shape_of(rows)));
  if (options.chunk_rows() < 1) throw Error("score_groups: chunk_rows must be >= 1");
  const int64_t groups = rows.size(0), g = std::max<int64_t>(1, rows.size(1));
  const int64_t chunk = std::max<int64_t>(1, options.chunk_rows() / g);
  auto out = torch::zeros({groups, rows.size(1)}, torch::kFloat32);
  const EvalModeGuard eval_mode(*model);
  torch::NoGradGuard no_grad;
  for (int64_t first = 0; first < groups; first += chunk) {
    const auto part = rows.slice(0, first, std::min(groups, first + chunk));
    const auto batch = spec.gather(part).to(options.device());
    const auto predictions =
        compat::with_autocast(options.device(), options.autocast(), [&] { return model->forward(batch); });
    const auto* found = predictions.find(options.head());
    if (!found)
      throw Error(detail::concat("score_groups: the model has no head '", options.head(), "' (heads: ",
                                 detail::join_names(predictions.keys()), ")"));
    const auto& scores = *found;
    out.slice(0, first, first + part.size(0)).copy_(scores.to(torch::kCPU, torch::kFloat32).masked_fill(
        ~batch.mask.to(torch::kCPU), 0));
  }
  return out;
}

} // namespace rectrain
