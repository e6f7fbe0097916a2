#pragma once
// Adam for embedding tables with sparse gradients (LibTorch's C++ Adam
// rejects them). A dense gradient of an id table is mostly zeros, yet
// creating it, accumulating it and running Adam's element-wise ops over it
// reads and writes the whole table many times per step: at challenge scale
// (620 MB of tables) that was as long as the rest of a 20,480-row step.
// Two ways to update, chosen at construction:
//
//  - SparseAdamRows::All: every row, exactly Adam's rule with a zero
//    gradient where the batch did not use a row (so the same optimizer as
//    torch::optim::Adam on the dense gradient), in one pass over the table
//    and its two moments, reading the gradient's rows where they exist.
//    Without weight decay the moments are held scaled between steps
//    (m = β1^k m̃, v = β2^k ṽ): a zero gradient leaves m̃ and ṽ as they
//    are, so a row the batch did not use costs a read of its moments and a
//    read and write of its weights, not a write of all three. The pass is
//    bound by memory, so that is a third less time; the values are Adam's
//    up to float rounding, and save() (or unscale_moments()) turns the
//    state back into Adam's own.
//  - SparseAdamRows::Touched: only the rows a step used, and only their
//    moments move (the "lazy" Adam of PyTorch's SparseAdam): no pass over
//    the table at all, but rows not in a batch stop instead of coasting on
//    their momentum, which measured slightly worse GAUC.
//
//   CategoricalFeature user(CategoricalFeatureOptions(n, 64).sparse(true));
//   rectrain::SparseAdam tables({user->weight}, torch::optim::AdamOptions(1e-3));
//
// Options and per-parameter state are LibTorch's AdamOptions and
// AdamParamState, so checkpoints hold it as they hold an Adam (amsgrad is
// not supported).

#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/simd.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rectrain {

enum class SparseAdamRows {
  All,      ///< Adam's update of every row (zero gradient where unused)
  Touched,  ///< only the rows in the gradient ("lazy" Adam)
};

namespace detail {

/// The constants of one Adam step.
struct AdamStepConstants {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float step_size;  // −lr / bias_correction1
  float sqrt_bc2;   // √bias_correction2
  /// The moments are held scaled (see SparseAdam): m = β1^k m̃, v = β2^k ṽ
  /// for the k steps since they were last Adam's own. With a zero gradient
  /// m̃ and ṽ do not change, so a row the batch did not use only has its
  /// weight read and written: 16 bytes per value instead of 24.
  bool scaled = false;
  float m_gain = 0;       // (1 − β1) / β1^k
  float v_gain = 0;       // (1 − β2) / β2^k
  float v_scale = 0;      // √(β2^k) / √bias_correction2
  float scaled_step = 0;  // −lr β1^k / bias_correction1
};

/// Adam's step on one row of `width` values, `g` its gradient or nullptr
/// for a zero one, in Adam's order of operations. `Scaled`: on moments held
/// scaled (AdamStepConstants::scaled, no weight decay), where m̃ and ṽ move,
/// and are written, only where `g` is given. One template, two loops: the
/// choice is made at compile time, not per vector.
template <int Bytes, bool Scaled>
RECTRAIN_ALWAYS_INLINE void adam_row(float* p, float* m, float* v, const float* g, int64_t width,
                                     const AdamStepConstants& k) {
  int64_t j = 0;
#if RECTRAIN_VECTOR_KERNELS
  using V = Vec<float, Bytes>;
  constexpr int64_t L = lanes<float, Bytes>;
  for (; j + L <= width; j += L) {
    V pj, mj, vj, gj{};
    load(pj, p + j);
    load(mj, m + j);
    load(vj, v + j);
    if (g) load(gj, g + j);
    V denom;
    if constexpr (Scaled) {
      if (g) {
        mj = mj + k.m_gain * gj;
        vj = vj + k.v_gain * (gj * gj);
        store(m + j, mj);
        store(v + j, vj);
      }
      denom = vj;
      sqrt_lanes<Bytes>(denom);
      pj = pj + k.scaled_step * mj / (denom * k.v_scale + k.eps);
    } else {
      gj += k.weight_decay * pj;
      mj = mj * k.beta1 + k.one_minus_beta1 * gj;
      vj = vj * k.beta2 + k.one_minus_beta2 * (gj * gj);
      store(m + j, mj);
      store(v + j, vj);
      denom = vj;
      sqrt_lanes<Bytes>(denom);
      pj = pj + k.step_size * mj / (denom / k.sqrt_bc2 + k.eps);
    }
    store(p + j, pj);
  }
#endif
  for (; j < width; ++j) {
    if constexpr (Scaled) {
      if (g) {
        m[j] = m[j] + k.m_gain * g[j];
        v[j] = v[j] + k.v_gain * (g[j] * g[j]);
      }
      p[j] = p[j] + k.scaled_step * m[j] / (std::sqrt(v[j]) * k.v_scale + k.eps);
    } else {
      const float gj = (g ? g[j] : 0.0f) + k.weight_decay * p[j];
      m[j] = m[j] * k.beta1 + k.one_minus_beta1 * gj;
      v[j] = v[j] * k.beta2 + k.one_minus_beta2 * (gj * gj);
      p[j] = p[j] + k.step_size * m[j] / (std::sqrt(v[j]) / k.sqrt_bc2 + k.eps);
    }
  }
}

/// The gradient rows of one step: entry t is row `rows[t]` (ascending,
/// repeated where an id occurred several times), its values at row
/// `order[t]` of `values` (or row t when `order` is null).
struct SparseRows {
  const int64_t* rows;
  const int64_t* order;
  const float* values;
  int64_t nnz;
};

/// Rows [begin, end) of the table; the rows of `g` have a gradient, the
/// others a zero one. Repeated rows are summed in entry order into
/// `scratch` (width floats) first, as a dense gradient sums them.
template <int Bytes>
RECTRAIN_ALWAYS_INLINE void adam_rows_body(float* p, float* m, float* v, int64_t width, int64_t begin, int64_t end,
                                           const SparseRows& g, float* scratch, const AdamStepConstants& k) {
  int64_t t = std::lower_bound(g.rows, g.rows + g.nnz, begin) - g.rows;
  const auto values_of = [&g, width](int64_t entry) { return g.values + (g.order ? g.order[entry] : entry) * width; };
  for (int64_t r = begin; r < end; ++r) {
    const float* gr = nullptr;
    if (t < g.nnz && g.rows[t] == r) {
      gr = values_of(t++);
      if (t < g.nnz && g.rows[t] == r) {
        std::copy_n(gr, width, scratch);
        for (; t < g.nnz && g.rows[t] == r; ++t) {
          const float* more = values_of(t);
          for (int64_t j = 0; j < width; ++j) scratch[j] += more[j];
        }
        gr = scratch;
      }
    }
    if (k.scaled)
      adam_row<Bytes, true>(p + r * width, m + r * width, v + r * width, gr, width, k);
    else
      adam_row<Bytes, false>(p + r * width, m + r * width, v + r * width, gr, width, k);
  }
}

using AdamRowsKernel = void (*)(float*, float*, float*, int64_t, int64_t, int64_t, const SparseRows&, float*,
                                const AdamStepConstants&);

inline void adam_rows_generic(float* p, float* m, float* v, int64_t width, int64_t begin, int64_t end,
                              const SparseRows& g, float* scratch, const AdamStepConstants& k) {
  adam_rows_body<16>(p, m, v, width, begin, end, g, scratch, k);
}
#if RECTRAIN_X86_DISPATCH
RECTRAIN_TARGET_AVX2 inline void adam_rows_avx2(float* p, float* m, float* v, int64_t width, int64_t begin,
                                                int64_t end, const SparseRows& g, float* scratch,
                                                const AdamStepConstants& k) {
  adam_rows_body<32>(p, m, v, width, begin, end, g, scratch, k);
}
RECTRAIN_TARGET_AVX512 inline void adam_rows_avx512(float* p, float* m, float* v, int64_t width, int64_t begin,
                                                    int64_t end, const SparseRows& g, float* scratch,
                                                    const AdamStepConstants& k) {
  adam_rows_body<64>(p, m, v, width, begin, end, g, scratch, k);
}
#endif

inline AdamRowsKernel adam_rows_for(CpuIsa isa) {
  return RECTRAIN_KERNEL_FOR(isa, &adam_rows_generic, &adam_rows_avx2, &adam_rows_avx512);
}

/// Adam's step on every row of a float32 CPU table `p` [rows, width] with
/// moments `m`, `v`, from a sparse gradient, coalesced or not (`grad_rows`
/// [nnz] any order and repeats, `grad_values` [nnz, width]); zero gradient
/// for the other rows. Each row is read and written once, in Adam's order
/// of operations, on the CPU's ISA (cpu_isa.hpp). The rows are sorted here
/// (stable, so repeats sum in their order): LibTorch's coalesce, which
/// would also copy the values, took longer than the sort.
inline void adam_all_rows(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& grad_rows,
                          const torch::Tensor& grad_values, const AdamStepConstants& k) {
  const int64_t rows = p.size(0), width = rows > 0 ? p.numel() / rows : 0, nnz = grad_rows.numel();
  const auto values = grad_values.contiguous();
  torch::Tensor sorted = grad_rows.contiguous(), order;
  const int64_t* r = sorted.data_ptr<int64_t>();
  if (!std::is_sorted(r, r + nnz)) {
    std::tie(sorted, order) = torch::sort(sorted, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    order = order.contiguous();
  }
  const SparseRows g{sorted.data_ptr<int64_t>(), order.defined() ? order.data_ptr<int64_t>() : nullptr,
                     values.data_ptr<float>(), nnz};
  float *pp = p.data_ptr<float>(), *pm = m.data_ptr<float>(), *pv = v.data_ptr<float>();
  const AdamRowsKernel kernel = adam_rows_for(cpu_isa());
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(width));
    kernel(pp, pm, pv, width, begin, end, g, scratch.data(), k);
  });
}

/// The key of `p`'s state in a torch::optim::Optimizer: LibTorch 1.x uses
/// the address of its TensorImpl printed as a string, 2.x the address.
template <typename Key>
Key optimizer_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;  // as c10::guts::to_string(TensorImpl*) does
    out << static_cast<const void*>(p.unsafeGetTensorImpl());
    return out.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

} // namespace detail

class SparseAdam : public torch::optim::Optimizer {
 public:
  explicit SparseAdam(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                      torch::optim::AdamOptions defaults = {}, SparseAdamRows rows = SparseAdamRows::All)
      : Optimizer(std::move(param_groups), std::make_unique<torch::optim::AdamOptions>(defaults)), rows_(rows) {
    const auto [beta1, beta2] = defaults.betas();
    if (!(defaults.lr() >= 0) || !(defaults.eps() >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) ||
        !(defaults.weight_decay() >= 0))
      throw Error(detail::concat("SparseAdam: invalid options: lr ", defaults.lr(), ", betas (", beta1, ", ", beta2,
                                 "), eps ", defaults.eps(), ", weight_decay ", defaults.weight_decay()));
    if (defaults.amsgrad()) throw Error("SparseAdam: amsgrad is not supported");
  }
  explicit SparseAdam(std::vector<torch::Tensor> params, torch::optim::AdamOptions defaults = {},
                      SparseAdamRows rows = SparseAdamRows::All)
      : SparseAdam(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
                   std::move(defaults), rows) {}

  SparseAdamRows rows() const { return rows_; }

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    torch::Tensor loss;
    if (closure) {
      torch::AutoGradMode enable_grad(true);
      loss = closure();
    }
    for (auto& group : param_groups_) {
      const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        if (!p.grad().is_sparse())
          throw TensorError(detail::concat("SparseAdam: parameter ", detail::shape_of(p),
                                           " has a dense gradient; give it to torch::optim::Adam, or make its "
                                           "embedding sparse (CategoricalFeatureOptions::sparse(true))"));
        update(p, options);
      }
    }
    return loss;
  }

  /// Makes every table's moments Adam's own (state() then holds exactly
  /// what torch::optim::Adam's would); save() does it first.
  void unscale_moments() {
    for (auto& group : param_groups_) {
      const auto [beta1, beta2] = static_cast<const torch::optim::AdamOptions&>(group.options()).betas();
      for (auto& p : group.params()) unscale_moments(p, beta1, beta2);
    }
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    // The same values, held unscaled: the archive is an Adam state.
    const_cast<SparseAdam*>(this)->unscale_moments();
    torch::optim::serialize<torch::optim::AdamParamState, torch::optim::AdamOptions>(archive, *this);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::optim::serialize<torch::optim::AdamParamState, torch::optim::AdamOptions>(archive, *this);
    scaled_steps_.clear();
  }

 private:
  torch::optim::AdamParamState& state_of(const torch::Tensor& p) {
    const auto key = detail::optimizer_state_key<std::decay_t<decltype(state_)>::key_type>(p);
    auto it = state_.find(key);
    if (it == state_.end()) {
      auto fresh = std::make_unique<torch::optim::AdamParamState>();
      fresh->step(0);
      fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
      fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
      it = state_.emplace(key, std::move(fresh)).first;
    }
    return static_cast<torch::optim::AdamParamState&>(*it->second);
  }

  void update(torch::Tensor& p, const torch::optim::AdamOptions& options) {
    const auto [beta1, beta2] = options.betas();
    const bool fused = rows_ == SparseAdamRows::All && p.device().is_cpu() && p.scalar_type() == torch::kFloat &&
                       p.is_contiguous() && p.dim() >= 1;
    // Repeated rows (one id several times in a batch) summed first, as in
    // a dense gradient (the fused pass sums them itself).
    const auto grad = fused ? p.grad() : p.grad().coalesce();
    const auto rows = fused ? grad._indices()[0] : grad.indices()[0];
    if (rows_ == SparseAdamRows::Touched && rows.numel() == 0) return;
    auto& state = state_of(p);
    state.step(state.step() + 1);
    const double step = static_cast<double>(state.step());
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    auto& exp_avg = state.exp_avg();
    auto& exp_avg_sq = state.exp_avg_sq();

    if (rows_ == SparseAdamRows::All && fused && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous()) {
      detail::AdamStepConstants k{static_cast<float>(beta1),
                                  static_cast<float>(beta2),
                                  static_cast<float>(1 - beta1),
                                  static_cast<float>(1 - beta2),
                                  static_cast<float>(options.eps()),
                                  static_cast<float>(options.weight_decay()),
                                  static_cast<float>(-options.lr() / bias_correction1),
                                  static_cast<float>(std::sqrt(bias_correction2))};
      // Scaled moments need a zero gradient to leave m̃ and ṽ alone, so no
      // weight decay; β = 0 would scale by zero.
      if (options.weight_decay() == 0 && beta1 > 0 && beta2 > 0) {
        int64_t steps = scaled_steps_[p.unsafeGetTensorImpl()] + 1;
        // Before β^k leaves float's comfortable range, the moments become
        // Adam's own again (one pass every ~260 steps at β1 = 0.9).
        if (std::pow(beta1, steps) < kRescaleBelow || std::pow(beta2, steps) < kRescaleBelow) {
          unscale_moments(p, beta1, beta2);
          steps = 1;
        }
        const double c1 = std::pow(beta1, steps), c2 = std::pow(beta2, steps);
        k.scaled = true;
        k.m_gain = static_cast<float>((1 - beta1) / c1);
        k.v_gain = static_cast<float>((1 - beta2) / c2);
        k.v_scale = static_cast<float>(std::sqrt(c2 / bias_correction2));
        k.scaled_step = static_cast<float>(-options.lr() * c1 / bias_correction1);
        scaled_steps_[p.unsafeGetTensorImpl()] = steps;
      } else {
        unscale_moments(p, beta1, beta2);
      }
      detail::adam_all_rows(p, exp_avg, exp_avg_sq, rows, grad._values().reshape({rows.numel(), -1}), k);
      return;
    }
    unscale_moments(p, beta1, beta2);
    if (rows_ == SparseAdamRows::All) {
      // Elsewhere (CUDA, other types): torch::optim::Adam's ops on the
      // dense gradient.
      auto dense = grad.to_dense();
      if (options.weight_decay() != 0) dense = dense.add(p, options.weight_decay());
      exp_avg.mul_(beta1).add_(dense, 1 - beta1);
      exp_avg_sq.mul_(beta2).addcmul_(dense, dense, 1 - beta2);
      const auto denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options.eps());
      p.addcdiv_(exp_avg, denom, -options.lr() / bias_correction1);
      return;
    }

    auto values = grad.values();
    if (options.weight_decay() != 0) values = values + options.weight_decay() * p.index_select(0, rows);
    auto m = exp_avg.index_select(0, rows).mul_(beta1).add_(values, 1 - beta1);
    auto v = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(values, values, 1 - beta2);
    exp_avg.index_copy_(0, rows, m);
    exp_avg_sq.index_copy_(0, rows, v);
    // Adam's update in its order of operations (addcdiv_: value * t1 / t2).
    const auto denom = (v.sqrt() / std::sqrt(bias_correction2)).add_(options.eps());
    p.index_add_(0, rows, m.mul_(-options.lr() / bias_correction1).div_(denom));
  }

  /// Makes `p`'s moments Adam's own again: m = β1^k m̃, v = β2^k ṽ.
  void unscale_moments(const torch::Tensor& p, double beta1, double beta2) {
    const auto it = scaled_steps_.find(p.unsafeGetTensorImpl());
    if (it == scaled_steps_.end() || it->second == 0) return;
    auto& state = state_of(p);
    state.exp_avg().mul_(std::pow(beta1, it->second));
    state.exp_avg_sq().mul_(std::pow(beta2, it->second));
    it->second = 0;
  }

  static constexpr double kRescaleBelow = 1e-12;

  SparseAdamRows rows_;
  /// Steps since each table's moments were last Adam's own (0: they are).
  std::unordered_map<const c10::TensorImpl*, int64_t> scaled_steps_;
};

} // namespace rectrain
