#pragma once
// The batch pipeline: worker threads take [B, G] index blocks from a
// BatchSampler (a GroupSampler, or any other), gather them into Batches (in
// pinned memory when the target is CUDA), copy them to the device with
// non_blocking, and hand them over through a bounded reorder queue, so
// batches come out in the sampler's order whatever the worker count. Each stage's cost is measured.

#include <rectrain/core/error.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/data/batch_spec.hpp>
#include <rectrain/data/batch_sampler.hpp>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace rectrain {

struct BatchPipelineOptions {
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Gathering threads; 0 gathers in the caller's thread on next().
  TORCH_ARG(int64_t, workers) = 2;
  /// Batches gathered ahead of the consumer, at most.
  TORCH_ARG(int64_t, prefetch) = 4;
  /// Pin host batches when the device is CUDA (needed for non_blocking).
  TORCH_ARG(bool, pin_memory) = true;
};

/// Seconds spent per stage since the epoch started (summed over workers).
struct PipelineStats {
  double sample_seconds = 0;  ///< taking index blocks from the sampler
  double gather_seconds = 0;  ///< gathering columns into a Batch
  double copy_seconds = 0;    ///< issuing the copy to the device
  double wait_seconds = 0;    ///< the consumer waiting in next()
  int64_t batches = 0;
  int64_t rows = 0;  ///< real (unpadded) rows delivered
};

class BatchPipeline {
 public:
  BatchPipeline(BatchSpec spec, BatchSampler& sampler, BatchPipelineOptions options = {})
      : spec_(std::move(spec)), sampler_(sampler), options_(std::move(options)) {
    if (options_.workers() < 0 || options_.prefetch() < 1)
      throw Error(detail::concat("BatchPipeline: workers must be >= 0 and prefetch >= 1, got ",
                                 options_.workers(), " and ", options_.prefetch()));
    if (spec_.num_rows() < 0) throw Error("BatchPipeline: the BatchSpec has no columns");
    pin_ = options_.pin_memory() && options_.device().is_cuda();
  }
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;
  ~BatchPipeline() { stop(); }

  const BatchPipelineOptions& options() const noexcept { return options_; }
  /// The sampler batches come from.
  const BatchSampler& sampler() const noexcept { return sampler_; }
  /// The sampler, for saving and loading its progress between epochs.
  BatchSampler& sampler() noexcept { return sampler_; }

  /// Changes the worker count (takes effect at the next start_epoch).
  void set_workers(int64_t workers) {
    if (workers < 0) throw Error("BatchPipeline: workers must be >= 0");
    options_.workers(workers);
  }

  /// Prepares `epoch` in the sampler and starts gathering.
  void start_epoch(int64_t epoch) {
    stop();
    sampler_.set_epoch(epoch);
    start();
  }

  /// The next batch on the device, or nullopt at the end of the epoch.
  compat::optional<Batch> next() {
    const Stopwatch t0;
    if (options_.workers() == 0) {
      if (!started_) start();
      auto work = take_work();
      if (!work) return compat::nullopt;
      auto batch = produce(*work);
      stats_.wait_seconds += t0.seconds();
      return batch;
    }
    if (!started_) start();
    std::unique_lock<std::mutex> lock(mutex_);
    ready_cv_.wait(lock, [&] {
      return error_ || ready_.count(next_out_) || (exhausted_ && next_out_ >= issued_);
    });
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      lock.unlock();
      stop();
      std::rethrow_exception(e);
    }
    stats_.wait_seconds += t0.seconds();
    auto it = ready_.find(next_out_);
    if (it == ready_.end()) return compat::nullopt;
    Batch batch = std::move(it->second);
    ready_.erase(it);
    ++next_out_;
    space_cv_.notify_all();
    return batch;
  }

  PipelineStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  /// Measures rows/s with 1..max_workers workers over `batches` batches each
  /// (on a scratch epoch of the sampler), keeps the smallest count within 3%
  /// of the best, sets it and returns it. The sampler is left at `epoch`'s
  /// start; call start_epoch before training.
  int64_t tune_workers(int64_t max_workers, int64_t batches = 32, int64_t epoch = 0) {
    std::vector<double> rate;
    for (int64_t w = 1; w <= std::max<int64_t>(1, max_workers); ++w) {
      set_workers(w);
      start_epoch(epoch);
      const Stopwatch t0;
      int64_t rows = 0;
      for (int64_t b = 0; b < batches; ++b) {
        auto batch = next();
        if (!batch) break;
        rows += batch->rows.numel();
      }
      rate.push_back(static_cast<double>(rows) / std::max(1e-9, t0.seconds()));
      stop();
    }
    const double best = *std::max_element(rate.begin(), rate.end());
    int64_t chosen = 1;
    while (rate[static_cast<size_t>(chosen - 1)] < 0.97 * best) ++chosen;
    set_workers(chosen);
    tuned_rates_ = rate;
    sampler_.set_epoch(epoch);
    return chosen;
  }

  /// rows/s per worker count measured by the last tune_workers (index 0 = 1 worker).
  const std::vector<double>& tuned_rates() const noexcept { return tuned_rates_; }

  /// Stops the workers; batches not yet taken are dropped.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    space_cv_.notify_all();
    ready_cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.clear();
    started_ = false;
    stopping_ = false;
  }

 private:
  using clock = std::chrono::steady_clock;
  struct Work {
    int64_t sequence;
    torch::Tensor rows;
  };


  void start() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_ = PipelineStats{};
    exhausted_ = false;
    issued_ = 0;
    next_out_ = 0;
    error_ = nullptr;
    started_ = true;
    for (int64_t w = 0; w < options_.workers(); ++w) threads_.emplace_back([this] { worker_loop(); });
  }

  // Takes the next index block; sampling is sequential (and cheap).
  compat::optional<Work> take_work() {
    std::unique_lock<std::mutex> lock(sample_mutex_);
    if (exhausted_) return compat::nullopt;
    const Stopwatch t0;
    auto rows = sampler_.next_batch();
    const double dt = t0.seconds();
    std::lock_guard<std::mutex> guard(mutex_);
    stats_.sample_seconds += dt;
    if (!rows) {
      exhausted_ = true;
      ready_cv_.notify_all();
      return compat::nullopt;
    }
    return Work{issued_++, std::move(*rows)};
  }

  Batch produce(const Work& work) {
    Stopwatch t0;
    Batch batch = spec_.gather(work.rows, pin_);
    const double gather = t0.seconds();
    t0.restart();
    if (batch.rows.device() != options_.device()) batch = batch.to(options_.device(), /*non_blocking=*/pin_);
    const double copy = t0.seconds();
    const int64_t rows = batch.mask.sum().item<int64_t>();
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.gather_seconds += gather;
    stats_.copy_seconds += copy;
    stats_.batches += 1;
    stats_.rows += rows;
    return batch;
  }

  void worker_loop() {
    try {
      while (true) {
        {
          // Bounded: wait while `prefetch` batches are ahead of the consumer.
          std::unique_lock<std::mutex> lock(mutex_);
          space_cv_.wait(lock, [&] {
            return stopping_ || issued_ - next_out_ < options_.prefetch();
          });
          if (stopping_) return;
        }
        auto work = take_work();
        if (!work) return;
        Batch batch = produce(*work);
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(work->sequence, std::move(batch));
        ready_cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      ready_cv_.notify_all();
    }
  }

  BatchSpec spec_;
  BatchSampler& sampler_;
  BatchPipelineOptions options_;
  bool pin_ = false;

  mutable std::mutex mutex_;
  std::mutex sample_mutex_;
  std::condition_variable ready_cv_, space_cv_;
  std::vector<std::thread> threads_;
  std::map<int64_t, Batch> ready_;
  int64_t issued_ = 0, next_out_ = 0;
  bool exhausted_ = false, stopping_ = false, started_ = false;
  std::exception_ptr error_;
  PipelineStats stats_;
  std::vector<double> tuned_rates_;
};

} // namespace rectrain
