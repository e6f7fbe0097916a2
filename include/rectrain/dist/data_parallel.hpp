#pragma once
// DataParallel: what PyTorch's DistributedDataParallel does, for a LibTorch
// C++ module, on c10d (ProcessGroup). Each rank trains a replica on its own
// share of every step's groups (ShardedSampler); after each backward the
// replicas' gradients are combined, so every rank's optimizers see the
// same gradients and the replicas stay equal:
//
//  - at construction, every parameter and buffer is broadcast from rank 0
//    (and the ranks check that they hold the same parameters);
//  - dense gradients are copied into buckets of about bucket_mb and summed
//    with all-reduce, each weighted by its rank's share of the step's
//    groups (1 / world_size when the shares are equal). With overlap, a
//    bucket starts as soon as backward has produced all its gradients
//    (gradient hooks), while backward goes on with the rest; buckets start
//    in a fixed order on every rank, as c10d requires;
//  - sparse gradients (id tables with sparse(true)) are exchanged as
//    (row, values) pairs with all-gather, or densified and all-reduced when
//    that moves fewer bytes (chosen per table and step; stats() counts
//    which); the result keeps every rank's rows, so SparseAdam sums repeats
//    exactly as one process would;
//  - floating buffers (BatchNorm's running statistics) are averaged.
//
// A parameter no rank gave a gradient keeps none (an optimizer skips it,
// as in one process).
//
//   rectrain::DataParallel parallel(*model, group);
//   rectrain::ShardedSampler sharded(sampler, *group);
//   BatchPipeline pipeline(spec, sharded);
//   auto epoch_options = parallel.attach(rectrain::TrainEpochOptions(), sharded);
//   train_epoch(model, optimizers, pipeline, epoch, epoch_options);

#include <rectrain/core/error.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/dist/process_group.hpp>
#include <rectrain/dist/sharded_sampler.hpp>
#include <rectrain/nn/categorical_feature.hpp>
#include <rectrain/train/epoch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace rectrain {

enum class SparseExchange : uint8_t {
  Auto,    ///< per table and step, whichever moves fewer bytes
  Gather,  ///< all-gather of every rank's (row, values) pairs
  Dense,   ///< a dense [rows, dim + 1] all-reduce (values and a touched count)
};

struct DataParallelOptions {
  /// Dense gradients are summed in buckets of about this many MiB.
  TORCH_ARG(double, bucket_mb) = 25;
  /// Start each bucket's all-reduce from gradient hooks while backward
  /// still runs (begin_step arms them); false: everything after backward.
  TORCH_ARG(bool, overlap) = true;
  TORCH_ARG(SparseExchange, sparse_exchange) = SparseExchange::Auto;
  /// Average floating buffers (BatchNorm running statistics) every step.
  TORCH_ARG(bool, average_buffers) = true;
  /// Parameters, by name, whose gradients are sparse, besides the ones
  /// found on their own (CategoricalFeature, torch::nn::Embedding and
  /// EmbeddingBag with sparse(true)).
  TORCH_ARG(std::vector<std::string>, sparse_parameters) = {};
};

/// What the exchanges cost, summed since construction or reset_stats().
struct ExchangeStats {
  int64_t steps = 0;
  double dense_bytes = 0;   ///< payload of the dense gradient all-reduces
  double sparse_bytes = 0;  ///< payload of the sparse gradient exchanges (as sent by this rank)
  double buffer_bytes = 0;  ///< payload of the buffer averaging
  int64_t sparse_gathered = 0;   ///< table-steps exchanged as (row, values) pairs
  int64_t sparse_densified = 0;  ///< table-steps exchanged densified
  double sync_seconds = 0;  ///< in synchronize_gradients: waiting for and finishing the exchange
  double bytes_per_step() const {
    return steps > 0 ? (dense_bytes + sparse_bytes + buffer_bytes) / static_cast<double>(steps) : 0;
  }
};

class DataParallel {
 public:
  /// Registers `module`'s parameters, broadcasts parameters and buffers
  /// from rank 0 and checks that every rank has the same parameters (names,
  /// shapes, types). The module must outlive this object, and keep its
  /// parameters (construct after the model is built and moved to its
  /// device).
  DataParallel(torch::nn::Module& module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {})
      : module_(module), group_(std::move(group)), options_(std::move(options)) {
    if (!group_) throw DistributedError("DataParallel: no process group");
    if (!(options_.bucket_mb() > 0))
      throw Error(detail::concat("DataParallel: bucket_mb must be > 0, got ", options_.bucket_mb()));
    collect_parameters();
    agree_on_parameters();
    broadcast_state();
    build_buckets();
    if (options_.overlap()) register_hooks();
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;
  ~DataParallel() {
    for (auto& h : hooks_) h.first.remove_hook(h.second);
  }

  ProcessGroup& group() { return *group_; }
  const DataParallelOptions& options() const noexcept { return options_; }
  const ExchangeStats& stats() const noexcept { return stats_; }
  void reset_stats() { stats_ = {}; }
  /// Parameter names exchanged as sparse gradients.
  std::vector<std::string> sparse_parameter_names() const {
    std::vector<std::string> out;
    for (const auto& p : sparse_) out.push_back(p.name);
    return out;
  }

  /// Call before backward: this rank's share of the step's groups (its
  /// gradient's weight in the sum; <= 0: 1 / world_size), and, with
  /// overlap, arms the gradient hooks that start buckets during backward.
  void begin_step(double share = 0) {
    if (armed_) throw DistributedError("DataParallel: begin_step twice without synchronize_gradients in between");
    share_ = share > 0 ? share : 1.0 / static_cast<double>(group_->world_size());
    for (auto& d : dense_) d.filled = false;
    for (auto& b : buckets_) {
      b.waiting = 0;
      b.work = ProcessGroup::Work();
      b.started = false;
    }
    for (const auto& d : dense_)
      if (d.param.requires_grad()) ++buckets_[d.bucket].waiting;
    next_bucket_ = 0;
    armed_ = options_.overlap();
    stepping_ = true;
  }

  /// Call after backward, before the optimizers step: finishes the
  /// exchange, leaving every rank with the same gradients (and averaged
  /// buffers). Without begin_step, the share is 1 / world_size and nothing
  /// was started during backward.
  void synchronize_gradients() {
    if (!stepping_) begin_step();
    armed_ = false;
    stepping_ = false;
    const Stopwatch clock;
    // Gradients the hooks did not see (overlap off, frozen-then-unfrozen,
    // unused here): copied now, in bucket order.
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (buckets_[b].started) continue;
      for (const size_t i : buckets_[b].members)
        if (!dense_[i].filled) fill_slot(i, dense_[i].param.grad());
    }
    start_ready_buckets(/*all=*/true);
    for (auto& b : buckets_) group_->wait(b.work);
    for (auto& d : dense_) take_slot(d);
    for (auto& s : sparse_) exchange_sparse(s);
    if (options_.average_buffers()) average_buffers();
    ++stats_.steps;
    stats_.sync_seconds += clock.seconds();
  }

  /// `epoch_options` with before_backward and after_backward set to
  /// begin_step (with `sampler`'s share of each step) and
  /// synchronize_gradients; a hook already set there runs first.
  TrainEpochOptions attach(TrainEpochOptions epoch_options, const ShardedSampler& sampler) {
    auto before = epoch_options.before_backward();
    auto after = epoch_options.after_backward();
    epoch_options.before_backward([this, &sampler, before](int64_t batch) {
      if (before) before(batch);
      begin_step(sampler.share_of_batch(batch));
    });
    epoch_options.after_backward([this, after](int64_t batch) {
      if (after) after(batch);
      synchronize_gradients();
    });
    return epoch_options;
  }

 private:
  struct DenseParameter {
    std::string name;
    torch::Tensor param;
    size_t bucket = 0;
    int64_t offset = 0;  // in the bucket's flat values
    int64_t flag = 0;    // index of its "has a gradient" flag in the bucket
    bool filled = false;
  };
  struct SparseParameter {
    std::string name;
    torch::Tensor param;
  };
  struct Bucket {
    torch::Tensor flat;  // values, then one flag per member
    std::vector<size_t> members;
    int64_t waiting = 0;
    bool started = false;
    ProcessGroup::Work work;
  };

  void collect_parameters() {
    std::unordered_set<std::string> sparse_names(options_.sparse_parameters().begin(),
                                                 options_.sparse_parameters().end());
    for (const auto& item : module_.named_modules()) {
      const auto& m = *item.value();
      const std::string prefix = item.key().empty() ? "" : item.key() + ".";
      if (auto* c = dynamic_cast<const CategoricalFeatureImpl*>(&m)) {
        if (c->options.sparse()) sparse_names.insert(prefix + "weight");
      } else if (auto* e = dynamic_cast<const torch::nn::EmbeddingImpl*>(&m)) {
        if (e->options.sparse()) sparse_names.insert(prefix + "weight");
      } else if (auto* bag = dynamic_cast<const torch::nn::EmbeddingBagImpl*>(&m)) {
        if (bag->options.sparse()) sparse_names.insert(prefix + "weight");
      }
    }
    std::unordered_set<std::string> seen;
    for (const auto& item : module_.named_parameters()) {
      seen.insert(item.key());
      if (sparse_names.count(item.key()))
        sparse_.push_back({item.key(), item.value()});
      else
        dense_.push_back({item.key(), item.value()});
    }
    for (const auto& name : options_.sparse_parameters())
      if (!seen.count(name))
        throw Error(detail::concat("DataParallel: sparse_parameters names '", name, "', which the module does not have"));
    for (const auto& d : dense_)
      if (d.param.device() != group_->device())
        throw TensorError(detail::concat("DataParallel: parameter ", d.name, " is on ", d.param.device(),
                                         ", the process group on ", group_->device()));
    for (const auto& s : sparse_)
      if (s.param.dim() != 2 || s.param.device() != group_->device())
        throw TensorError(detail::concat("DataParallel: sparse parameter ", s.name, " must be a 2-D table on ",
                                         group_->device(), ", got ", detail::type_and_shape_of(s.param), " on ",
                                         s.param.device()));
  }

  // Replicas that differ in their parameters would exchange mismatched
  // buckets: refuse to start, naming the first difference.
  void agree_on_parameters() {
    std::string text;
    for (const auto& item : module_.named_parameters())
      text += detail::concat(item.key(), " ", item.value().toString(), " ", item.value().sizes(), "\n");
    for (const auto& item : module_.named_buffers())
      text += detail::concat("buffer ", item.key(), " ", item.value().toString(), " ", item.value().sizes(), "\n");
    agree_across_ranks(*group_, "the model's parameters", text);
  }

  void broadcast_state() {
    torch::NoGradGuard no_grad;
    for (auto& item : module_.named_parameters()) broadcast_tensor(item.value(), "parameter " + item.key());
    for (auto& item : module_.named_buffers()) broadcast_tensor(item.value(), "buffer " + item.key());
  }

  void broadcast_tensor(torch::Tensor t, const std::string& what) {
    if (group_->world_size() == 1) return;
    if (t.is_contiguous() && t.device() == group_->device()) {
      group_->broadcast(t, 0, "broadcast of " + what);
    } else {
      auto copy = t.contiguous().to(group_->device());
      group_->broadcast(copy, 0, "broadcast of " + what);
      t.copy_(copy);
    }
  }

  // Reverse registration order: roughly the order backward produces the
  // gradients, so the first bucket is ready first.
  void build_buckets() {
    const auto limit = static_cast<int64_t>(options_.bucket_mb() * 1024 * 1024);
    int64_t bytes = 0;
    std::vector<size_t> current;
    const auto close = [&] {
      if (current.empty()) return;
      Bucket b;
      const auto type = dense_[current.front()].param.options();
      int64_t values = 0;
      for (const size_t i : current) values += dense_[i].param.numel();
      b.flat = torch::zeros({values + static_cast<int64_t>(current.size())}, type.requires_grad(false));
      int64_t offset = 0;
      for (size_t k = 0; k < current.size(); ++k) {
        auto& d = dense_[current[k]];
        d.bucket = buckets_.size();
        d.offset = offset;
        d.flag = values + static_cast<int64_t>(k);
        offset += d.param.numel();
      }
      b.members = current;
      buckets_.push_back(std::move(b));
      current.clear();
      bytes = 0;
    };
    for (size_t j = dense_.size(); j-- > 0;) {
      const auto& p = dense_[j].param;
      if (!current.empty() && dense_[current.front()].param.scalar_type() != p.scalar_type()) close();
      current.push_back(j);
      bytes += p.numel() * static_cast<int64_t>(p.element_size());
      if (bytes >= limit) close();
    }
    close();
  }

  void register_hooks() {
    for (size_t i = 0; i < dense_.size(); ++i) {
      auto& p = dense_[i].param;
      // A frozen parameter may be unfrozen later (PhaseSchedule): the hook
      // is on it from the start and fires once it has gradients.
      const bool requires = p.requires_grad();
      if (!requires) p.set_requires_grad(true);
      const auto handle = p.register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); });
      if (!requires) p.set_requires_grad(false);
      hooks_.emplace_back(p, handle);
    }
  }

  void on_gradient(size_t i, const torch::Tensor& grad) {
    if (!armed_) return;
    auto& d = dense_[i];
    if (d.filled)
      throw DistributedError(detail::concat("DataParallel: parameter ", d.name,
                                            " received a second gradient in one step; call synchronize_gradients "
                                            "after every backward (gradient accumulation is not supported)"));
    fill_slot(i, grad);
    auto& b = buckets_[d.bucket];
    if (--b.waiting <= 0) start_ready_buckets(/*all=*/false);
  }

  void fill_slot(size_t i, const torch::Tensor& grad) {
    auto& d = dense_[i];
    auto& b = buckets_[d.bucket];
    torch::NoGradGuard no_grad;
    auto slot = b.flat.narrow(0, d.offset, d.param.numel());
    if (grad.defined()) {
      const auto g = grad.is_sparse() ? grad.to_dense() : grad;
      slot.copy_(g.reshape({-1}));
      slot.mul_(share_);
      b.flat[d.flag].fill_(1);
    } else {
      slot.zero_();
      b.flat[d.flag].fill_(0);
    }
    d.filled = true;
  }

  // Starts the buckets whose gradients are all in, in order, stopping at
  // the first that is not ready (all: starts every remaining one).
  void start_ready_buckets(bool all) {
    while (next_bucket_ < buckets_.size()) {
      auto& b = buckets_[next_bucket_];
      if (!all && b.waiting > 0) return;
      if (all)
        for (const size_t i : b.members)
          if (!dense_[i].filled) fill_slot(i, torch::Tensor());
      b.work = group_->start_all_reduce_sum(b.flat, "all-reduce of the gradients");
      b.started = true;
      stats_.dense_bytes += static_cast<double>(b.flat.numel() * static_cast<int64_t>(b.flat.element_size()));
      ++next_bucket_;
    }
  }

  void take_slot(DenseParameter& d) {
    const auto& b = buckets_[d.bucket];
    if (b.flat[d.flag].item<double>() == 0) {  // no rank had a gradient
      if (d.param.grad().defined()) d.param.mutable_grad().reset();
      return;
    }
    auto slot = b.flat.narrow(0, d.offset, d.param.numel()).view(d.param.sizes());
    // A copy, not a view of the bucket: the next backward accumulates into
    // a gradient that was zeroed in place, and the hook fills the slot.
    if (d.param.grad().defined() && !d.param.grad().is_sparse() && d.param.grad().sizes() == d.param.sizes())
      d.param.mutable_grad().copy_(slot);
    else
      d.param.mutable_grad() = slot.clone();
  }

  void exchange_sparse(SparseParameter& s) {
    torch::NoGradGuard no_grad;
    const int64_t rows = s.param.size(0), dim = s.param.size(1);
    torch::Tensor index, values;
    const auto grad = s.param.grad();
    if (grad.defined() && grad.is_sparse()) {
      index = grad._indices()[0];
      values = grad._values();
    } else if (grad.defined()) {  // a dense gradient of a table: every row
      index = torch::arange(rows, torch::TensorOptions(torch::kInt64).device(s.param.device()));
      values = grad;
    } else {
      index = torch::empty({0}, torch::TensorOptions(torch::kInt64).device(s.param.device()));
      values = torch::empty({0, dim}, s.param.options().requires_grad(false));
    }
    values = (values * share_).contiguous();
    const auto counts_all = group_->all_gather(
        torch::tensor({index.size(0)}, torch::TensorOptions(torch::kInt64).device(group_->device())),
        "all-gather of " + s.name + "'s gradient row counts");
    int64_t total = 0, most = 0;
    std::vector<int64_t> counts;
    for (const auto& c : counts_all) {
      counts.push_back(c.item<int64_t>());
      total += counts.back();
      most = std::max(most, counts.back());
    }
    if (total == 0) {
      if (grad.defined()) s.param.mutable_grad().reset();
      return;
    }
    const int64_t element = static_cast<int64_t>(s.param.element_size());
    const double gather_bytes = static_cast<double>(most * (dim * element + 8));
    const double dense_bytes = static_cast<double>(rows * (dim + 1) * element);
    const bool densify = options_.sparse_exchange() == SparseExchange::Dense ||
                         (options_.sparse_exchange() == SparseExchange::Auto && dense_bytes < gather_bytes);
    torch::Tensor result;
    if (densify) {
      auto table = torch::zeros({rows, dim + 1}, values.options());
      if (index.size(0) > 0) {
        table.narrow(1, 0, dim).index_add_(0, index, values);
        table.select(1, dim).index_add_(0, index, torch::ones({index.size(0)}, values.options()));
      }
      group_->all_reduce_sum(table, "all-reduce of " + s.name + "'s gradient");
      const auto touched = table.select(1, dim).nonzero().select(1, 0);
      result = torch::sparse_coo_tensor(touched.unsqueeze(0), table.narrow(1, 0, dim).index_select(0, touched),
                                        s.param.sizes(), s.param.options().layout(torch::kSparse).requires_grad(false))
                   ._coalesced_(true);
      stats_.sparse_bytes += dense_bytes;
      ++stats_.sparse_densified;
    } else {
      const auto all_index = gather_rows(index, counts, most, "all-gather of " + s.name + "'s gradient rows");
      const auto all_values = gather_rows(values, counts, most, "all-gather of " + s.name + "'s gradient values");
      result = torch::sparse_coo_tensor(all_index.unsqueeze(0), all_values, s.param.sizes(),
                                        s.param.options().layout(torch::kSparse).requires_grad(false));
      stats_.sparse_bytes += gather_bytes;
      ++stats_.sparse_gathered;
    }
    s.param.mutable_grad() = result;
  }

  // Every rank's rows of `t` (counts[r] each, at most `most`), in rank order.
  torch::Tensor gather_rows(const torch::Tensor& t, const std::vector<int64_t>& counts, int64_t most,
                            const std::string& what) {
    auto shape = t.sizes().vec();
    shape[0] = most;
    auto padded = torch::zeros(shape, t.options());
    if (t.size(0) > 0) padded.narrow(0, 0, t.size(0)).copy_(t);
    const auto parts = group_->all_gather(padded, what);
    std::vector<torch::Tensor> rows;
    for (size_t r = 0; r < parts.size(); ++r) rows.push_back(parts[r].narrow(0, 0, counts[r]));
    return torch::cat(rows);
  }

  void average_buffers() {
    std::vector<torch::Tensor> buffers;
    for (auto& b : module_.buffers())
      if (b.is_floating_point() && b.numel() > 0) buffers.push_back(b);
    if (buffers.empty() || group_->world_size() == 1) return;
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> flat_parts;
    for (const auto& b : buffers) flat_parts.push_back(b.reshape({-1}).to(torch::kFloat64));
    auto flat = torch::cat(flat_parts);
    group_->all_reduce_sum(flat, "all-reduce of the buffers");
    flat.div_(static_cast<double>(group_->world_size()));
    int64_t offset = 0;
    for (auto& b : buffers) {
      b.copy_(flat.narrow(0, offset, b.numel()).view(b.sizes()));
      offset += b.numel();
    }
    stats_.buffer_bytes += static_cast<double>(flat.numel() * 8);
  }

  torch::nn::Module& module_;
  std::shared_ptr<ProcessGroup> group_;
  DataParallelOptions options_;
  std::vector<DenseParameter> dense_;
  std::vector<SparseParameter> sparse_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<torch::Tensor, unsigned>> hooks_;
  size_t next_bucket_ = 0;
  double share_ = 1;
  bool armed_ = false;
  bool stepping_ = false;
  ExchangeStats stats_;
};

} // namespace rectrain
