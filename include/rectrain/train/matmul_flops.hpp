#pragma once
// The yardstick for a model's speed: the matrix products one training step
// of a Ranker performs, and how fast plain torch::mm runs exactly those
// products on the same device. Everything else in a step (gathers,
// activations, normalisation, losses, the optimizer, waiting for data) is
// overhead on top of them, so model GFLOP/s over torch::mm GFLOP/s is the
// share of the GEMM-bound rate a training loop reaches.
//
//   const auto products = training_matmuls(ranker, rows_per_batch);
//   const double model = matmul_flops(products) / rows_per_batch * rows_per_second / 1e9;
//   const double mm = matmul_gflops(products, device);

#include <rectrain/nn/ranker.hpp>
#include <rectrain/train/epoch_record.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace rectrain {

/// One product [m, k] x [k, n]. A weight gradient (gradᵀ · input) has a
/// transposed left operand, as in LibTorch's Linear backward.
struct MatmulShape {
  int64_t m = 0, k = 0, n = 0;
  bool transposed_left = false;
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n); }
};

namespace detail {

inline bool any_trains(const torch::nn::Module& module) {
  for (const auto& p : module.parameters())
    if (p.requires_grad()) return true;
  return false;
}

/// The products of `linear` on `rows` rows, forward and backward; updates
/// `input_grad` (does what follows need an input gradient).
inline void linear_matmuls(const torch::nn::LinearImpl& linear, int64_t rows, bool& input_grad,
                           std::vector<MatmulShape>& out) {
  const int64_t in = linear.options.in_features(), n_out = linear.options.out_features();
  out.push_back({rows, in, n_out, false});                                      // forward
  if (linear.weight.requires_grad()) out.push_back({n_out, rows, in, true});    // weight gradient
  if (input_grad) out.push_back({rows, n_out, in, false});                      // input gradient
  input_grad = input_grad || linear.weight.requires_grad();
}

inline void mlp_matmuls(const MlpImpl& mlp, int64_t rows, bool& input_grad, std::vector<MatmulShape>& out) {
  for (const auto& linear : mlp.linears) linear_matmuls(*linear, rows, input_grad, out);
}

} // namespace detail

/// The matrix products of one forward + backward pass of `ranker` over
/// `rows` rows: for every Linear (tower and shared MLPs, heads) the forward
/// product, the weight gradient if the weight trains, and the input
/// gradient if anything before it trains (the first layer over frozen
/// embeddings needs none). Embedding lookups are not products.
inline std::vector<MatmulShape> training_matmuls(const Ranker& ranker, int64_t rows) {
  std::vector<MatmulShape> out;
  bool towers_grad = false;
  for (const auto* tower : {&ranker->user_tower, &ranker->item_tower}) {
    bool grad = detail::any_trains(*(*tower)->features);
    detail::mlp_matmuls(*(*tower)->mlp, rows, grad, out);
    towers_grad = towers_grad || grad;
  }
  bool grad = towers_grad;
  if (ranker->cross)
    for (const auto& module : ranker->cross->modules())
      if (const auto* linear = dynamic_cast<const torch::nn::LinearImpl*>(module.get()))
        detail::linear_matmuls(*linear, rows, grad, out);
  if (ranker->experts) {
    // Every expert and gate reads the same input; each its own gradient.
    for (const auto* expert : ranker->experts->expert_modules()) {
      bool expert_grad = grad;
      detail::mlp_matmuls(*expert, rows, expert_grad, out);
    }
    for (const auto* gate : ranker->experts->gate_modules()) {
      bool gate_grad = grad;
      detail::linear_matmuls(*gate, rows, gate_grad, out);
    }
    grad = true;
  }
  detail::mlp_matmuls(*ranker->mlp, rows, grad, out);
  for (const auto& head : ranker->heads->values()) {
    bool head_grad = grad;
    for (const auto& module : head->modules())
      if (const auto* linear = dynamic_cast<const torch::nn::LinearImpl*>(module.get()))
        detail::linear_matmuls(*linear, rows, head_grad, out);
  }
  return out;
}

inline double matmul_flops(const std::vector<MatmulShape>& products) {
  double total = 0;
  for (const auto& p : products) total += p.flops();
  return total;
}

/// GFLOP/s of plain torch::mm over `products` on `device`, in `dtype`
/// (bf16 for a model trained under bf16 autocast), with random operands:
/// the median of `runs` timed passes after one warm-up.
inline double matmul_gflops(const std::vector<MatmulShape>& products, torch::Device device, int runs = 5,
                            torch::ScalarType dtype = torch::kFloat) {
  if (products.empty()) throw Error("matmul_gflops: no products to time");
  struct Operands {
    torch::Tensor a, b;
  };
  std::vector<Operands> operands;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  for (const auto& p : products)
    operands.push_back({p.transposed_left ? torch::randn({p.k, p.m}, options).t() : torch::randn({p.m, p.k}, options),
                        torch::randn({p.k, p.n}, options)});
  auto pass = [&] {
    for (const auto& o : operands) torch::mm(o.a, o.b);
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  pass();
  std::vector<double> seconds;
  for (int r = 0; r < std::max(1, runs); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + static_cast<std::ptrdiff_t>(seconds.size() / 2), seconds.end());
  return matmul_flops(products) / seconds[seconds.size() / 2] / 1e9;
}

/// Fills `record`'s model_gflops (the step's products of `ranker`, trained
/// with `batch_rows` rows a batch, at the rate its epoch ran) and mm_gflops
/// (plain torch::mm on the same shapes, on `device` in `dtype`, timed now).
/// For Trainer's measure hook.
inline void measure_matmul_rates(EpochRecord& record, const Ranker& ranker, int64_t batch_rows, torch::Device device,
                                 torch::ScalarType dtype = torch::kFloat) {
  const auto products = training_matmuls(ranker, batch_rows);
  record.model_gflops =
      matmul_flops(products) / static_cast<double>(batch_rows) * record.stats.rows_per_second() / 1e9;
  record.mm_gflops = matmul_gflops(products, device, 5, dtype);
}

} // namespace rectrain
