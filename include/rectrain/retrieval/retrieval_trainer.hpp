#pragma once
// Training a TwoTower for retrieval from positives only: each epoch visits
// every (user, item) positive of the training matrix once, in a shuffled
// order, in batches; each row gets negatives from the chosen sampler and the
// loss (BPR or sampled softmax) compares the positive's score with theirs.
//
//   RetrievalTrainer trainer(model, split.train, columns,
//                            RetrievalTrainerOptions().negatives(NegativeSampling::Augmented));
//   torch::optim::Adam adam(trainer.parameters(), torch::optim::AdamOptions(1e-2));
//   for (int64_t epoch = 0; epoch < 20; ++epoch) trainer.train_epoch({&adam}, epoch);
//
// The same seed, device and thread count give the same model: the order,
// the negatives and the augmentation noise are drawn from streams of
// (seed, epoch, step, row).

#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/retrieval/augmented_negative.hpp>
#include <rectrain/retrieval/interactions.hpp>
#include <rectrain/retrieval/negative_sampler.hpp>
#include <rectrain/retrieval/retrieval_loss.hpp>
#include <rectrain/retrieval/retrieval_model.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace rectrain {

enum class NegativeSampling : uint8_t { Uniform, Popularity, InBatch, Dynamic, Augmented };

inline const char* to_string(NegativeSampling s) {
  switch (s) {
    case NegativeSampling::Uniform: return "uniform";
    case NegativeSampling::Popularity: return "popularity";
    case NegativeSampling::InBatch: return "in-batch";
    case NegativeSampling::Dynamic: return "dynamic";
    case NegativeSampling::Augmented: return "augmented";
  }
  return "?";
}

/// "uniform" | "popularity" | "in-batch" | "dynamic" | "augmented".
inline NegativeSampling parse_negative_sampling(const std::string& text) {
  for (auto s : {NegativeSampling::Uniform, NegativeSampling::Popularity, NegativeSampling::InBatch,
                 NegativeSampling::Dynamic, NegativeSampling::Augmented})
    if (text == to_string(s)) return s;
  throw Error(detail::concat("negative sampling must be uniform, popularity, in-batch, dynamic or augmented; got '",
                             text, "'"));
}

struct RetrievalTrainerOptions {
  TORCH_ARG(NegativeSampling, negatives) = NegativeSampling::Uniform;
  TORCH_ARG(RetrievalLossKind, loss) = RetrievalLossKind::Bpr;
  TORCH_ARG(int64_t, batch_size) = 1024;
  /// Negatives per positive (uniform, popularity, dynamic; in-batch uses
  /// the batch, augmented makes one).
  TORCH_ARG(int64_t, num_negatives) = 1;
  /// Candidates per row that dynamic and augmented sampling choose from.
  TORCH_ARG(int64_t, pool) = 16;
  TORCH_ARG(double, popularity_beta) = 0.75;
  /// Sampled softmax: temperature, and whether to subtract log q.
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(bool, log_q_correction) = true;
  /// λ · (‖u‖² + ‖p‖² + ‖n‖²) / B on the batch's vectors (BPR's regulariser).
  TORCH_ARG(double, l2) = 0.0;
  /// Scale each positive's loss by its value in the matrix (normalised to
  /// mean 1); off: every positive counts once.
  TORCH_ARG(bool, weighted) = false;
  /// The augmented sampler's eps, gamma and scale (its dim is the model's).
  TORCH_ARG(double, ans_eps) = 1.0;
  TORCH_ARG(double, ans_gamma) = 0.1;
  TORCH_ARG(double, ans_scale) = 0.1;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// End an epoch after this many steps (0: a full pass over the positives).
  TORCH_ARG(int64_t, max_steps_per_epoch) = 0;
};

struct RetrievalEpochStats {
  int64_t epoch = 0;
  int64_t samples = 0;  ///< positives visited
  int64_t steps = 0;
  double loss = 0;      ///< mean over steps
  double seconds = 0;
  double sampling_seconds = 0;  ///< of which drawing negatives (CPU) took
  double samples_per_second() const { return seconds > 0 ? static_cast<double>(samples) / seconds : 0; }
};

class RetrievalTrainer {
 public:
  RetrievalTrainer(TwoTower model, CsrMatrix train, RetrievalColumns columns, RetrievalTrainerOptions options = {})
      : model_(std::move(model)), train_(std::move(train)), columns_(std::move(columns)), options_(options) {
    detail::check_csr_shape(train_, "RetrievalTrainer train");
    const auto& o = options_;
    if (o.batch_size() < 2) throw Error(detail::concat("RetrievalTrainer: batch_size must be >= 2, got ", o.batch_size()));
    if (o.num_negatives() < 1)
      throw Error(detail::concat("RetrievalTrainer: num_negatives must be >= 1, got ", o.num_negatives()));
    const bool pooled = o.negatives() == NegativeSampling::Dynamic || o.negatives() == NegativeSampling::Augmented;
    if (pooled && (o.pool() < 1 || (o.negatives() == NegativeSampling::Dynamic && o.pool() < o.num_negatives())))
      throw Error(detail::concat("RetrievalTrainer: pool must be >= 1 and >= num_negatives (", o.num_negatives(),
                                 ") for ", to_string(o.negatives()), " sampling, got ", o.pool()));
    if (o.max_steps_per_epoch() < 0)
      throw Error(detail::concat("RetrievalTrainer: max_steps_per_epoch must be >= 0, got ", o.max_steps_per_epoch()));
    if (!(o.l2() >= 0) || !std::isfinite(o.l2()))
      throw Error(detail::concat("RetrievalTrainer: l2 must be a finite number >= 0, got ", o.l2()));
    if (train_.nnz() == 0) throw Error("RetrievalTrainer: the training matrix has no positives");
    StaticNegativeSamplerOptions so;
    so.seed(stream_seed(o.seed(), 0x4e45475ULL));
    if (o.negatives() == NegativeSampling::Popularity)
      static_sampler_.emplace(popularity_negatives(train_, o.popularity_beta(), so));
    else if (o.negatives() != NegativeSampling::InBatch)
      static_sampler_.emplace(uniform_negatives(train_, so));
    if (o.negatives() == NegativeSampling::InBatch) in_batch_.emplace(train_);
    if (o.negatives() == NegativeSampling::Augmented) {
      augmenter_ = AugmentedNegative(AugmentedNegativeOptions(model_->user_tower->output_dim())
                                         .eps(o.ans_eps())
                                         .gamma(o.ans_gamma())
                                         .scale(o.ans_scale()));
      augmenter_->to(o.device());
    }
    // Every positive as (user, item, weight) rows.
    const int64_t n = train_.nnz();
    entry_user_ = torch::empty({n}, torch::kInt64);
    const int64_t* ptr = train_.indptr.data_ptr<int64_t>();
    int64_t* eu = entry_user_.data_ptr<int64_t>();
    for (int64_t u = 0; u < train_.rows; ++u)
      for (int64_t e = ptr[u]; e < ptr[u + 1]; ++e) eu[e] = u;
    entry_item_ = train_.indices.to(torch::kInt64);
    if (o.weighted()) entry_weight_ = train_.values / train_.values.mean().clamp_min(1e-30);
  }

  TwoTower& model() { return model_; }
  const RetrievalTrainerOptions& options() const { return options_; }
  /// The augmented sampler's module (null unless negatives() is Augmented).
  AugmentedNegative& augmenter() { return augmenter_; }

  /// What the optimizer must update: the model's parameters and, with
  /// augmented sampling, the sampler's gates.
  std::vector<torch::Tensor> parameters() const {
    auto params = model_->parameters();
    if (!augmenter_.is_empty())
      for (const auto& p : augmenter_->parameters()) params.push_back(p);
    return params;
  }

  /// Steps of one epoch.
  int64_t steps_per_epoch() const {
    const int64_t full = (train_.nnz() + options_.batch_size() - 1) / options_.batch_size();
    return options_.max_steps_per_epoch() > 0 ? std::min(full, options_.max_steps_per_epoch()) : full;
  }

  /// The loss of one batch of positives (users and items [B] dense
  /// indices), its negatives drawn as step `step` draws them. For tests and
  /// custom loops; train_epoch calls it.
  torch::Tensor batch_loss(const torch::Tensor& users, const torch::Tensor& items, const torch::Tensor& weight,
                           uint64_t step, double* sampling_seconds = nullptr) {
    const auto device = options_.device();
    const double temperature = model_->options.temperature();
    const auto user = user_vectors(model_, columns_, users, device);
    const auto positive = item_vectors(model_, columns_, items, device);
    auto pos = (user * positive).sum(-1);
    if (temperature != 1.0) pos = pos / temperature;
    torch::Tensor neg, valid, log_q_neg, negative_vectors, aux;
    const torch::Tensor* log_q_table = nullptr;  // every item's log q, for the positive's
    Stopwatch sampling;
    double sampled = 0;
    switch (options_.negatives()) {
      case NegativeSampling::Uniform:
      case NegativeSampling::Popularity: {
        const auto draw = static_sampler_->sample(users, options_.num_negatives(), step);
        sampled = sampling.seconds();
        negative_vectors = item_vectors(model_, columns_, draw.items, device);
        neg = scores_of(user, negative_vectors, temperature);
        log_q_neg = draw.log_q;
        log_q_table = &static_sampler_->log_q();
        break;
      }
      case NegativeSampling::InBatch: {
        const auto draw = in_batch_->sample(users, items);
        sampled = sampling.seconds();
        neg = user.mm(positive.t());  // the batch's positives, encoded once
        if (temperature != 1.0) neg = neg / temperature;
        valid = draw.valid.to(device);
        log_q_neg = draw.log_q;
        log_q_table = &in_batch_->log_q();
        break;
      }
      case NegativeSampling::Dynamic: {
        const auto pool = static_sampler_->sample(users, options_.pool(), step);
        torch::Tensor scores;
        {
          torch::NoGradGuard no_grad;
          scores = scores_of(user, item_vectors(model_, columns_, pool.items, device), 1.0);
        }
        const auto chosen = hardest_of_pool(pool, scores, options_.num_negatives());
        sampled = sampling.seconds();
        negative_vectors = item_vectors(model_, columns_, chosen.items, device);
        neg = scores_of(user, negative_vectors, temperature);
        break;
      }
      case NegativeSampling::Augmented: {
        const auto pool = static_sampler_->sample(users, options_.pool(), step);
        const auto noise = uniform_noise(pool.items.size(0), pool.items.size(1), user.size(1), step).to(device);
        sampled = sampling.seconds();
        const auto pool_vectors = item_vectors(model_, columns_, pool.items, device);
        const auto out = augmenter_->forward(user, positive, pool_vectors, noise);
        negative_vectors = out.negative.unsqueeze(1);
        neg = scores_of(user, negative_vectors, temperature);
        aux = out.aux_loss;
        break;
      }
    }
    if (sampling_seconds) *sampling_seconds += sampled;
    const auto w = weight.defined() ? weight.to(device) : torch::Tensor();
    torch::Tensor loss;
    if (options_.loss() == RetrievalLossKind::Bpr) {
      loss = bpr_loss(pos, neg, valid, w);
    } else {
      const bool correct = options_.log_q_correction() && log_q_table;
      loss = sampled_softmax_loss(pos, neg, valid,
                                  correct ? log_q_table->index({items.cpu()}).to(device) : torch::Tensor(),
                                  correct ? log_q_neg.to(device) : torch::Tensor(),
                                  SampledSoftmaxOptions().temperature(options_.temperature()), w);
    }
    if (options_.l2() > 0) {
      auto reg = user.pow(2).sum() + positive.pow(2).sum();
      if (negative_vectors.defined()) reg = reg + negative_vectors.pow(2).sum();
      loss = loss + options_.l2() * reg / static_cast<double>(users.size(0));
    }
    if (aux.defined()) loss = loss + aux;
    return loss;
  }

  /// One pass over the training positives; `on_step(step, steps)` after
  /// each step (progress lines). A non-finite loss is an Error.
  RetrievalEpochStats train_epoch(const std::vector<torch::optim::Optimizer*>& optimizers, int64_t epoch,
                                  const std::function<void(int64_t, int64_t)>& on_step = nullptr) {
    if (optimizers.empty()) throw Error("RetrievalTrainer::train_epoch: no optimizer given");
    Stopwatch clock;
    RetrievalEpochStats stats;
    stats.epoch = epoch;
    model_->train();
    if (!augmenter_.is_empty()) augmenter_->train();
    const auto order = epoch_order(epoch);
    const int64_t n = order.numel(), b = options_.batch_size(), steps = steps_per_epoch();
    double loss_sum = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const auto rows = order.narrow(0, s * b, std::min(b, n - s * b));
      if (rows.numel() < 2 && options_.negatives() == NegativeSampling::InBatch) continue;  // no other positive
      const auto users = entry_user_.index({rows});
      const auto items = entry_item_.index({rows});
      const auto weight = entry_weight_.defined() ? entry_weight_.index({rows}) : torch::Tensor();
      const uint64_t step = stream_seed(static_cast<uint64_t>(epoch), static_cast<uint64_t>(s));
      for (auto* opt : optimizers) opt->zero_grad();
      const auto loss = batch_loss(users, items, weight, step, &stats.sampling_seconds);
      const double value = loss.item<double>();
      if (!std::isfinite(value))
        throw Error(detail::concat("retrieval training: the loss is ", value, " at epoch ", epoch, ", step ", s,
                                   " (lower the learning rate or the temperature)"));
      loss.backward();
      for (auto* opt : optimizers) opt->step();
      loss_sum += value;
      stats.samples += rows.numel();
      ++stats.steps;
      if (on_step) on_step(s + 1, steps);
    }
    stats.loss = stats.steps > 0 ? loss_sum / static_cast<double>(stats.steps) : 0;
    stats.seconds = clock.seconds();
    return stats;
  }

  /// The positives' order in `epoch`: a permutation of 0..nnz-1.
  torch::Tensor epoch_order(int64_t epoch) const {
    const int64_t n = train_.nnz();
    auto order = torch::arange(n, torch::kInt64);
    int64_t* o = order.data_ptr<int64_t>();
    FastRng rng(stream_seed(options_.seed(), 0x0bde5ULL, static_cast<uint64_t>(epoch)));
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(rng.next() % static_cast<uint64_t>(i + 1));
      std::swap(o[i], o[j]);
    }
    return order;
  }

 private:
  /// ⟨user_b, v_bj⟩ / temperature: [B, d] and [B, k, d] -> [B, k].
  static torch::Tensor scores_of(const torch::Tensor& user, const torch::Tensor& v, double temperature) {
    auto s = (v * user.unsqueeze(1)).sum(2);
    return temperature == 1.0 ? s : s / temperature;
  }

  /// Uniform [0, 1) noise [b, m, d] from a stream per (seed, step, row).
  torch::Tensor uniform_noise(int64_t b, int64_t m, int64_t d, uint64_t step) const {
    auto noise = torch::empty({b, m, d}, torch::kFloat32);
    float* p = noise.data_ptr<float>();
    at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        FastRng rng(stream_seed(options_.seed(), 0xa0eULL, step, static_cast<uint64_t>(r)));
        for (int64_t j = 0; j < m * d; ++j) p[r * m * d + j] = static_cast<float>(rng.uniform());
      }
    });
    return noise;
  }

  TwoTower model_;
  CsrMatrix train_;
  RetrievalColumns columns_;
  RetrievalTrainerOptions options_;
  std::optional<StaticNegativeSampler> static_sampler_;
  std::optional<InBatchNegatives> in_batch_;
  AugmentedNegative augmenter_{nullptr};
  torch::Tensor entry_user_, entry_item_, entry_weight_;
};

} // namespace rectrain
