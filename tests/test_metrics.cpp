#include "catch.hpp"
#include "helpers.hpp"
#include "vk_in_process.hpp"

#include <rectrain/data/predictions.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>

using namespace rectrain;
using rectrain_test::i64;
using rectrain_test::TempDir;
using rectrain_test::run_command;
using rectrain_test::write_file;

namespace {

// Pair counting by definition: O(n^2).
double brute_auc(const std::vector<double>& s, const std::vector<double>& t) {
  double correct = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j)
      if (t[i] > t[j]) {
        pairs += 1;
        correct += s[i] > s[j] ? 1.0 : (s[i] == s[j] ? 0.5 : 0.0);
      }
  return pairs > 0 ? correct / pairs : std::nan("");
}

std::vector<double> vec(const torch::Tensor& t) {
  const auto d = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

double dcg(const std::vector<double>& rel_in_order, int64_t k) {
  double out = 0;
  for (int64_t p = 0; p < static_cast<int64_t>(rel_in_order.size()) && p < k; ++p)
    out += (std::exp2(rel_in_order[static_cast<size_t>(p)]) - 1) / std::log2(p + 2.0);
  return out;
}

} // namespace

TEST_CASE("auc equals brute-force pair counting, ties counting 1/2", "[metrics]") {
  torch::manual_seed(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 2 + trial % 40;
    // Coarse scores force ties; graded targets in {-1, 0, 1}.
    const auto scores = torch::randint(0, 5, {n}).to(torch::kFloat32);
    const auto targets = torch::randint(-1, 2, {n});
    const double expected = brute_auc(vec(scores), vec(targets));
    const double got = auc(scores, targets);
    if (std::isnan(expected))
      CHECK(std::isnan(got));
    else
      CHECK(got == Approx(expected).margin(1e-12));
  }
}

TEST_CASE("gauc is the unweighted mean over users with two target values", "[metrics]") {
  torch::manual_seed(2);
  const int64_t n = 3000;
  const auto users = torch::randint(0, 150, {n});
  const auto targets = torch::randint(-1, 2, {n}) * (torch::rand({n}) < 0.4).to(torch::kInt64);
  const auto scores = torch::randn({n}).round();  // ties
  double sum = 0;
  int64_t counted = 0;
  for (int64_t u = 0; u < 150; ++u) {
    const auto rows = (users == u).nonzero().view(-1);
    const double a = brute_auc(vec(scores.index_select(0, rows)), vec(targets.index_select(0, rows)));
    if (!std::isnan(a)) sum += a, ++counted;
  }
  const GroupMetric m = gauc(users, targets, scores);
  CHECK(m.users == counted);
  CHECK(m.value == Approx(sum / counted).margin(1e-12));
  // A constant predictor scores exactly 0.5.
  CHECK(gauc(users, targets, torch::zeros({n})).value == 0.5);
  // Perfect and reversed orderings.
  CHECK(gauc(users, targets, targets.to(torch::kFloat32)).value == 1.0);
  CHECK(gauc(users, targets, -targets.to(torch::kFloat32)).value == 0.0);
}

TEST_CASE("gauc_per_user gives each user's AUC, by user id; gauc is their mean", "[metrics]") {
  const auto users = i64({7, 3, 7, 3, 7, 9});
  const auto targets = i64({1, 0, -1, 1, 0, 1});
  const auto scores = torch::tensor({0.9F, 0.5F, 0.1F, 0.2F, 0.95F, 0.3F});
  const auto per = gauc_per_user(users, targets, scores);
  CHECK(torch::equal(per.users, i64({3, 7, 9})));
  REQUIRE(per.values.size() == 3);
  CHECK(per.values[0] == 0.0);                    // user 3: its better view scored lower
  CHECK(per.values[1] == Approx(2.0 / 3.0));      // user 7: 0.9 > 0.1 and 0.95 > 0.1 right, 0.9 < 0.95 wrong
  CHECK(std::isnan(per.values[2]));               // user 9: one view
  CHECK(gauc(users, targets, scores).value == Approx(1.0 / 3.0));
  CHECK(per.mean().value == gauc(users, targets, scores).value);
  CHECK(per.mean().users == 2);  // user 9 is undefined
}

TEST_CASE("paired_bootstrap: the users' mean difference and its percentile interval", "[metrics]") {
  // Identical scorings: no difference in any resample.
  const auto same = paired_bootstrap({0.5, 0.7, NAN}, {0.5, 0.7, 0.2});
  CHECK(same.users == 2);  // the NaN user is skipped
  CHECK(same.difference == 0);
  CHECK(same.low == 0);
  CHECK(same.high == 0);
  CHECK(same.share_above == 0.5);  // every mean is 0: ties count half
  // Two users, differences 0 and 1: a resample's mean is 0, 0.5 or 1 with
  // probabilities 1/4, 1/2, 1/4: 3/4 above 0, and the 1/4 at 0 count half.
  const auto two = paired_bootstrap({0.5, 1.0}, {0.5, 0.0}, PairedBootstrapOptions().resamples(20000).seed(3));
  CHECK(two.difference == 0.5);
  CHECK(two.share_above == Approx(0.875).margin(0.01));
  CHECK(two.low == 0);
  CHECK(two.high == 1);
  // A clear gain: 300 users, each up by 0.01 to 0.03.
  std::vector<double> a, b;
  for (int i = 0; i < 300; ++i) a.push_back(0.6 + 0.01 * (1 + i % 3)), b.push_back(0.6);
  const auto gain = paired_bootstrap(a, b, PairedBootstrapOptions().resamples(2000));
  CHECK(gain.difference == Approx(0.02));
  CHECK(gain.low > 0.018);
  CHECK(gain.high < 0.022);
  CHECK(gain.low < gain.difference);
  CHECK(gain.high > gain.difference);
  CHECK(gain.share_above == 1);
  // Same seed, same figures, whatever the thread count.
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const auto one = paired_bootstrap(a, {b.rbegin(), b.rend()}, PairedBootstrapOptions().resamples(500).seed(9));
  torch::set_num_threads(2);
  const auto again = paired_bootstrap(a, {b.rbegin(), b.rend()}, PairedBootstrapOptions().resamples(500).seed(9));
  torch::set_num_threads(threads);
  CHECK(one.low == again.low);
  CHECK(one.high == again.high);
  // No user in common: NaN figures.
  const auto none = paired_bootstrap({NAN}, {0.5});
  CHECK(none.users == 0);
  CHECK(std::isnan(none.difference));
  CHECK_THROWS_WITH(paired_bootstrap({0.5}, {0.5, 0.6}), Catch::Contains("needs the same users"));
  CHECK_THROWS_WITH(paired_bootstrap({0.5}, {0.5}, PairedBootstrapOptions().confidence(1)),
                    Catch::Contains("confidence must be in (0, 1)"));
  CHECK_THROWS_WITH(paired_bootstrap({0.5}, {0.5}, PairedBootstrapOptions().resamples(0)),
                    Catch::Contains("resamples must be >= 1"));
  // Through the GAUC: perfect against reversed scores on the same candidates.
  const auto users = i64({1, 1, 2, 2, 3, 3});
  const auto targets = i64({1, 0, 1, -1, 0, 1});
  const auto good = targets.to(torch::kFloat32);
  const auto d = paired_gauc_difference(users, targets, good, -good);
  CHECK(d.users == 3);
  CHECK(d.difference == 1);
  CHECK(d.low == 1);
}

TEST_CASE("gauc skips single-target users and rejects bad input", "[metrics][bad-input]") {
  const auto users = i64({1, 1, 2, 2});
  const auto targets = i64({0, 0, 1, 0});
  const auto m = gauc(users, targets, torch::tensor({0.1f, 0.2f, 0.9f, 0.1f}));
  CHECK(m.users == 1);
  CHECK(m.value == 1.0);
  CHECK(gauc_users(users, targets) == 1);
  CHECK(gauc_users(i64({1, 1, 2, 2, 3}), i64({0, -1, 1, 0, 1})) == 2);
  CHECK(gauc_users(users, i64({1, 1, 1, 1})) == 0);
  CHECK(std::isnan(gauc(i64({1}), i64({0}), torch::tensor({0.5f})).value));
  CHECK_THROWS_WITH(gauc(users, targets, torch::tensor({0.1f, NAN, 0.9f, 0.1f})),
                    Catch::Contains("NaN or infinite value at position 1"));
  CHECK_THROWS_AS(gauc(users, targets, torch::zeros({3})), TensorError);
}

TEST_CASE("ndcg_at_k matches the definition, ties averaged over orderings", "[metrics]") {
  torch::manual_seed(3);
  for (int trial = 0; trial < 100; ++trial) {
    const int64_t n = 2 + trial % 6;
    const int64_t k = 1 + trial % 5;
    const auto scores = torch::randint(0, 3, {n}).to(torch::kFloat32);
    const auto rel = torch::randint(0, 3, {n}).to(torch::kFloat32);
    auto s = vec(scores), r = vec(rel);
    std::vector<double> ideal = r;
    std::sort(ideal.rbegin(), ideal.rend());
    const double idcg = dcg(ideal, k);
    // Average DCG over every ordering consistent with the scores.
    std::vector<int> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    double total = 0;
    int orderings = 0;
    do {
      bool sorted = true;
      for (size_t i = 1; i < perm.size(); ++i) sorted &= s[static_cast<size_t>(perm[i - 1])] >= s[static_cast<size_t>(perm[i])];
      if (!sorted) continue;
      std::vector<double> in_order;
      for (int p : perm) in_order.push_back(r[static_cast<size_t>(p)]);
      total += dcg(in_order, k);
      ++orderings;
    } while (std::next_permutation(perm.begin(), perm.end()));
    const double got = ndcg_at_k(scores, rel, k);
    if (idcg == 0)
      CHECK(std::isnan(got));
    else
      CHECK(got == Approx(total / orderings / idcg).margin(1e-12));
  }
  CHECK_THROWS_AS(ndcg_at_k(torch::zeros({2}), torch::tensor({-1.0f, 1.0f}), 2), TensorError);
  const auto g = group_ndcg_at_k(i64({0, 0, 1, 1}), torch::tensor({1.0f, 0.0f, 0.0f, 0.0f}),
                                 torch::tensor({0.9f, 0.1f, 0.5f, 0.4f}), 2);
  CHECK(g.users == 1);
  CHECK(g.value == 1.0);
}

TEST_CASE("predictions round-trip and match candidates", "[metrics][predictions]") {
  TempDir dir;
  const auto path = dir.file("p.csv");
  write_predictions(path, i64({5, 5, 6}), i64({1, 2, 1}), torch::tensor({0.25f, 1e-7f, -3.0f}));
  CHECK(rectrain_test::read_file(path) == "user_id,item_id,predict\n5,1,0.25\n5,2,1e-07\n6,1,-3\n");
  const auto scores = match_predictions(path, i64({6, 5}), i64({1, 2}), /*allow_extra_rows=*/true);
  CHECK(scores.equal(torch::tensor({-3.0f, 1e-7f})));
  // A prediction for a pair that is not a candidate: named, by default.
  CHECK_THROWS_WITH(match_predictions(path, i64({6, 5}), i64({1, 2})),
                    Catch::Contains(path + ":2: user_id 5, item_id 1 is not a candidate (1 of the 3"));
  CHECK(match_predictions(path, i64({6, 5, 5}), i64({1, 2, 1})).equal(torch::tensor({-3.0f, 1e-7f, 0.25f})));
  CHECK_THROWS_WITH(match_predictions(path, i64({7}), i64({1})),
                    Catch::Contains("no prediction for candidate user_id 7"));
  CHECK_THROWS_AS(write_predictions(path, i64({1}), i64({1}), torch::tensor({NAN})), TensorError);
  write_file(path, "user_id,item_id,predict\n1,1,0.5\n1,1,0.7\n");
  CHECK_THROWS_WITH(match_predictions(path, i64({1}), i64({1})),
                    Catch::Contains(":3: duplicate prediction"));
}

TEST_CASE("rectrain-vk eval and baseline", "[metrics][cli]") {
  TempDir dir;
  auto vk_run = [](const std::string& args) { return rectrain_test::run_vk(args).output; };
  write_file(dir.file("candidates.csv"), "user_id,item_id,target\n1,10,1\n1,11,0\n1,12,-1\n2,10,0\n2,13,0\n");
  write_file(dir.file("predictions.csv"), "user_id,item_id,predict\n2,13,0.1\n1,12,0.3\n1,11,0.2\n1,10,0.9\n2,10,0.5\n");
  // User 1: pairs (10>11 ok, 10>12 ok, 11>12 wrong) = 2/3; user 2 skipped.
  CHECK(vk_run("eval --candidates " + dir.file("candidates.csv") + " --predictions " +
            dir.file("predictions.csv")) == "GAUC 0.666667 users 1\n");
  // Against another file: its GAUC and the paired difference (one user: a zero-width interval).
  write_file(dir.file("other.csv"), "user_id,item_id,predict\n2,13,0\n1,12,0.9\n1,11,0.2\n1,10,0.1\n2,10,0\n");
  const auto compared = vk_run("eval --candidates " + dir.file("candidates.csv") + " --predictions " +
                               dir.file("predictions.csv") + " --against " + dir.file("other.csv") + " --resamples 50");
  CHECK_THAT(compared, Catch::Contains("GAUC 0.000000, difference +0.666667, 95% interval [+0.666667, +0.666667]") &&
                           Catch::Contains("over 1 users, 50 resamples"));
  write_file(dir.file("predictions.csv"), "user_id,item_id,predict\n1,10,0.9\n");
  const auto missing = rectrain_test::run_vk("eval --candidates " + dir.file("candidates.csv") + " --predictions " +
                                             dir.file("predictions.csv"));
  CHECK_THAT(missing.output, Catch::Contains("no prediction for candidate"));
  CHECK(missing.status == 1);

  const std::string data = dir.file("synth");
  CHECK_THAT(vk_run("synth --scale 0.002 --seed 5 --out " + data), Catch::Contains("synth: 367 users"));
  const std::string out = vk_run("baseline --data " + data + " --predictions " + dir.file("pred.csv"));
  CHECK_THAT(out, Catch::Contains("random") && Catch::Contains("popularity") && Catch::Contains("like_rate"));
  const std::string eval = vk_run("eval --candidates " + data + "/candidates.csv --predictions " + dir.file("pred.csv"));
  // The written file is the like-rate baseline: eval reproduces its line.
  const auto at = out.find("like_rate");
  REQUIRE(at != std::string::npos);
  const std::string like_line = out.substr(at, out.find('\n', at) - at);
  CHECK_THAT(like_line, Catch::Contains(eval.substr(0, eval.size() - 1)));
}
