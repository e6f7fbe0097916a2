#pragma once
// The recipe's schedule: some epochs with a group of parameters frozen
// (the id tables, initialised from ALS), then the rest with everything
// trained.
//
//   PhaseSchedule schedule(5, 1, table_parameter_names(*model, {"user", "item"}));
//   for (int64_t epoch = 0; epoch < schedule.epochs(); ++epoch) {
//     const bool frozen = schedule.apply(*model, epoch);
//     train_epoch(model, optimizers, pipeline, epoch);
//   }

#include <rectrain/core/error.hpp>
#include <rectrain/nn/freezing.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

class PhaseSchedule {
 public:
  /// `frozen_epochs` epochs with the parameters `frozen` selects (freeze()'s
  /// patterns) frozen, then `unfrozen_epochs` with everything trained. No
  /// patterns: every epoch trains everything.
  PhaseSchedule(int64_t frozen_epochs, int64_t unfrozen_epochs, std::vector<std::string> frozen = {})
      : frozen_epochs_(frozen_epochs), unfrozen_epochs_(unfrozen_epochs), frozen_(std::move(frozen)) {
    if (frozen_epochs < 0 || unfrozen_epochs < 0 || frozen_epochs + unfrozen_epochs < 1)
      throw Error(detail::concat("PhaseSchedule: need frozen and unfrozen epochs >= 0 and at least one epoch, got ",
                                 frozen_epochs, " and ", unfrozen_epochs));
  }

  int64_t epochs() const { return frozen_epochs_ + unfrozen_epochs_; }
  /// Whether `epoch` trains with the group frozen.
  bool frozen_in(int64_t epoch) const { return !frozen_.empty() && epoch < frozen_epochs_; }
  const std::vector<std::string>& frozen_parameters() const { return frozen_; }

  /// Freezes or unfreezes the group for `epoch` (a pattern that matches
  /// nothing is an Error); returns frozen_in(epoch).
  bool apply(torch::nn::Module& model, int64_t epoch) const {
    const bool frozen = frozen_in(epoch);
    if (!frozen_.empty()) frozen ? freeze(model, frozen_) : unfreeze(model, frozen_);
    return frozen;
  }

 private:
  int64_t frozen_epochs_, unfrozen_epochs_;
  std::vector<std::string> frozen_;
};

} // namespace rectrain
