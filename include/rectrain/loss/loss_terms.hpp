#pragma once
// What a model trained by train_epoch returns for a batch: each named
// loss (a head's, or any term a model wants reported) and the combined
// loss that backward() runs on. Ranker::loss_terms builds it; a model of
// your own returns one from its loss_terms(predictions, batch), and
// train_epoch reports the mean of every term per epoch.

#include <torch/torch.h>

#include <string>

namespace rectrain {

struct LossTerms {
  /// Name -> scalar loss, in the order they are reported.
  torch::OrderedDict<std::string, torch::Tensor> heads{"LossTerms head"};
  /// The scalar loss to minimise (for a Ranker: its MultiTaskLoss of the
  /// heads).
  torch::Tensor total;
};

} // namespace rectrain
