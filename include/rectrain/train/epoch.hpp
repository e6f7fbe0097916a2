#pragma once
// One training epoch of a multi-head model (a Ranker, or any module with
// the same forward / loss_terms shape, see train_epoch) over a
// BatchPipeline, with
// the figures a trainer reports: rows/s, the share of time spent waiting for
// data, and the mean loss of every head. A loss that stops being finite
// stops the epoch with an error naming the head and the batch (checked
// after every batch on the CPU; on a GPU at each progress report and at the
// end of the epoch, to avoid a device sync per batch).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/crash_point.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/data/batch_pipeline.hpp>
#include <rectrain/loss/loss_terms.hpp>

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// Where an epoch stands, for progress lines.
struct EpochProgress {
  int64_t epoch = 0;
  int64_t batch = 0;    ///< batches done
  int64_t batches = 0;  ///< batches in the epoch
  int64_t rows = 0;     ///< real rows done
  double seconds = 0;
  double loss = 0;  ///< mean combined loss so far
  double rows_per_second() const { return seconds > 0 ? static_cast<double>(rows) / seconds : 0; }
  double eta_seconds() const {
    return batch > 0 ? seconds * static_cast<double>(batches - batch) / static_cast<double>(batch) : 0;
  }
};

/// What an epoch did.
struct EpochStats {
  int64_t epoch = 0;
  int64_t batches = 0;
  int64_t rows = 0;
  double seconds = 0;
  double wait_seconds = 0;  ///< the training loop waiting for the pipeline
  double loss = 0;          ///< mean combined loss over batches
  std::vector<std::pair<std::string, double>> head_losses;  ///< mean per head
  double rows_per_second() const { return seconds > 0 ? static_cast<double>(rows) / seconds : 0; }
  double data_wait_share() const { return seconds > 0 ? wait_seconds / seconds : 0; }
};

struct TrainEpochOptions {
  /// Clip the global gradient norm to this value (0: no clipping).
  TORCH_ARG(double, clip_grad_norm) = 0;
  /// Run the forward pass under autocast to this type (kBFloat16 on CPU or
  /// CUDA, kHalf on CUDA); losses are computed in float32.
  TORCH_ARG(compat::optional<at::ScalarType>, autocast) = compat::nullopt;
  /// Seconds between on_progress calls (each reads the running loss, one
  /// device sync).
  TORCH_ARG(double, progress_seconds) = 1.0;
  TORCH_ARG(std::function<void(const EpochProgress&)>, on_progress) = nullptr;
  /// Called before every backward pass, with the batch's index in the
  /// epoch (DataParallel::begin_step goes here).
  TORCH_ARG(std::function<void(int64_t batch)>, before_backward) = nullptr;
  /// Called after every backward pass, before clipping and the optimizer
  /// steps, with the batch's index in the epoch: where gradients are
  /// exchanged between processes, or inspected.
  TORCH_ARG(std::function<void(int64_t batch)>, after_backward) = nullptr;
};

namespace detail {

/// Throws when a running loss sum is not finite, naming the head.
inline void check_finite_losses(const torch::Tensor& sums, const std::vector<std::string>& names, int64_t epoch,
                                int64_t first_batch, int64_t last_batch) {
  const auto host = sums.to(torch::kCPU, torch::kFloat64);
  const double* v = host.data_ptr<double>();
  for (size_t i = 0; i < names.size(); ++i)
    if (!std::isfinite(v[i]))
      throw Error(concat("training diverged: the ", names[i], " loss became ",
                         std::isnan(v[i]) ? "NaN" : (v[i] > 0 ? "+inf" : "-inf"), " in epoch ", epoch,
                         " between batches ", first_batch, " and ", last_batch,
                         "; lower the learning rate, clip gradients (clip_grad_norm), or check the inputs "
                         "for NaN or infinite values"));
}

} // namespace detail

/// Trains `model` for one epoch: starts `epoch` in the pipeline, and for
/// every batch runs forward, the loss terms, the backward pass of their
/// total (between options.before_backward and options.after_backward), gradient clipping and a step of every
/// optimizer. `model` is a module holder (a Ranker, or a TORCH_MODULE of
/// your own) with
///
///   torch::OrderedDict<std::string, torch::Tensor> forward(const Batch&);
///   LossTerms loss_terms(const torch::OrderedDict<std::string, torch::Tensor>& predictions, const Batch&);
///
/// forward runs under options.autocast when set; its predictions are
/// converted to float32 before loss_terms. The optimizers together must
/// cover every parameter that should train (a parameter in none of them
/// keeps its gradient and never moves).
template <typename ModelHolder>
EpochStats train_epoch(ModelHolder& model, const std::vector<torch::optim::Optimizer*>& optimizers,
                       BatchPipeline& pipeline, int64_t epoch, const TrainEpochOptions& options = {}) {
  if (optimizers.empty()) throw Error("train_epoch: no optimizer given");
  model->train();
  pipeline.start_epoch(epoch);
  const Stopwatch clock;
  const auto elapsed = [&clock] { return clock.seconds(); };
  EpochStats stats;
  stats.epoch = epoch;
  std::vector<std::string> names;
  torch::Tensor sums;  // [heads + 1]: every head's loss, then the combined one, summed over batches
  EpochProgress progress;
  progress.epoch = epoch;
  progress.batches = pipeline.sampler().num_batches();
  double next_report = options.progress_seconds();
  int64_t checked_batches = 0;
  std::vector<torch::Tensor> parameters;
  if (options.clip_grad_norm() > 0) parameters = model->parameters();

  while (auto batch = pipeline.next()) {
    for (auto* optimizer : optimizers) compat::zero_grad(*optimizer);
    auto predictions =
        compat::with_autocast(batch->mask.device(), options.autocast(), [&] { return model->forward(*batch); });
    if (options.autocast())
      for (auto& p : predictions) p.value() = p.value().to(torch::kFloat32);
    const LossTerms terms = model->loss_terms(predictions, *batch);
    const auto& losses = terms.heads;
    const auto& loss = terms.total;
    if (!loss.defined() || loss.dim() != 0)
      throw TensorError(detail::concat("train_epoch: loss_terms().total must be a scalar, got ",
                                       detail::shape_of(loss)));
    if (options.before_backward()) options.before_backward()(stats.batches);
    loss.backward();
    if (options.after_backward()) options.after_backward()(stats.batches);
    if (options.clip_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(parameters, options.clip_grad_norm());
    for (auto* optimizer : optimizers) optimizer->step();
    detail::crash_point("epoch.step");

    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> values;
      for (const auto& l : losses) values.push_back(l.value().detach().reshape({}).to(torch::kFloat64));
      values.push_back(loss.detach().reshape({}).to(torch::kFloat64));
      const auto v = torch::stack(values);
      if (!sums.defined()) {
        sums = v;
        names = losses.keys();
        names.push_back("combined");
      } else {
        sums.add_(v);
      }
    }
    ++stats.batches;
    // On the CPU every batch is checked (no sync to pay), so the error names
    // the head that failed first, before NaN spreads through shared layers.
    if (sums.is_cpu()) {
      detail::check_finite_losses(sums, names, epoch, checked_batches, stats.batches);
      checked_batches = stats.batches;
    }
    if (options.on_progress() && elapsed() >= next_report) {
      detail::check_finite_losses(sums, names, epoch, checked_batches, stats.batches);
      checked_batches = stats.batches;
      progress.batch = stats.batches;
      progress.rows = pipeline.stats().rows;
      progress.seconds = elapsed();
      progress.loss = sums[-1].item<double>() / static_cast<double>(stats.batches);
      options.on_progress()(progress);
      next_report = progress.seconds + options.progress_seconds();
    }
  }
  stats.seconds = elapsed();
  const auto pipe = pipeline.stats();
  stats.rows = pipe.rows;
  stats.wait_seconds = pipe.wait_seconds;
  if (stats.batches == 0) return stats;
  detail::check_finite_losses(sums, names, epoch, checked_batches, stats.batches);
  const auto host = sums.to(torch::kCPU) / static_cast<double>(stats.batches);
  for (size_t i = 0; i + 1 < names.size(); ++i)
    stats.head_losses.emplace_back(names[i], host[static_cast<int64_t>(i)].item<double>());
  stats.loss = host[-1].item<double>();
  return stats;
}

} // namespace rectrain
