#pragma once
// Augmented negative sampling (ANS; Zhao et al., "Augmented Negative Sampling
// for Collaborative Filtering", RecSys 2023, arXiv 2308.05972), following
// the authors' code for MF:
//
//   gate      g  = σ((W_i n + b_i) ⊙ (W_u u + b_u))   (n a pool item, u the user)
//   hard/easy n_h = n ⊙ g, n_e = n − n_h   (and p_h, p_e of the positive alike)
//   magnitude m  = σ(1 / (w_m · (n_h ⊙ p_h) + b_m)) · scale · ‖noise‖-normalised uniform noise
//   augmented ñ  = n_h + n_e + sign(p_e − n_e) ⊙ m   (the easy part moved towards the positive)
//   gain         Δ = ⟨u, ñ⟩ − ⟨u, n⟩
//   choice       argmax over the pool of ⟨u, ñ⟩ + eps · Δ
//   auxiliary    ‖n_h − p_h‖ (hard factors like the positive's)
//              + Σ_pool ‖p_e ⊙ n_e‖ (easy factors apart)
//              + log(1 + Σ_pool exp(⟨u, n_e⟩ − ⟨u, n_h⟩)) (the hard part scores higher),
//   weighted by gamma and added to the ranking loss.
//
// The chosen negative is a vector, not an item: score it against the user
// with the same dot product the model uses (its gradient trains the gates,
// the margin layer and the pool's item vectors, as in the paper).

#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <cstdint>

namespace rectrain {

struct AugmentedNegativeOptions {
  /* implicit */ AugmentedNegativeOptions(int64_t dim) : dim_(dim) {}
  /// Width of the user and item vectors.
  TORCH_ARG(int64_t, dim);
  /// Weight of the augmentation gain in the choice (the paper's ε).
  TORCH_ARG(double, eps) = 1.0;
  /// Weight of the auxiliary losses (the paper's γ).
  TORCH_ARG(double, gamma) = 0.1;
  /// Largest step of the easy factors (the authors' code uses 0.1).
  TORCH_ARG(double, scale) = 0.1;
};

/// What one call gives: the chosen negatives and the auxiliary loss.
struct AugmentedNegatives {
  torch::Tensor negative;   ///< [B, d] augmented vectors, one per row
  torch::Tensor choice;     ///< [B] int64: the pool entry each came from
  torch::Tensor aux_loss;   ///< scalar, already weighted by gamma
  torch::Tensor gate;       ///< [B, M, d] g
  torch::Tensor gain;       ///< [B, M] Δ
  torch::Tensor augmented;  ///< [B, M, d] ñ for every pool entry
};

class AugmentedNegativeImpl : public torch::nn::Cloneable<AugmentedNegativeImpl> {
 public:
  explicit AugmentedNegativeImpl(AugmentedNegativeOptions options_) : options(std::move(options_)) { reset(); }

  void reset() override {
    if (options.dim() <= 0) throw Error(detail::concat("AugmentedNegative: dim must be > 0, got ", options.dim()));
    if (!std::isfinite(options.eps()) || !std::isfinite(options.gamma()) || options.gamma() < 0 ||
        !(options.scale() >= 0) || !std::isfinite(options.scale()))
      throw Error(detail::concat("AugmentedNegative: need finite eps, gamma >= 0 and scale >= 0; got eps ",
                                 options.eps(), ", gamma ", options.gamma(), ", scale ", options.scale()));
    user_gate = register_module("user_gate", torch::nn::Linear(options.dim(), options.dim()));
    item_gate = register_module("item_gate", torch::nn::Linear(options.dim(), options.dim()));
    margin = register_module("margin", torch::nn::Linear(options.dim(), 1));
  }

  /// user [B, d], positive [B, d], pool [B, M, d] (the candidates' vectors);
  /// noise [B, M, d] uniform in [0, 1) (drawn by the caller, so the same
  /// seed gives the same noise on any device).
  AugmentedNegatives forward(const torch::Tensor& user, const torch::Tensor& positive, const torch::Tensor& pool,
                             const torch::Tensor& noise) {
    check(user, positive, pool, noise);
    const auto u = user.unsqueeze(1);      // [B, 1, d]
    const auto p = positive.unsqueeze(1);  // [B, 1, d]
    AugmentedNegatives out;
    out.gate = torch::sigmoid(item_gate->forward(pool) * user_gate->forward(u));
    const auto n_hard = pool * out.gate;
    const auto n_easy = pool - n_hard;
    const auto p_hard = p * out.gate;
    const auto p_easy = p - p_hard;

    // 1 / x with x kept away from 0 (σ(±∞) is fine, its gradient is not).
    auto m = margin->forward(n_hard * p_hard);
    m = torch::where(m.abs() < 1e-6, torch::where(m < 0, torch::full_like(m, -1e-6), torch::full_like(m, 1e-6)), m);
    const auto magnitude = noise / noise.norm(2, -1, true).clamp_min(1e-12) * torch::sigmoid(1.0 / m) * options.scale();
    out.augmented = n_hard + n_easy + torch::sign(p_easy - n_easy) * magnitude;

    // ⟨u, v_m⟩ for the M vectors of each row (on CPU a broadcast product
    // and sum beats bmm's B tiny products).
    const auto score = [&u](const torch::Tensor& v) { return (v * u).sum(2); };
    const auto original = score(pool);  // [B, M]
    const auto augmented_score = score(out.augmented);
    out.gain = augmented_score - original;
    out.choice = (augmented_score + options.eps() * out.gain).detach().argmax(1);
    out.negative = out.augmented.gather(1, out.choice.view({-1, 1, 1}).expand({-1, 1, pool.size(2)})).squeeze(1);

    const auto distance = (n_hard - p_hard).norm(2, -1).mean();
    const auto orthogonality = (p_easy * n_easy).norm(2, -1).sum(1).mean();
    const auto hard_score = score(n_hard), easy_score = score(n_easy);
    // log(1 + Σ exp(easy − hard)) = softplus(logsumexp(easy − hard)), stable.
    const auto separation = torch::softplus(torch::logsumexp(easy_score - hard_score, 1)).mean();
    out.aux_loss = options.gamma() * (distance + orthogonality + separation);
    return out;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "rectrain::AugmentedNegative(dim=" << options.dim() << ", eps=" << options.eps()
           << ", gamma=" << options.gamma() << ")";
  }

  AugmentedNegativeOptions options;
  torch::nn::Linear user_gate{nullptr};
  torch::nn::Linear item_gate{nullptr};
  torch::nn::Linear margin{nullptr};

 private:
  void check(const torch::Tensor& user, const torch::Tensor& positive, const torch::Tensor& pool,
             const torch::Tensor& noise) const {
    const int64_t d = options.dim();
    if (!user.defined() || user.dim() != 2 || user.size(1) != d)
      throw TensorError(detail::concat("AugmentedNegative user: expected [B, ", d, "], got ", detail::shape_of(user)));
    const int64_t b = user.size(0);
    if (!positive.defined() || positive.sizes() != user.sizes())
      throw TensorError(detail::concat("AugmentedNegative positive: expected ", user.sizes(), ", got ",
                                       detail::shape_of(positive)));
    if (!pool.defined() || pool.dim() != 3 || pool.size(0) != b || pool.size(2) != d || pool.size(1) < 1)
      throw TensorError(detail::concat("AugmentedNegative pool: expected [", b, ", M, ", d, "], got ",
                                       detail::shape_of(pool)));
    if (!noise.defined() || noise.sizes() != pool.sizes())
      throw TensorError(detail::concat("AugmentedNegative noise: expected ", pool.sizes(), ", got ",
                                       detail::shape_of(noise)));
  }
};

TORCH_MODULE(AugmentedNegative);

} // namespace rectrain
