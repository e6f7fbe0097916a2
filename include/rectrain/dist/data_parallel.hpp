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
//    (row, values) pairs gathered from every rank, all tables in one
//    buffer, or densified and all-reduced when that moves fewer bytes
//    (chosen per table and step; stats() counts which); the result keeps
//    every rank's rows (each rank's repeats summed first), so SparseAdam
//    sees one process's gradient up to float rounding;
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
  double dense_seconds = 0;   ///< of which finishing and waiting for the dense buckets
  double sparse_seconds = 0;  ///< of which exchanging the sparse tables
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
    place_buffers();
    if (options_.overlap()) register_hooks();
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;
  ~DataParallel() {
    for (auto& h : hooks_) {
      try {
        h.first.remove_hook(h.second);
      } catch (...) {  // a destructor must not throw; the hook is inert once disarmed
      }
    }
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
    if (stepping_) throw DistributedError("DataParallel: begin_step twice without synchronize_gradients in between");
    share_ = share > 0 ? share : 1.0 / static_cast<double>(group_->world_size());
    for (auto& d : dense_) d.filled = false;
    for (auto& b : buckets_) {
      b.waiting = 0;
      b.work = ProcessGroup::Work();
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
    // Buckets start in order: those from next_bucket_ on have not.
    for (size_t b = next_bucket_; b < buckets_.size(); ++b) {
      for (const size_t i : buckets_[b].members)
        if (!dense_[i].filled) fill_slot(i, dense_[i].param.grad());
    }
    start_ready_buckets(/*all=*/true);
    for (auto& b : buckets_) group_->wait(b.work);
    for (auto& d : dense_) take_slot(d);
    stats_.dense_seconds += clock.seconds();
    const Stopwatch sparse_clock;
    exchange_sparse();
    stats_.sparse_seconds += sparse_clock.seconds();
    take_buffers();
    if (!separate_buffers_.empty()) average_buffers(separate_buffers_);
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
      if (s.param.scalar_type() != sparse_.front().param.scalar_type())
        throw TensorError(detail::concat("DataParallel: sparse tables must share one type; ", s.name, " is ",
                                         s.param.scalar_type(), ", ", sparse_.front().name, " ",
                                         sparse_.front().param.scalar_type()));
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
      const bool trainable = p.requires_grad();
      if (!trainable) p.set_requires_grad(true);
      const auto handle = p.register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); });
      if (!trainable) p.set_requires_grad(false);
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
  // Floating buffers ride in the first bucket's all-reduce, after its
  // flags (forward has updated them when backward starts the bucket); a
  // buffer of another type than that bucket's is averaged on its own.
  void place_buffers() {
    if (!options_.average_buffers() || group_->world_size() == 1) return;
    int64_t extra = 0;
    for (auto& b : module_.buffers()) {
      if (!b.is_floating_point() || b.numel() == 0) continue;
      if (!buckets_.empty() && b.scalar_type() == buckets_.front().flat.scalar_type() && b.device() == group_->device()) {
        shared_buffers_.push_back(b);
        extra += b.numel();
      } else {
        separate_buffers_.push_back(b);
      }
    }
    if (extra == 0) return;
    auto& first = buckets_.front();
    buffers_at_ = first.flat.numel();
    first.flat = torch::cat({first.flat, torch::zeros({extra}, first.flat.options())});
  }

  void put_buffers() {
    torch::NoGradGuard no_grad;
    int64_t offset = buffers_at_;
    const double scale = 1.0 / static_cast<double>(group_->world_size());
    for (auto& b : shared_buffers_) {
      buckets_.front().flat.narrow(0, offset, b.numel()).copy_(b.reshape({-1})).mul_(scale);
      offset += b.numel();
    }
  }

  void take_buffers() {
    if (shared_buffers_.empty()) return;
    torch::NoGradGuard no_grad;
    int64_t offset = buffers_at_;
    for (auto& b : shared_buffers_) {
      b.copy_(buckets_.front().flat.narrow(0, offset, b.numel()).view(b.sizes()));
      offset += b.numel();
    }
    stats_.buffer_bytes += static_cast<double>((buckets_.front().flat.numel() - buffers_at_) *
                                               static_cast<int64_t>(buckets_.front().flat.element_size()));
  }

  void start_ready_buckets(bool all) {
    while (next_bucket_ < buckets_.size()) {
      auto& b = buckets_[next_bucket_];
      if (!all && b.waiting > 0) return;
      if (next_bucket_ == 0 && !shared_buffers_.empty()) put_buffers();
      if (all)
        for (const size_t i : b.members)
          if (!dense_[i].filled) fill_slot(i, torch::Tensor());
      b.work = group_->start_all_reduce_sum(b.flat, "all-reduce of the gradients");
      stats_.dense_bytes += static_cast<double>((next_bucket_ == 0 && !shared_buffers_.empty() ? buffers_at_ : b.flat.numel()) *
                                                static_cast<int64_t>(b.flat.element_size()));
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

  // This rank's gradient of a table as (rows, values), values weighted by
  // the step's share; empty when it has none.
  std::pair<torch::Tensor, torch::Tensor> local_rows(const SparseParameter& s) const {
    const int64_t rows = s.param.size(0), dim = s.param.size(1);
    const auto grad = s.param.grad();
    torch::Tensor index, values;
    if (grad.defined() && grad.is_sparse()) {
      // An embedding's gradient holds a row per lookup: a user's row once
      // for each of the G rows of its group. Summed here, each row travels
      // once (the recipe's user table: 20 times fewer bytes).
      const auto coalesced = grad.is_coalesced() ? grad : grad.coalesce();
      index = coalesced._indices()[0];
      values = coalesced._values();
    } else if (grad.defined()) {  // a dense gradient of a table: every row
      index = torch::arange(rows, torch::TensorOptions(torch::kInt64).device(s.param.device()));
      values = grad;
    } else {
      index = torch::empty({0}, torch::TensorOptions(torch::kInt64).device(s.param.device()));
      values = torch::empty({0, dim}, s.param.options().requires_grad(false));
    }
    return {index.contiguous(), (values * share_).contiguous()};
  }

  // Every sparse table's gradient in two collectives, whatever the number
  // of tables: the row counts of every rank and table, then one buffer
  // that holds the tables exchanged as (row, values) pairs, each rank
  // writing its own slot (see ProcessGroup::all_gather), and the tables
  // densified because their rows would cost more than the table itself,
  // summed over the ranks. Rows travel as floats where the type holds every
  // row number exactly (float32: tables up to 2^24 rows); a larger table's
  // rows take a third collective, in int64.
  void exchange_sparse() {
    if (sparse_.empty()) return;
    torch::NoGradGuard no_grad;
    const int64_t world = group_->world_size(), rank = group_->rank(), tables = static_cast<int64_t>(sparse_.size());
    const auto on_device = torch::TensorOptions().device(group_->device());
    const auto value_options = sparse_.front().param.options().requires_grad(false);
    std::vector<std::pair<torch::Tensor, torch::Tensor>> local;
    auto counts = torch::zeros({world, tables}, on_device.dtype(torch::kInt64));
    for (int64_t t = 0; t < tables; ++t) {
      local.push_back(local_rows(sparse_[static_cast<size_t>(t)]));
      counts[rank][t].fill_(local.back().first.size(0));
    }
    group_->all_reduce_sum(counts, "all-reduce of the sparse gradients' row counts");
    const auto n = counts.cpu();
    const auto* c = n.data_ptr<int64_t>();
    const int64_t exact_rows = int64_t{1} << (sparse_.front().param.scalar_type() == torch::kFloat64 ? 53 : 24);

    // The plan, the same on every rank: each table's mode and place.
    struct Place {
      int64_t total = 0, most = 0;
      bool densify = false, int_rows = false;
      int64_t rows_at = 0, values_at = 0;  // gathered: offsets in a rank's slot (rows_at in the int64 slot if int_rows)
      int64_t table_at = 0;                // densified: offset in the summed part
    };
    std::vector<Place> place(static_cast<size_t>(tables));
    int64_t slot = 0, int_slot = 0, summed = 0;
    for (int64_t t = 0; t < tables; ++t) {
      auto& q = place[static_cast<size_t>(t)];
      const auto& p = sparse_[static_cast<size_t>(t)].param;
      for (int64_t r = 0; r < world; ++r) {
        q.most = std::max(q.most, c[r * tables + t]);
        q.total += c[r * tables + t];
      }
      if (q.total == 0) continue;
      const int64_t element = static_cast<int64_t>(p.element_size()), dim = p.size(1);
      const double gather_bytes = static_cast<double>(world * q.most * (dim + 1) * element);
      const double dense_bytes = static_cast<double>(p.size(0) * (dim + 1) * element);
      q.densify = options_.sparse_exchange() == SparseExchange::Dense ||
                  (options_.sparse_exchange() == SparseExchange::Auto && dense_bytes < gather_bytes);
      if (q.densify) {
        q.table_at = summed;
        summed += p.size(0) * (dim + 1);
        stats_.sparse_bytes += dense_bytes;
        ++stats_.sparse_densified;
        continue;
      }
      q.int_rows = p.size(0) > exact_rows;
      if (q.int_rows) {
        q.rows_at = int_slot;
        int_slot += q.most;
      } else {
        q.rows_at = slot;
        slot += q.most;
      }
      q.values_at = slot;
      slot += q.most * dim;
      stats_.sparse_bytes += gather_bytes;
      ++stats_.sparse_gathered;
    }
    if (slot + summed == 0) {
      for (auto& sp : sparse_)
        if (sp.param.grad().defined()) sp.param.mutable_grad().reset();
      return;
    }
    auto buffer = torch::zeros({world * slot + summed}, value_options);
    auto slots = buffer.narrow(0, 0, world * slot).view({world, slot});
    auto sums = buffer.narrow(0, world * slot, summed);
    torch::Tensor int_slots;
    if (int_slot > 0) int_slots = torch::zeros({world, int_slot}, on_device.dtype(torch::kInt64));
    for (int64_t t = 0; t < tables; ++t) {
      const auto& q = place[static_cast<size_t>(t)];
      if (q.total == 0) continue;
      const auto& [index, value] = local[static_cast<size_t>(t)];
      const int64_t k = index.size(0), rows = sparse_[static_cast<size_t>(t)].param.size(0), dim = value.size(1);
      if (q.densify) {
        if (k == 0) continue;
        auto table = sums.narrow(0, q.table_at, rows * (dim + 1)).view({rows, dim + 1});
        table.narrow(1, 0, dim).index_add_(0, index, value);
        table.select(1, dim).index_add_(0, index, torch::ones({k}, value.options()));
        continue;
      }
      (q.int_rows ? int_slots : slots)[rank].narrow(0, q.rows_at, k).copy_(index);
      slots[rank].narrow(0, q.values_at, k * dim).copy_(value.reshape({-1}));
    }
    group_->all_reduce_sum(buffer, "all-reduce of the sparse gradients");
    if (int_slot > 0) group_->all_reduce_sum(int_slots, "all-reduce of the sparse gradients' rows");

    for (int64_t t = 0; t < tables; ++t) {
      const auto& q = place[static_cast<size_t>(t)];
      auto& sp = sparse_[static_cast<size_t>(t)];
      if (q.total == 0) {
        if (sp.param.grad().defined()) sp.param.mutable_grad().reset();
        continue;
      }
      const int64_t rows = sp.param.size(0), dim = sp.param.size(1);
      const auto sparse_options = sp.param.options().layout(torch::kSparse).requires_grad(false);
      if (q.densify) {
        const auto table = sums.narrow(0, q.table_at, rows * (dim + 1)).view({rows, dim + 1});
        const auto touched = table.select(1, dim).nonzero().select(1, 0);
        sp.param.mutable_grad() = torch::sparse_coo_tensor(touched.unsqueeze(0),
                                                           table.narrow(1, 0, dim).index_select(0, touched),
                                                           sp.param.sizes(), sparse_options)
                                      ._coalesced_(true);
        continue;
      }
      std::vector<torch::Tensor> row_parts, value_parts;
      for (int64_t r = 0; r < world; ++r) {
        const int64_t k = c[r * tables + t];
        row_parts.push_back((q.int_rows ? int_slots : slots)[r].narrow(0, q.rows_at, k));
        value_parts.push_back(slots[r].narrow(0, q.values_at, k * dim).view({k, dim}));
      }
      sp.param.mutable_grad() = torch::sparse_coo_tensor(torch::cat(row_parts).to(torch::kInt64).unsqueeze(0),
                                                         torch::cat(value_parts), sp.param.sizes(), sparse_options);
    }
  }

  void average_buffers(std::vector<torch::Tensor>& buffers) {
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
  std::vector<torch::Tensor> shared_buffers_, separate_buffers_;
  int64_t buffers_at_ = 0;  // where shared_buffers_ start in the first bucket
  size_t next_bucket_ = 0;
  double share_ = 1;
  bool armed_ = false;
  bool stepping_ = false;
  ExchangeStats stats_;
};

} // namespace rectrain
