#pragma once
// Trainer: the epochs of one model over a PhaseSchedule, as the recipe runs
// them: each epoch freezes or unfreezes the schedule's parameters, runs
// train_epoch, measures what the caller asks (validate, measure), keeps an
// EpochRecord, saves a checkpoint and hands the record to the reporters
// (on_epoch). A run stopped at any epoch boundary resumes from its
// checkpoint bit for bit: the checkpoint holds the model, the optimizers,
// the sampler's position, the random generators, the epochs done and the
// records so far.
//
//   rectrain::Trainer<Ranker> trainer(model, optimizers.all(), pipeline, schedule,
//       rectrain::TrainerOptions().checkpoint_path("checkpoint.pt")
//           .validate([&] { return validation.evaluate(model); })
//           .on_epoch([](const rectrain::EpochRecord& r) { std::puts(r.summary().c_str()); }));
//   trainer.checkpoint().add("settings", settings_text);  // anything else to keep
//   if (resume) trainer.resume();
//   trainer.fit();
//
// With keep_best, the model ends with the weights of its best epoch by the
// validation metric (a copy of them follows the training, in the
// checkpoint too); with patience, training stops once that many epochs
// have passed without a better one.
//
// The model is a module holder with train_epoch's contract (forward and
// loss_terms), a Ranker or your own.

#include <rectrain/core/error.hpp>
#include <rectrain/core/parse.hpp>
#include <rectrain/metrics/ranking.hpp>
#include <rectrain/nn/composite.hpp>
#include <rectrain/train/checkpoint.hpp>
#include <rectrain/train/epoch.hpp>
#include <rectrain/train/epoch_record.hpp>
#include <rectrain/train/phase_schedule.hpp>
#include <rectrain/train/progress_line.hpp>

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

struct TrainerOptions {
  /// Written into every record: which model of an ensemble this is.
  TORCH_ARG(uint64_t, seed) = 0;
  /// train_epoch's options (clipping, autocast, the after_backward hook).
  TORCH_ARG(TrainEpochOptions, epoch_options) = {};
  /// Where the checkpoint is saved after every epoch ("": not saved).
  TORCH_ARG(std::string, checkpoint_path) = "";
  /// The validation metric after each epoch (not set: NaN in the records).
  TORCH_ARG(std::function<GroupMetric()>, validate) = nullptr;
  /// Fills figures of its own into each record, before validate runs (the
  /// step's matrix-product rate, say: see measure_matmul_rates).
  TORCH_ARG(std::function<void(EpochRecord&)>, measure) = nullptr;
  /// Each record once its epoch is checkpointed: the reporters.
  TORCH_ARG(std::function<void(const EpochRecord&)>, on_epoch) = nullptr;
  /// Called with the epoch's index before it trains (after the schedule is
  /// applied): where a data-parallel rank reseeds its own dropout stream.
  TORCH_ARG(std::function<void(int64_t epoch)>, on_epoch_start) = nullptr;
  /// A progress line on stderr while an epoch runs (ProgressLine).
  TORCH_ARG(bool, progress_line) = false;
  /// When the schedule is done, load the weights of the epoch whose
  /// validation metric was highest (needs validate).
  TORCH_ARG(bool, keep_best) = false;
  /// Stop after this many epochs without a better validation metric (0:
  /// never; needs validate). Early epochs count too: a schedule whose
  /// unfrozen phase comes last may stop before it.
  TORCH_ARG(int64_t, patience) = 0;
};


template <typename ModelHolder>
class Trainer {
 public:
  /// Binds into checkpoint() the model ("model"), each optimizer
  /// ("optimizer_0", ...), the pipeline's sampler ("sampler"), the CPU
  /// generator ("rng"; and "cuda_rng" for a model on a GPU) and the
  /// trainer's own progress ("epochs_done", "history"). `pipeline` must
  /// outlive the trainer.
  Trainer(ModelHolder model, std::vector<torch::optim::Optimizer*> optimizers, BatchPipeline& pipeline,
          PhaseSchedule schedule, TrainerOptions options = {})
      : model_(std::move(model)),
        optimizers_(std::move(optimizers)),
        pipeline_(pipeline),
        schedule_(std::move(schedule)),
        options_(std::move(options)),
        cpu_rng_(at::globalContext().defaultGenerator(torch::kCPU)) {
    if (optimizers_.empty()) throw Error("Trainer: no optimizer given");
    if ((options_.keep_best() || options_.patience() > 0) && !options_.validate())
      throw Error("Trainer: keep_best and patience choose by the validation metric; set validate");
    if (options_.patience() < 0)
      throw Error(detail::concat("Trainer: patience must be >= 0, got ", options_.patience()));
    checkpoint_.add("model", *model_);
    for (size_t i = 0; i < optimizers_.size(); ++i)
      checkpoint_.add(detail::concat("optimizer_", i), *optimizers_[i]);
    checkpoint_.add("sampler", pipeline_.sampler()).add("rng", cpu_rng_);
    checkpoint_.add("epochs_done", epochs_done_).add("history", history_);
    if (options_.keep_best() || options_.patience() > 0)
      checkpoint_.add("best_epoch", best_epoch_).add("best_value", best_value_).add("stopped_after", stopped_after_);
    if (options_.keep_best()) {
      best_ = model_->clone();
      checkpoint_.add("best_model", *best_);
    }
    const auto parameters = model_->parameters();
    if (!parameters.empty() && parameters.front().is_cuda()) {
      cuda_rng_ = at::globalContext().defaultGenerator(parameters.front().device());
      checkpoint_.add("cuda_rng", cuda_rng_);
    }
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// The state saved after every epoch; add what else a resumed run must
  /// find (settings, a data fingerprint) before resume() or fit().
  Checkpoint& checkpoint() { return checkpoint_; }
  const TrainerOptions& options() const { return options_; }
  const PhaseSchedule& schedule() const { return schedule_; }

  /// Loads everything bound from `path` (default: options.checkpoint_path);
  /// returns the epochs it had done. Errors name the file and the entry.
  int64_t resume(const std::string& path = "") {
    const std::string from = path.empty() ? options_.checkpoint_path() : path;
    if (from.empty()) throw Error("Trainer::resume: no checkpoint path given");
    checkpoint_.load(from);
    records_.clear();
    for (const auto& line : split_list(history_, '\n')) records_.push_back(EpochRecord::from_json(line, from));
    return epochs_done_;
  }

  /// Trains the schedule's epochs from epochs_done(), at most `max_epochs`
  /// of them (negative: no limit); returns true when the schedule is done.
  bool fit(int64_t max_epochs = -1) {
    ProgressLine progress;
    auto epoch_options = options_.epoch_options();
    for (int64_t trained = 0; epochs_done_ < schedule_.epochs() && stopped_after_ < 0; ++trained) {
      if (max_epochs >= 0 && trained >= max_epochs) return false;
      const int64_t epoch = epochs_done_;
      EpochRecord record;
      record.seed = options_.seed();
      record.frozen = schedule_.apply(*model_, epoch);
      if (options_.on_epoch_start()) options_.on_epoch_start()(epoch);
      if (options_.progress_line()) {
        const bool frozen = record.frozen;
        const uint64_t seed = record.seed;
        epoch_options.progress_seconds(progress.seconds()).on_progress([&progress, seed, frozen](const EpochProgress& p) {
          progress.show(seed, p, frozen);
        });
      }
      record.stats = train_epoch(model_, optimizers_, pipeline_, epoch, epoch_options);
      progress.clear();
      if (options_.measure()) options_.measure()(record);
      if (options_.validate()) record.validation = options_.validate()();
      history_ += record.to_json() + "\n";
      records_.push_back(record);
      epochs_done_ = epoch + 1;
      if (options_.keep_best() || options_.patience() > 0) {
        // NaN (no validation user with two targets) never counts as better.
        if (record.validation.value > best_value_) {
          best_value_ = record.validation.value;
          best_epoch_ = epoch;
          if (best_) detail::copy_weights(*model_, *best_);
        }
        if (options_.patience() > 0 && epochs_done_ < schedule_.epochs() &&
            epoch - std::max<int64_t>(best_epoch_, -1) >= options_.patience())
          stopped_after_ = epochs_done_;
      }
      if (!options_.checkpoint_path().empty()) checkpoint_.save(options_.checkpoint_path());
      if (options_.on_epoch()) options_.on_epoch()(records_.back());
    }
    if (best_ && best_epoch_ >= 0) detail::copy_weights(*best_, *model_);
    return true;
  }

  /// The epoch with the best validation metric so far (-1: none yet, or
  /// neither keep_best nor patience set), and that metric.
  int64_t best_epoch() const { return best_epoch_; }
  double best_value() const { return best_value_; }
  /// The epochs done when patience stopped the run (-1: it did not).
  int64_t stopped_after() const { return stopped_after_; }

  int64_t epochs_done() const { return epochs_done_; }
  /// Every epoch's record, the resumed ones first.
  const std::vector<EpochRecord>& records() const { return records_; }

 private:
  ModelHolder model_;
  std::vector<torch::optim::Optimizer*> optimizers_;
  BatchPipeline& pipeline_;
  PhaseSchedule schedule_;
  TrainerOptions options_;
  Checkpoint checkpoint_;
  at::Generator cpu_rng_, cuda_rng_;
  int64_t epochs_done_ = 0;
  int64_t best_epoch_ = -1, stopped_after_ = -1;
  double best_value_ = -std::numeric_limits<double>::infinity();
  std::shared_ptr<torch::nn::Module> best_;  ///< the best epoch's weights (keep_best)
  std::string history_;
  std::vector<EpochRecord> records_;
};

} // namespace rectrain
