#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/loss/ranking.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

using namespace rectrain;
using rectrain_test::check_gradient;

namespace {

struct Case {
  torch::Tensor scores, targets, mask;
};

// Random groups: targets in {-1, 0, 1}, random padding; group 0 fully
// padded, group 1 with all-equal targets (no valid pair in either).
Case random_case(int64_t b, int64_t g, uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  Case c;
  c.scores = torch::randn({b, g}, torch::kFloat64);
  c.targets = torch::randint(-1, 2, {b, g}, torch::kFloat64);
  c.mask = torch::rand({b, g}) > 0.25;
  c.mask[0].fill_(false);
  c.targets[1].fill_(1);
  return c;
}

double gain(double t, double low) { return std::exp2(t - low) - 1; }

// |ΔNDCG| of swapping i and j in group r, by explicit sorting.
double brute_delta_ndcg(const Case& c, int64_t r, int64_t i, int64_t j) {
  const int64_t g = c.scores.size(1);
  std::vector<int64_t> valid;
  double low = INFINITY;
  for (int64_t k = 0; k < g; ++k)
    if (c.mask[r][k].item<bool>()) {
      valid.push_back(k);
      low = std::min(low, c.targets[r][k].item<double>());
    }
  std::vector<int64_t> order = valid;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b2) {
    return c.scores[r][a].item<double>() > c.scores[r][b2].item<double>();
  });
  std::vector<double> rank(static_cast<size_t>(g), 0);
  for (size_t p = 0; p < order.size(); ++p) rank[static_cast<size_t>(order[p])] = static_cast<double>(p + 1);
  std::vector<double> gains;
  for (int64_t k : valid) gains.push_back(gain(c.targets[r][k].item<double>(), low));
  std::sort(gains.rbegin(), gains.rend());
  double idcg = 0;
  for (size_t p = 0; p < gains.size(); ++p) idcg += gains[p] / std::log2(static_cast<double>(p) + 2);
  const double gi = gain(c.targets[r][i].item<double>(), low), gj = gain(c.targets[r][j].item<double>(), low);
  const double di = 1 / std::log2(rank[static_cast<size_t>(i)] + 1), dj = 1 / std::log2(rank[static_cast<size_t>(j)] + 1);
  return std::abs((gi - gj) * (di - dj)) / idcg;
}

// Every pairwise reduction by enumerating pairs one by one.
double brute_pairwise(const Case& c, const std::function<double(double)>& pair_loss, bool lambda,
                      RankingReduction reduction) {
  const int64_t b = c.scores.size(0), g = c.scores.size(1);
  double total = 0, pairs = 0, group_means = 0, groups = 0;
  for (int64_t r = 0; r < b; ++r) {
    double sum = 0, n = 0;
    for (int64_t i = 0; i < g; ++i)
      for (int64_t j = 0; j < g; ++j) {
        if (!c.mask[r][i].item<bool>() || !c.mask[r][j].item<bool>()) continue;
        if (!(c.targets[r][i].item<double>() > c.targets[r][j].item<double>())) continue;
        double l = pair_loss(c.scores[r][i].item<double>() - c.scores[r][j].item<double>());
        if (lambda) l *= brute_delta_ndcg(c, r, i, j);
        sum += l;
        n += 1;
      }
    total += sum;
    pairs += n;
    if (n > 0) {
      group_means += sum / n;
      groups += 1;
    }
  }
  if (reduction == RankingReduction::Sum) return total;
  if (reduction == RankingReduction::MeanOverGroups) return groups > 0 ? group_means / groups : 0;
  return pairs > 0 ? total / pairs : 0;
}

double brute_listwise(const Case& c, RankingReduction reduction) {
  const int64_t b = c.scores.size(0), g = c.scores.size(1);
  double total = 0, groups = 0;
  for (int64_t r = 0; r < b; ++r) {
    double low = INFINITY, best = -INFINITY;
    for (int64_t k = 0; k < g; ++k)
      if (c.mask[r][k].item<bool>()) {
        low = std::min(low, c.targets[r][k].item<double>());
        best = std::max(best, c.scores[r][k].item<double>());
      }
    double gain_sum = 0, z = 0;
    for (int64_t k = 0; k < g; ++k)
      if (c.mask[r][k].item<bool>()) {
        gain_sum += gain(c.targets[r][k].item<double>(), low);
        z += std::exp(c.scores[r][k].item<double>() - best);
      }
    if (!(gain_sum > 0)) continue;
    double l = 0;
    for (int64_t k = 0; k < g; ++k)
      if (c.mask[r][k].item<bool>())
        l -= gain(c.targets[r][k].item<double>(), low) / gain_sum *
             (c.scores[r][k].item<double>() - best - std::log(z));
    total += l;
    groups += 1;
  }
  if (reduction == RankingReduction::Sum) return total;
  return groups > 0 ? total / groups : 0;
}

} // namespace

TEST_CASE("pairwise losses equal brute-force pair enumeration", "[loss]") {
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    const Case c = random_case(9, 7, seed);
    for (const bool lambda : {false, true})
      for (const auto reduction :
           {RankingReduction::MeanOverPairs, RankingReduction::MeanOverGroups, RankingReduction::Sum}) {
        CAPTURE(seed, lambda, static_cast<int>(reduction));
        const auto o = PairwiseLossOptions().margin(0.7).lambda_weights(lambda).reduction(reduction);
        CHECK(pairwise_margin_loss(c.scores, c.targets, c.mask, o).item<double>() ==
              Approx(brute_pairwise(c, [](double d) { return std::max(0.0, 0.7 - d); }, lambda, reduction))
                  .epsilon(1e-12));
        CHECK(ranknet_loss(c.scores, c.targets, c.mask, o).item<double>() ==
              Approx(brute_pairwise(c, [](double d) { return std::log1p(std::exp(-d)); }, lambda, reduction))
                  .epsilon(1e-12));
        // Both pair layouts (the CPU default is Compact, CUDA's Dense).
        for (const auto layout : {rectrain::detail::PairLayout::Compact, rectrain::detail::PairLayout::Dense}) {
          CAPTURE(static_cast<int>(layout));
          auto margin = [](const torch::Tensor& d) { return torch::relu(0.7 - d); };
          CHECK(rectrain::detail::pairwise_loss("test", c.scores, c.targets, c.mask, o, margin, layout).item<double>() ==
                Approx(brute_pairwise(c, [](double d) { return std::max(0.0, 0.7 - d); }, lambda, reduction))
                    .epsilon(1e-12));
          check_gradient(
              [&](const torch::Tensor& s) {
                return rectrain::detail::pairwise_loss("test", s, c.targets, c.mask, o,
                                             [](const torch::Tensor& d) { return torch::softplus(-d); }, layout);
              },
              c.scores);
        }
      }
  }
}

TEST_CASE("listwise softmax loss equals a brute-force list computation", "[loss]") {
  for (uint64_t seed = 4; seed <= 6; ++seed) {
    const Case c = random_case(9, 7, seed);
    for (const auto reduction : {RankingReduction::MeanOverGroups, RankingReduction::Sum}) {
      CAPTURE(seed, static_cast<int>(reduction));
      CHECK(listwise_softmax_loss(c.scores, c.targets, c.mask, ListwiseLossOptions().reduction(reduction))
                .item<double>() == Approx(brute_listwise(c, reduction)).epsilon(1e-12));
    }
  }
}

TEST_CASE("ranking loss gradients match finite differences", "[loss]") {
  const Case c = random_case(5, 6, 7);
  const auto o = PairwiseLossOptions().margin(0.5);
  check_gradient([&](const torch::Tensor& s) { return pairwise_margin_loss(s, c.targets, c.mask, o); }, c.scores);
  check_gradient([&](const torch::Tensor& s) { return ranknet_loss(s, c.targets, c.mask, o); }, c.scores);
  check_gradient(
      [&](const torch::Tensor& s) { return ranknet_loss(s, c.targets, c.mask, PairwiseLossOptions().lambda_weights(true)); },
      c.scores);
  check_gradient([&](const torch::Tensor& s) { return listwise_softmax_loss(s, c.targets, c.mask); }, c.scores);
}

TEST_CASE("ranking losses: padding and groups without pairs add nothing, no NaN", "[loss]") {
  Case c = random_case(4, 5, 8);
  // Padded entries may hold anything, even huge scores and NaN-free junk.
  auto junk = c.scores.clone();
  junk.masked_fill_(~c.mask, 1e6);
  auto junk_targets = c.targets.clone();
  junk_targets.masked_fill_(~c.mask, 5);
  for (const bool lambda : {false, true}) {
    const auto o = PairwiseLossOptions().lambda_weights(lambda);
    CHECK(pairwise_margin_loss(junk, junk_targets, c.mask, o).item<double>() ==
          Approx(pairwise_margin_loss(c.scores, c.targets, c.mask, o).item<double>()));
  }
  CHECK(listwise_softmax_loss(junk, junk_targets, c.mask).item<double>() ==
        Approx(listwise_softmax_loss(c.scores, c.targets, c.mask).item<double>()));
  // Nothing valid at all: zero loss, zero (not NaN) gradient.
  const auto none = torch::zeros({3, 4}, torch::kBool);
  const auto equal = torch::ones({3, 4});
  for (const auto& targets : {torch::randn({3, 4}), equal}) {
    for (const auto& mask : {none, torch::ones({3, 4}, torch::kBool)}) {
      if (mask.all().item<bool>() && !targets.equal(equal)) continue;  // that case has pairs
      auto s = torch::randn({3, 4}).requires_grad_(true);
      const auto total = pairwise_margin_loss(s, targets, mask) + ranknet_loss(s, targets, mask) +
                         listwise_softmax_loss(s, targets, mask) +
                         ranknet_loss(s, targets, mask, PairwiseLossOptions().lambda_weights(true));
      CHECK(total.item<float>() == 0.0f);
      total.backward();
      CHECK(s.grad().abs().max().item<float>() == 0.0f);
    }
  }
}

TEST_CASE("ranking losses reject bad tensors", "[loss][bad-input]") {
  const auto s = torch::randn({2, 3});
  CHECK_THROWS_WITH(pairwise_margin_loss(s, torch::zeros({2, 4})), Catch::Contains("targets must be shaped like scores [2, 3]"));
  CHECK_THROWS_WITH(ranknet_loss(torch::zeros({2, 3}, torch::kLong), torch::zeros({2, 3})),
                    Catch::Contains("scores must be a floating [B, G] tensor"));
  CHECK_THROWS_WITH(listwise_softmax_loss(s, torch::zeros({2, 3}), torch::ones({3, 2}, torch::kBool)),
                    Catch::Contains("mask must be shaped like scores"));
  CHECK_THROWS_WITH(pairwise_margin_loss(s, torch::full({2, 3}, NAN)), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(pairwise_margin_loss(s, torch::zeros({2, 3}), {}, PairwiseLossOptions().margin(-1)),
                    Catch::Contains("margin must be >= 0"));
}

TEST_CASE("ranking losses on CUDA agree with CPU", "[loss][cuda]") {
  if (!torch::cuda::is_available()) {
    SUCCEED("no CUDA device");
    return;
  }
  const Case c = random_case(64, 20, 9);
  const auto o = PairwiseLossOptions().lambda_weights(true);
  CHECK(ranknet_loss(c.scores.cuda(), c.targets.cuda(), c.mask.cuda(), o).item<double>() ==
        Approx(ranknet_loss(c.scores, c.targets, c.mask, o).item<double>()).epsilon(1e-10));
  CHECK(listwise_softmax_loss(c.scores.cuda(), c.targets.cuda(), c.mask.cuda()).item<double>() ==
        Approx(listwise_softmax_loss(c.scores, c.targets, c.mask).item<double>()).epsilon(1e-10));
}
