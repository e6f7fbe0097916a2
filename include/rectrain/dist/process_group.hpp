#pragma once
// A process group of LibTorch's c10d (Gloo on CPU, NCCL on CUDA) set up
// the way torchrun sets one up: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
// and MASTER_PORT from the environment (or DistributedOptions), a TCPStore
// served by rank 0 for the rendezvous. rectrain adds no communication layer
// of its own: these are c10d's collectives, with errors that name the rank
// and the operation, and a timeout on every wait.
//
//   auto group = rectrain::ProcessGroup::create(rectrain::DistributedOptions::from_environment());
//   torch::Tensor t = torch::ones({4});
//   group->all_reduce_sum(t);  // every rank now holds world_size() * 1
//
// Gloo needs its headers at compile time (Debian: libgloo-dev; LibTorch's
// own build defines USE_C10D_GLOO for its consumers when it has Gloo);
// NCCL needs a CUDA LibTorch built with it (USE_C10D_NCCL). rectrain's
// CMake package checks the headers and symbols where it is used and
// defines RECTRAIN_NO_GLOO / RECTRAIN_NO_NCCL for a backend it cannot link.
// Without a backend this header still compiles and create() says what is
// missing; without c10d's headers at all it stops with an #error.

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/parse.hpp>

#include <torch/torch.h>

#if !__has_include(<torch/csrc/distributed/c10d/TCPStore.hpp>)
#error "rectrain/dist: this LibTorch has no c10d headers (torch/csrc/distributed/c10d); it was built without USE_DISTRIBUTED, and rectrain's data-parallel training needs them"
#endif
#include <rectrain/core/compat_c10d.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#if defined(USE_C10D_GLOO) && !defined(RECTRAIN_NO_GLOO) && __has_include(<gloo/config.h>)
#define RECTRAIN_HAS_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#else
#define RECTRAIN_HAS_GLOO 0
#endif
#if defined(USE_C10D_NCCL) && !defined(RECTRAIN_NO_NCCL) && __has_include(<nccl.h>)
#define RECTRAIN_HAS_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#else
#define RECTRAIN_HAS_NCCL 0
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace rectrain {

/// A collective that failed or timed out, or a rendezvous that could not be
/// made; the message names this rank, the operation and the likely cause.
class DistributedError : public Error {
 public:
  using Error::Error;
};

enum class DistributedBackend : uint8_t {
  Auto,  ///< NCCL for a CUDA device, Gloo otherwise
  Gloo,
  Nccl,
};

inline const char* to_string(DistributedBackend backend) {
  switch (backend) {
    case DistributedBackend::Gloo: return "gloo";
    case DistributedBackend::Nccl: return "nccl";
    default: return "auto";
  }
}

/// Whether this build of rectrain and LibTorch can use `backend`.
inline bool distributed_backend_available(DistributedBackend backend) {
  switch (backend) {
    case DistributedBackend::Gloo: return RECTRAIN_HAS_GLOO;
    case DistributedBackend::Nccl: return RECTRAIN_HAS_NCCL;
    default: return RECTRAIN_HAS_GLOO || RECTRAIN_HAS_NCCL;
  }
}

struct DistributedOptions {
  /// This process's rank, 0 .. world_size - 1 (RANK).
  TORCH_ARG(int64_t, rank) = 0;
  /// Processes in the group (WORLD_SIZE).
  TORCH_ARG(int64_t, world_size) = 1;
  /// The rank on this machine: which GPU a CUDA rank takes (LOCAL_RANK).
  TORCH_ARG(int64_t, local_rank) = 0;
  /// Where rank 0 serves the rendezvous store (MASTER_ADDR, MASTER_PORT).
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 29500;
  /// How long a rendezvous or a collective may wait for the other ranks
  /// before it fails: a rank that died or hung stops the others after this.
  TORCH_ARG(double, timeout_seconds) = 300;
  TORCH_ARG(DistributedBackend, backend) = DistributedBackend::Auto;

 public:
  /// The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  /// MASTER_PORT), and RECTRAIN_DIST_TIMEOUT (seconds); each one unset
  /// keeps its default here. A value that is not what it should be throws,
  /// naming the variable.
  static DistributedOptions from_environment() {
    DistributedOptions o;
    const auto integer = [](const char* name, int64_t low, int64_t fallback) {
      const char* text = std::getenv(name);
      if (!text) return fallback;
      const auto v = detail::whole_number<long long>(text);
      if (!v || *v < low)
        throw DistributedError(detail::concat("environment variable ", name, " must be an integer >= ", low,
                                              ", got '", text, "'"));
      return static_cast<int64_t>(*v);
    };
    o.world_size(integer("WORLD_SIZE", 1, 1));
    o.rank(integer("RANK", 0, 0));
    o.local_rank(integer("LOCAL_RANK", 0, 0));
    o.master_port(integer("MASTER_PORT", 1, 29500));
    if (const char* addr = std::getenv("MASTER_ADDR")) o.master_addr(addr);
    if (const char* timeout = std::getenv("RECTRAIN_DIST_TIMEOUT")) {
      const auto v = detail::whole_number<double>(timeout);
      if (!v || !(*v > 0))
        throw DistributedError(detail::concat("environment variable RECTRAIN_DIST_TIMEOUT must be a number of "
                                              "seconds > 0, got '", timeout, "'"));
      o.timeout_seconds(*v);
    }
    o.validate();
    return o;
  }

  /// Throws when the options cannot describe a group.
  void validate() const {
    if (world_size() < 1) throw DistributedError(detail::concat("world_size must be >= 1, got ", world_size()));
    if (rank() < 0 || rank() >= world_size())
      throw DistributedError(detail::concat("rank must be in 0..", world_size() - 1, " (WORLD_SIZE ", world_size(),
                                            "), got ", rank()));
    if (local_rank() < 0) throw DistributedError(detail::concat("local_rank must be >= 0, got ", local_rank()));
    if (master_port() < 1 || master_port() > 65535)
      throw DistributedError(detail::concat("master_port must be in 1..65535, got ", master_port()));
    if (master_addr().empty()) throw DistributedError("master_addr is empty");
    if (!(timeout_seconds() > 0))
      throw DistributedError(detail::concat("timeout_seconds must be > 0, got ", timeout_seconds()));
  }
};

namespace detail {

inline bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

} // namespace detail

/// One rank's membership of a process group: the c10d store and backend,
/// and the collectives rectrain's data-parallel parts use, each waited for
/// within the group's timeout. Not copyable; share it by shared_ptr.
class ProcessGroup {
 public:
  /// An asynchronous collective; wait() (or the group's wait) finishes it.
  class Work {
   public:
    Work() = default;
    Work(compat::C10dWork work, std::string what) : work_(std::move(work)), what_(std::move(what)) {}
    bool pending() const { return static_cast<bool>(work_); }

   private:
    friend class ProcessGroup;
    compat::C10dWork work_;
    std::string what_;
  };

  /// Joins the group `options` describes: rank 0 serves the store at
  /// master_addr:master_port, every rank connects, and the backend's
  /// rendezvous runs; all within options.timeout_seconds. `device` is where
  /// this rank's tensors live (a CUDA device selects NCCL under Auto).
  static std::shared_ptr<ProcessGroup> create(const DistributedOptions& options,
                                              torch::Device device = torch::kCPU) {
    options.validate();
    auto backend = options.backend();
    if (backend == DistributedBackend::Auto)
      backend = device.is_cuda() ? DistributedBackend::Nccl : DistributedBackend::Gloo;
    if (backend == DistributedBackend::Nccl && !device.is_cuda())
      throw DistributedError("the NCCL backend needs a CUDA device; use Gloo for CPU tensors");
    if (!distributed_backend_available(backend))
      throw DistributedError(detail::concat(
          "this build has no ", to_string(backend), " backend: ",
          backend == DistributedBackend::Gloo
              ? "LibTorch must be built with Gloo (USE_C10D_GLOO, as Debian's and PyTorch's are) and Gloo's "
                "headers installed (Debian: apt install libgloo-dev)"
              : "it needs a CUDA LibTorch built with NCCL (USE_C10D_NCCL) and nccl.h on the include path"));
    return std::shared_ptr<ProcessGroup>(new ProcessGroup(options, backend, device));
  }

  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const noexcept { return options_.rank(); }
  int64_t world_size() const noexcept { return options_.world_size(); }
  torch::Device device() const noexcept { return device_; }
  DistributedBackend backend() const noexcept { return backend_; }
  const DistributedOptions& options() const noexcept { return options_; }
  /// The rendezvous store (small key-value exchanges between ranks).
  c10d::Store& store() { return *store_; }

  /// Starts summing `tensor` (dense, contiguous, on device()) over the
  /// ranks, in place. Every rank must start the same collectives in the
  /// same order.
  Work start_all_reduce_sum(torch::Tensor& tensor, const std::string& what = "all-reduce") {
    check_tensor(tensor, what);
    std::vector<torch::Tensor> tensors{tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    return Work(call(what, [&] { return backend_impl_->allreduce(tensors, opts); }), what);
  }

  /// Waits for `work` within the timeout; throws DistributedError naming
  /// the operation when it failed or timed out.
  void wait(Work& work) {
    if (!work.work_) return;
    auto w = std::move(work.work_);
    call(work.what_, [&] {
      w->wait(timeout());
      return w;
    });
  }

  /// Sums `tensor` over the ranks, in place, and waits.
  void all_reduce_sum(torch::Tensor& tensor, const std::string& what = "all-reduce") {
    auto work = start_all_reduce_sum(tensor, what);
    wait(work);
  }

  /// Copies rank `root`'s `tensor` into every rank's, in place.
  void broadcast(torch::Tensor& tensor, int64_t root = 0, const std::string& what = "broadcast") {
    check_tensor(tensor, what);
    std::vector<torch::Tensor> tensors{tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    Work work(call(what, [&] { return backend_impl_->broadcast(tensors, opts); }), what);
    wait(work);
  }

  /// Every rank's `tensor` (same shape and type on every rank), in rank
  /// order. On Gloo, an all-reduce of a buffer in which each rank fills
  /// its own slot: Gloo's all-gather in LibTorch 1.13 ran 5 to 13 times
  /// slower than that all-reduce of twice the bytes (2 ranks on loopback,
  /// 0.4 to 20 MB a rank). Exact for integers and finite floats (a -0.0
  /// comes back as +0.0).
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor, const std::string& what = "all-gather") {
    auto input = tensor.contiguous();
    check_tensor(input, what);
    if (backend_ == DistributedBackend::Gloo) {
      auto shape = input.sizes().vec();
      shape.insert(shape.begin(), world_size());
      auto slots = torch::zeros(shape, input.options());
      slots[rank()].copy_(input);
      all_reduce_sum(slots, what);
      return slots.unbind(0);
    }
    std::vector<std::vector<torch::Tensor>> outputs(1);
    for (int64_t r = 0; r < world_size(); ++r) outputs[0].push_back(torch::empty_like(input));
    std::vector<torch::Tensor> inputs{input};
    Work work(call(what, [&] { return backend_impl_->allgather(outputs, inputs); }), what);
    wait(work);
    return outputs[0];
  }

  /// Every rank's rows of `tensor` ([n_r, ...], n_r may differ between
  /// ranks, the rest of the shape may not), concatenated in rank order;
  /// `counts`, when given, receives each n_r.
  torch::Tensor all_gather_rows(const torch::Tensor& tensor, std::vector<int64_t>* counts = nullptr,
                                const std::string& what = "all-gather") {
    if (tensor.dim() < 1) throw TensorError(detail::concat(what, ": expected at least one dimension, got a scalar"));
    const auto sizes = all_gather(torch::tensor({tensor.size(0)}, torch::TensorOptions(torch::kInt64).device(device_)),
                                  what + " (row counts)");
    std::vector<int64_t> n;
    int64_t most = 0;
    for (const auto& s : sizes) {
      n.push_back(s.item<int64_t>());
      most = std::max(most, n.back());
    }
    auto shape = tensor.sizes().vec();
    shape[0] = most;
    auto padded = torch::zeros(shape, tensor.options());
    if (tensor.size(0) > 0) padded.narrow(0, 0, tensor.size(0)).copy_(tensor);
    const auto parts = all_gather(padded, what);
    std::vector<torch::Tensor> rows;
    for (size_t r = 0; r < parts.size(); ++r) rows.push_back(parts[r].narrow(0, 0, n[r]));
    if (counts) *counts = n;
    return torch::cat(rows);
  }

  /// Waits until every rank gets here.
  void barrier(const std::string& what = "barrier") {
    // Gloo's barrier carries no tensor; an all-reduce of one value is a
    // barrier on every backend, NCCL included.
    auto one = torch::ones({1}, torch::TensorOptions(torch::kFloat32).device(device_));
    all_reduce_sum(one, what);
  }

  /// A fresh key prefix for a store exchange; every rank gets the same
  /// sequence when they make the same calls in the same order.
  std::string next_store_prefix(const std::string& what) {
    return detail::concat("rectrain/", what, "/", store_sequence_++, "/");
  }

  /// "rank 1 of 2 (gloo)".
  std::string describe() const {
    return detail::concat("rank ", rank(), " of ", world_size(), " (", to_string(backend_), ")");
  }

 private:
  ProcessGroup(const DistributedOptions& options, DistributedBackend backend, torch::Device device)
      : options_(options), backend_(backend), device_(device) {
    const auto timeout_ms = timeout();
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(options_.master_port());
    store_options.isServer = options_.rank() == 0;
    store_options.numWorkers = static_cast<size_t>(options_.world_size());
    store_options.waitWorkers = true;
    store_options.timeout = timeout_ms;
    try {
      try {
        store_ = c10::make_intrusive<c10d::TCPStore>(options_.master_addr(), store_options);
      } catch (const std::exception& e) {
        // A LibTorch built without libuv refuses its default store server:
        // the older one serves the same protocol.
        if (!compat::uses_libuv(store_options, 0) || std::string(e.what()).find("libuv") == std::string::npos) throw;
        compat::without_libuv(store_options, 0);
        store_ = c10::make_intrusive<c10d::TCPStore>(options_.master_addr(), store_options);
      }
    } catch (const std::exception& e) {
      throw DistributedError(detail::concat(
          describe(), ": no rendezvous at ", options_.master_addr(), ":", options_.master_port(), " within ",
          options_.timeout_seconds(), " s (",
          options_.rank() == 0 ? "is the port free? were all ranks started?" : "is rank 0 running there?",
          "): ", first_line(e.what())));
    }
#if RECTRAIN_HAS_GLOO
    if (backend_ == DistributedBackend::Gloo) {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout_ms);
      gloo_options->devices.push_back(gloo_device(options_.master_addr()));
      try {
        backend_impl_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
            store_, static_cast<int>(options_.rank()), static_cast<int>(options_.world_size()), gloo_options);
      } catch (const std::exception& e) {
        throw DistributedError(detail::concat(describe(), ": Gloo's rendezvous failed: ", first_line(e.what())));
      }
    }
#endif
#if RECTRAIN_HAS_NCCL
    if (backend_ == DistributedBackend::Nccl) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout_ms;
      backend_impl_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          store_, static_cast<int>(options_.rank()), static_cast<int>(options_.world_size()), nccl_options);
    }
#endif
    if (!backend_impl_) throw DistributedError(detail::concat("no ", to_string(backend_), " backend in this build"));
  }

#if RECTRAIN_HAS_GLOO
  // GLOO_SOCKET_IFNAME picks the interface, as in PyTorch; a loopback
  // master means one machine, so Gloo binds to loopback too; otherwise the
  // address this host's name resolves to.
  static std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master) {
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
      return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
    if (detail::is_loopback(master)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    return c10d::ProcessGroupGloo::createDefaultDevice();
  }
#endif

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_seconds() * 1000.0));
  }

  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  void check_tensor(const torch::Tensor& t, const std::string& what) const {
    if (!t.defined() || t.is_sparse() || !t.is_contiguous() || t.device() != device_)
      throw TensorError(detail::concat(what, ": expected a dense contiguous tensor on ", device_, ", got ",
                                       t.defined() && t.is_sparse() ? "a sparse tensor" : detail::type_and_shape_of(t),
                                       t.defined() ? detail::concat(" on ", t.device()) : ""));
  }

  template <typename F>
  compat::C10dWork call(const std::string& what, F&& f) {
    try {
      return f();
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      const std::string cause = first_line(e.what());
      throw DistributedError(detail::concat(describe(), ": ", what, " failed (timeout ", options_.timeout_seconds(),
                                            " s): ", silent_ranks(), ". ", cause));
    }
  }

  // After a failed collective, which ranks are gone: every rank that gets
  // here leaves a mark in the store and waits a little for the others'.
  // A rank that died or hangs leaves none; when the store itself is gone,
  // rank 0 (which serves it) is.
  std::string silent_ranks() noexcept {
    try {
      const std::string prefix = "rectrain/failed/";
      store_->set(prefix + std::to_string(rank()), std::vector<uint8_t>{1});
      const auto window = std::chrono::duration<double>(std::min(options_.timeout_seconds(), 10.0));
      const auto deadline = std::chrono::steady_clock::now() + window;
      std::vector<int64_t> silent;
      for (;;) {
        silent.clear();
        for (int64_t r = 0; r < world_size(); ++r)
          if (r != rank() && !store_->check({prefix + std::to_string(r)})) silent.push_back(r);
        if (silent.empty() || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (silent.empty()) return "every other rank failed too (see rank 0's output for the first error)";
      std::string names;
      for (const int64_t r : silent) names += (names.empty() ? "rank " : ", rank ") + std::to_string(r);
      return names + (silent.size() == 1 ? " did not answer: it died or hangs" : " did not answer: they died or hang");
    } catch (...) {
      return rank() == 0 ? std::string("the rendezvous store failed")
                         : std::string("rank 0 did not answer (it serves the rendezvous store): it died or hangs");
    }
  }

  DistributedOptions options_;
  DistributedBackend backend_;
  torch::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<compat::C10dBackend> backend_impl_;
  int64_t store_sequence_ = 0;
};

namespace detail {

inline std::string first_difference(const std::string& a, const std::string& b, int64_t rank_a, int64_t rank_b) {
  const auto la = split_keeping_empty(a, '\n'), lb = split_keeping_empty(b, '\n');
  for (size_t i = 0; i < std::max(la.size(), lb.size()); ++i) {
    const std::string x = i < la.size() ? la[i] : "(nothing)", y = i < lb.size() ? lb[i] : "(nothing)";
    if (x != y) return concat("line ", i + 1, ": rank ", rank_a, " has '", x, "', rank ", rank_b, " has '", y, "'");
  }
  return "they differ";
}

} // namespace detail

/// Throws DistributedError on every rank unless every rank passed the same
/// `text` (settings, a data fingerprint, the model's parameters): the
/// message names `what`, the ranks that differ from rank 0 and the first
/// line that differs. Every rank must call it, in the same order.
inline void agree_across_ranks(ProcessGroup& group, const std::string& what, const std::string& text) {
  if (group.world_size() == 1) return;
  const std::string prefix = group.next_store_prefix("agree");
  const auto as_bytes = [](const std::string& t) { return std::vector<uint8_t>(t.begin(), t.end()); };
  const auto get = [&](int64_t r) {
    std::vector<uint8_t> v;
    try {
      v = group.store().get(prefix + std::to_string(r));
    } catch (const std::exception& e) {
      throw DistributedError(detail::concat(group.describe(), ": could not read rank ", r, "'s ", what,
                                            " from the store: ", e.what()));
    }
    return std::string(v.begin(), v.end());
  };
  group.store().set(prefix + std::to_string(group.rank()), as_bytes(text));
  const std::string reference = group.rank() == 0 ? text : get(0);
  auto differs = torch::tensor({text != reference ? 1.0f : 0.0f},
                               torch::TensorOptions(torch::kFloat32).device(group.device()));
  group.all_reduce_sum(differs, "comparing " + what);
  if (differs.item<float>() == 0) return;
  std::string message;
  if (group.rank() == 0) {
    for (int64_t r = 1; r < group.world_size(); ++r) {
      const std::string other = get(r);
      if (other != text) message += detail::concat("; rank ", r, ": ", detail::first_difference(text, other, 0, r));
    }
  } else if (text != reference) {
    message = "; " + detail::first_difference(reference, text, 0, group.rank());
  } else {
    message = "; this rank agrees with rank 0, another rank does not (see rank 0's message)";
  }
  throw DistributedError(detail::concat(group.describe(), ": the ranks disagree on ", what, message));
}

/// Runs `fn` on this rank, then tells every rank whether it failed on any:
/// where fn threw, its exception goes on; the other ranks throw a
/// DistributedError naming the ranks that failed and `what` they were
/// doing, instead of waiting for them in their next collective until the
/// timeout. Every rank must call it, in the same order.
template <typename F>
void checked_on_every_rank(ProcessGroup& group, const std::string& what, F&& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  if (group.world_size() > 1) {
    auto failed = torch::zeros({group.world_size()}, torch::TensorOptions(torch::kFloat32).device(group.device()));
    if (error) failed[group.rank()].fill_(1);
    group.all_reduce_sum(failed, "sharing whether " + what + " succeeded");
    const auto host = failed.cpu();
    std::string ranks;
    for (int64_t r = 0; r < group.world_size(); ++r)
      if (host[r].item<float>() > 0) ranks += (ranks.empty() ? "rank " : ", rank ") + std::to_string(r);
    if (!error && !ranks.empty())
      throw DistributedError(detail::concat(group.describe(), ": ", what, " failed on ", ranks, " (see its message)"));
  }
  if (error) std::rethrow_exception(error);
}

} // namespace rectrain
