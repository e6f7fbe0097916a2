// Retrieval training: interactions and splits, negative samplers (their
// distributions, exclusion, determinism), the augmented sampler against a
// direct computation, the losses, full-catalogue metrics against brute
// force, the trainer, and the rectrain-retrieval program.

#include "helpers.hpp"
#include "vk_in_process.hpp"

#include "../examples/retrieval/cli.hpp"

#include <rectrain/nn/id_tables.hpp>
#include <rectrain/retrieval/augmented_negative.hpp>
#include <rectrain/retrieval/interactions.hpp>
#include <rectrain/retrieval/negative_sampler.hpp>
#include <rectrain/retrieval/retrieval_loss.hpp>
#include <rectrain/retrieval/retrieval_metrics.hpp>
#include <rectrain/retrieval/retrieval_model.hpp>
#include <rectrain/retrieval/retrieval_trainer.hpp>
#include <rectrain/retrieval/synthetic_interactions.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// A CsrMatrix from (user, item) pairs.
CsrMatrix pairs_matrix(int64_t users, int64_t items, const std::vector<std::pair<int64_t, int64_t>>& pairs) {
  std::vector<int64_t> r, c;
  for (const auto& [u, i] : pairs) {
    r.push_back(u);
    c.push_back(i);
  }
  return build_csr(i64(r), i64(c), users, items);
}

std::set<int64_t> row_of(const CsrMatrix& m, int64_t u) {
  std::set<int64_t> out;
  for (int64_t k = m.indptr[u].item<int64_t>(); k < m.indptr[u + 1].item<int64_t>(); ++k)
    out.insert(m.indices[k].item<int32_t>());
  return out;
}

/// Pearson's statistic of observed counts against expected ones.
double chi_square(const std::vector<double>& observed, const std::vector<double>& expected) {
  double x = 0;
  for (size_t i = 0; i < observed.size(); ++i)
    if (expected[i] > 0) x += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
  return x;
}

/// A bound the statistic of a correct sampler exceeds with probability
/// far below 1e-6 (df + 6 sqrt(2 df) + 10); the draws are seeded, so the
/// test is deterministic either way.
double chi_square_bound(double df) { return df + 6 * std::sqrt(2 * df) + 10; }

InteractionLog small_log() {
  return synthetic_interactions(SyntheticInteractionsOptions(120, 200).per_user(15).clusters(8).seed(3));
}

std::string retrieval_run(const std::string& args, int* status = nullptr) {
  const auto run = run_in_process(retrieval::cli_main, "rectrain-retrieval", "--threads 2 " + args);
  if (status) *status = run.status;
  else if (run.status != 0) FAIL_CHECK("rectrain-retrieval " << args << " exited " << run.status << ":\n" << run.output);
  return run.output;
}

double metric_of(const std::string& output, const std::string& name) {
  const auto at = output.rfind(name + " ");
  REQUIRE(at != std::string::npos);
  return std::stod(output.substr(at + name.size() + 1));
}

} // namespace

TEST_CASE("Interactions: reading, the catalogue, merged repeats and a per-user split", "[retrieval]") {
  TempDir dir;
  const auto path = dir.file("pos.csv");
  write_file(path, "user_id,item_id,weight\n7,30,1\n5,10,2\n7,30,0.5\n5,20,1\n9,10,1\n");
  const auto log = read_interaction_log(path);
  const auto catalogue = Catalogue::of({&log});
  CHECK(catalogue.users.raw_ids().equal(i64({5, 7, 9})));
  CHECK(catalogue.items.raw_ids().equal(i64({10, 20, 30})));
  const auto m = positives_matrix(log, catalogue);
  CHECK(m.nnz() == 4);  // (7, 30) twice: merged, weights summed
  CHECK(m.values[m.indptr[1].item<int64_t>()].item<float>() == Approx(1.5));

  write_file(path, "user_id,item_id\n1,2\n1,x\n");
  CHECK_THROWS_WITH(read_interaction_log(path), Catch::Contains("pos.csv:3:") && Catch::Contains("item_id"));
  InteractionLog other;
  other.user_id = i64({5});
  other.item_id = i64({11});
  other.source = "other.csv";
  CHECK_THROWS_WITH(positives_matrix(other, catalogue), Catch::Contains("other.csv") && Catch::Contains("item_id 11"));
}

TEST_CASE("split_per_user holds out round(f n) of each user's positives, the same for any thread count",
          "[retrieval]") {
  const auto log = small_log();
  const auto catalogue = Catalogue::of({&log});
  const auto all = positives_matrix(log, catalogue);
  const auto split = split_per_user(all, 0.2, 11);
  CHECK(split.train.nnz() + split.test.nnz() == all.nnz());
  for (int64_t u = 0; u < all.rows; ++u) {
    const auto a = row_of(all, u), tr = row_of(split.train, u), te = row_of(split.test, u);
    const int64_t n = static_cast<int64_t>(a.size());
    CHECK(static_cast<int64_t>(te.size()) == std::min<int64_t>(n - 1, std::llround(0.2 * static_cast<double>(n))));
    std::set<int64_t> both(tr);
    both.insert(te.begin(), te.end());
    CHECK(both == a);
    CHECK(tr.size() + te.size() == a.size());
  }
  at::set_num_threads(1);
  const auto one = split_per_user(all, 0.2, 11);
  at::set_num_threads(2);
  CHECK(one.test.indices.equal(split.test.indices));
  CHECK(one.test.indptr.equal(split.test.indptr));
  CHECK_FALSE(split_per_user(all, 0.2, 12).test.indices.equal(split.test.indices));
  CHECK_THROWS_WITH(split_per_user(all, 1.0, 1), Catch::Contains("test_fraction"));
}

TEST_CASE("Uniform and popularity negatives follow their distributions over the items a user has not got",
          "[retrieval][sampler]") {
  // 40 items, user 0 has items 0..9, user 1 has none; item popularity from
  // the other users' positives.
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < 10; ++i) pairs.emplace_back(0, i);
  for (int64_t u = 2; u < 30; ++u)
    for (int64_t i = 0; i < 40; ++i)
      if ((i * 7 + u) % (1 + i % 5) == 0) pairs.emplace_back(u, i);
  const auto m = pairs_matrix(30, 40, pairs);
  const auto counts = item_counts(m);
  const int64_t draws = 4000;
  for (const bool popularity : {false, true}) {
    INFO((popularity ? "popularity" : "uniform"));
    const auto sampler = popularity ? popularity_negatives(m, 0.75, StaticNegativeSamplerOptions().seed(5))
                                    : uniform_negatives(m, StaticNegativeSamplerOptions().seed(5));
    for (const int64_t user : {int64_t{0}, int64_t{1}}) {
      const auto own = row_of(m, user);
      std::vector<double> observed(40, 0), expected(40, 0);
      int64_t total = 0;
      for (uint64_t step = 0; step < 20; ++step) {
        const auto draw = sampler.sample(torch::full({draws / 20}, user, torch::kInt64), 10, step);
        const auto items = draw.items.reshape(-1);
        for (int64_t k = 0; k < items.numel(); ++k) {
          const int64_t item = items[k].item<int64_t>();
          REQUIRE(own.count(item) == 0);  // never one of the user's positives
          observed[static_cast<size_t>(item)] += 1;
          ++total;
        }
      }
      double mass = 0;
      for (int64_t i = 0; i < 40; ++i)
        if (!own.count(i)) mass += popularity ? std::pow(counts[i].item<double>(), 0.75) : 1.0;
      int64_t support = 0;
      for (int64_t i = 0; i < 40; ++i) {
        if (own.count(i)) continue;
        const double w = popularity ? std::pow(counts[i].item<double>(), 0.75) : 1.0;
        expected[static_cast<size_t>(i)] = static_cast<double>(total) * w / mass;
        support += w > 0;
      }
      const double x = chi_square(observed, expected);
      INFO("user " << user << ": chi-square " << x << " over " << support - 1 << " degrees of freedom");
      CHECK(x < chi_square_bound(static_cast<double>(support - 1)));
      // A wrong target (uniform where popularity is asked, or the reverse) fails the same bound.
      std::vector<double> wrong(40, 0);
      for (int64_t i = 0; i < 40; ++i)
        if (!own.count(i)) wrong[static_cast<size_t>(i)] = static_cast<double>(total) / static_cast<double>(40 - own.size());
      if (popularity) CHECK(chi_square(observed, wrong) > chi_square_bound(static_cast<double>(support - 1)));
    }
    // log q is the proposal's log probability.
    const double q3 = popularity ? std::pow(counts[3].item<double>(), 0.75) /
                                       (counts.pow(0.75)).sum().item<double>()
                                 : 1.0 / 40;
    CHECK(sampler.log_q()[3].item<float>() == Approx(std::log(q3)).epsilon(1e-5));
  }
}

TEST_CASE("Negative draws are the same for a seed and step whatever the threads, and the exact fallback works",
          "[retrieval][sampler]") {
  const auto log = small_log();
  const auto m = positives_matrix(log, Catalogue::of({&log}));
  const auto users = torch::arange(m.rows, torch::kInt64);
  for (const bool popularity : {false, true}) {
    const auto s = popularity ? popularity_negatives(m) : uniform_negatives(m);
    const auto a = s.sample(users, 7, 42);
    at::set_num_threads(1);
    const auto b = s.sample(users, 7, 42);
    at::set_num_threads(2);
    CHECK(a.items.equal(b.items));
    CHECK_FALSE(a.items.equal(s.sample(users, 7, 43).items));
    const auto other_seed = popularity ? popularity_negatives(m, 0.75, StaticNegativeSamplerOptions().seed(1))
                                       : uniform_negatives(m, StaticNegativeSamplerOptions().seed(1));
    CHECK_FALSE(a.items.equal(other_seed.sample(users, 7, 42).items));
  }
  // A user with every item but one: the draws fall back to the exact
  // complement and always give that item; a user with every item is an error.
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < 50; ++i)
    if (i != 17) pairs.emplace_back(0, i);
  for (int64_t i = 0; i < 50; ++i) pairs.emplace_back(1, i);
  const auto full = pairs_matrix(2, 50, pairs);
  const auto s = uniform_negatives(full, StaticNegativeSamplerOptions().max_tries(2));
  CHECK((s.sample(i64({0, 0, 0}), 20, 1).items == 17).all().item<bool>());
  CHECK_THROWS_WITH(s.sample(i64({0, 1}), 1, 1), Catch::Contains("user 1") && Catch::Contains("every one of the 50"));
  CHECK_THROWS_WITH(s.sample(i64({2}), 1, 1), Catch::Contains("out of [0, 2)"));
}

TEST_CASE("In-batch negatives exclude the user's positives and carry log(count / nnz)", "[retrieval][sampler]") {
  const auto m = pairs_matrix(3, 6, {{0, 0}, {0, 1}, {1, 1}, {1, 2}, {2, 3}, {2, 1}});
  const InBatchNegatives sampler(m);
  const auto users = i64({0, 1, 2, 0});
  const auto items = i64({0, 2, 3, 1});
  const auto draw = sampler.sample(users, items);
  // Row r: item j valid unless user r has it (its own positive included).
  const bool expected[4][4] = {{false, true, true, false},   // user 0 has 0 and 1
                               {true, false, true, false},   // user 1 has 1 and 2
                               {true, true, false, false},   // user 2 has 1 and 3
                               {false, true, true, false}};
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 4; ++j) {
      INFO("row " << r << ", column " << j);
      CHECK(draw.valid[r][j].item<bool>() == expected[r][j]);
      CHECK(draw.items[r][j].item<int64_t>() == items[j].item<int64_t>());
    }
  CHECK(draw.log_q[2][3].item<float>() == Approx(std::log(3.0 / 6.0)));  // item 1: 3 of 6 positives
}

TEST_CASE("hardest_of_pool keeps the highest scores, ties to the earlier candidate", "[retrieval][sampler]") {
  NegativeSample pool;
  pool.items = i64({10, 11, 12, 13, 20, 21, 22, 23}).view({2, 4});
  const auto scores = torch::tensor({0.5, 2.0, 2.0, -1.0, 0.0, 0.0, 0.0, 0.0}).view({2, 4});
  const auto top = hardest_of_pool(pool, scores, 2);
  CHECK(top.items.equal(i64({11, 12, 20, 21}).view({2, 2})));
  CHECK_THROWS_WITH(hardest_of_pool(pool, scores, 5), Catch::Contains("k must be in [1, 4]"));
}

TEST_CASE("The augmented sampler's gate, augmentation, gain, choice and auxiliary loss match a direct computation",
          "[retrieval][augmented]") {
  torch::manual_seed(3);
  const int64_t b = 3, pool_size = 5, d = 4;
  AugmentedNegative ans(AugmentedNegativeOptions(d).eps(0.7).gamma(0.3).scale(0.2));
  ans->to(torch::kFloat64);
  const auto u = torch::randn({b, d}, torch::kFloat64), p = torch::randn({b, d}, torch::kFloat64);
  const auto n = torch::randn({b, pool_size, d}, torch::kFloat64);
  const auto noise = torch::rand({b, pool_size, d}, torch::kFloat64);
  const auto out = ans->forward(u, p, n, noise);

  const auto Wu = ans->user_gate->weight, bu = ans->user_gate->bias;
  const auto Wi = ans->item_gate->weight, bi = ans->item_gate->bias;
  const auto wm = ans->margin->weight[0];
  const double bm = ans->margin->bias[0].item<double>();
  const auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  double distance = 0, orthogonality = 0, separation = 0;
  for (int64_t r = 0; r < b; ++r) {
    std::vector<double> gu(d);
    for (int64_t i = 0; i < d; ++i) {
      gu[i] = bu[i].item<double>();
      for (int64_t j = 0; j < d; ++j) gu[i] += Wu[i][j].item<double>() * u[r][j].item<double>();
    }
    double best = -1e300;
    int64_t choice = -1;
    double sum_exp = 0;
    for (int64_t m = 0; m < pool_size; ++m) {
      std::vector<double> g(d), nh(d), ne(d), ph(d), pe(d), aug(d);
      double noise_norm = 0, margin_in = bm;
      for (int64_t i = 0; i < d; ++i) noise_norm += std::pow(noise[r][m][i].item<double>(), 2);
      noise_norm = std::sqrt(noise_norm);
      for (int64_t i = 0; i < d; ++i) {
        double gi = bi[i].item<double>();
        for (int64_t j = 0; j < d; ++j) gi += Wi[i][j].item<double>() * n[r][m][j].item<double>();
        g[i] = sig(gi * gu[i]);
        nh[i] = n[r][m][i].item<double>() * g[i];
        ne[i] = n[r][m][i].item<double>() - nh[i];
        ph[i] = p[r][i].item<double>() * g[i];
        pe[i] = p[r][i].item<double>() - ph[i];
        margin_in += wm[i].item<double>() * nh[i] * ph[i];
        CHECK(out.gate[r][m][i].item<double>() == Approx(g[i]).epsilon(1e-10));
      }
      const double magnitude_scale = sig(1 / margin_in) * 0.2;
      double s_orig = 0, s_aug = 0, s_hard = 0, s_easy = 0, dist = 0, orth = 0;
      for (int64_t i = 0; i < d; ++i) {
        const double sign = (pe[i] - ne[i]) > 0 ? 1 : ((pe[i] - ne[i]) < 0 ? -1 : 0);
        aug[i] = nh[i] + ne[i] + sign * noise[r][m][i].item<double>() / noise_norm * magnitude_scale;
        CHECK(out.augmented[r][m][i].item<double>() == Approx(aug[i]).epsilon(1e-10));
        s_orig += u[r][i].item<double>() * n[r][m][i].item<double>();
        s_aug += u[r][i].item<double>() * aug[i];
        s_hard += u[r][i].item<double>() * nh[i];
        s_easy += u[r][i].item<double>() * ne[i];
        dist += std::pow(nh[i] - ph[i], 2);
        orth += std::pow(pe[i] * ne[i], 2);
      }
      CHECK(out.gain[r][m].item<double>() == Approx(s_aug - s_orig).margin(1e-12));
      if (s_aug + 0.7 * (s_aug - s_orig) > best) {
        best = s_aug + 0.7 * (s_aug - s_orig);
        choice = m;
      }
      distance += std::sqrt(dist);
      orthogonality += std::sqrt(orth);
      sum_exp += std::exp(s_easy - s_hard);
    }
    CHECK(out.choice[r].item<int64_t>() == choice);
    CHECK(out.negative[r].equal(out.augmented[r][choice]));
    separation += std::log(1 + sum_exp);
  }
  const double aux = 0.3 * (distance / (b * pool_size) + orthogonality / b + separation / b);
  CHECK(out.aux_loss.item<double>() == Approx(aux).epsilon(1e-10));
  // Gradients reach the gates and the pool through the chosen negative.
  (u.unsqueeze(1) * out.negative.unsqueeze(1)).sum().add(out.aux_loss).backward();
  CHECK(ans->item_gate->weight.grad().abs().sum().item<double>() > 0);
  CHECK_THROWS_WITH(ans->forward(u, p, n, noise.narrow(1, 0, 2)), Catch::Contains("noise"));
}

TEST_CASE("BPR, sampled softmax with log-Q and the ranking losses on (positive, negatives) groups",
          "[retrieval][loss]") {
  const auto pos = torch::tensor({1.0, 0.5}, torch::kFloat64);
  const auto neg = torch::tensor({0.0, 2.0, -1.0, 0.5}, torch::kFloat64).view({2, 2});
  const auto sp = [](double x) { return std::log1p(std::exp(x)); };
  CHECK(bpr_loss(pos, neg).item<double>() == Approx((sp(-1) + sp(1) + sp(-1.5) + sp(0)) / 4));
  const auto valid = torch::tensor({true, false, false, false}).view({2, 2});
  CHECK(bpr_loss(pos, neg, valid).item<double>() == Approx(sp(-1)));  // row 2 has no valid negative
  const auto weight = torch::tensor({1.0, 3.0}, torch::kFloat64);
  CHECK(bpr_loss(pos, neg, {}, weight).item<double>() ==
        Approx(((sp(-1) + sp(1)) / 2 + 3 * (sp(-1.5) + sp(0)) / 2) / 4));

  const auto lqp = torch::tensor({-1.0, -2.0}, torch::kFloat64);
  const auto lqn = torch::tensor({-0.5, -3.0, -1.0, -1.0}, torch::kFloat64).view({2, 2});
  const double t = 0.5;
  auto row = [&](double s, double q, std::vector<std::pair<double, double>> negs) {
    double z = std::exp(s / t - q);
    for (auto [sn, qn] : negs) z += std::exp(sn / t - qn);
    return std::log(z) - (s / t - q);
  };
  const double expected = (row(1.0, -1.0, {{0.0, -0.5}, {2.0, -3.0}}) + row(0.5, -2.0, {{-1.0, -1.0}, {0.5, -1.0}})) / 2;
  CHECK(sampled_softmax_loss(pos, neg, {}, lqp, lqn, SampledSoftmaxOptions().temperature(t)).item<double>() ==
        Approx(expected));
  const double masked = (row(1.0, 0, {{0.0, 0}}) + row(0.5, 0, {})) / 2;
  CHECK(sampled_softmax_loss(pos, neg, valid, {}, {}, SampledSoftmaxOptions().temperature(t)).item<double>() ==
        Approx(masked));
  CHECK_THROWS_WITH(sampled_softmax_loss(pos, neg, {}, lqp), Catch::Contains("both"));
  CHECK_THROWS_WITH(bpr_loss(pos, neg.narrow(0, 0, 1)), Catch::Contains("[2, k]"));

  // The listwise softmax on [pos, negs] with targets [1, 0, 0] is the unweighted sampled softmax at t = 1.
  CHECK(group_ranking_loss(pos, neg, {}, RankingLossKind::ListwiseSoftmax).item<double>() ==
        Approx(sampled_softmax_loss(pos, neg).item<double>()));
}

namespace {

/// The metrics by brute force: every item scored in double, sorted by
/// (score desc, index asc), training items dropped.
std::map<std::string, double> brute_force_metrics(const torch::Tensor& users, const torch::Tensor& items,
                                                  const CsrMatrix& train, const CsrMatrix& test, int64_t k) {
  const auto scores = users.to(torch::kFloat32).mm(items.to(torch::kFloat32).t());  // as the library rounds
  double precision = 0, recall = 0, ndcg = 0, hit = 0;
  int64_t counted = 0;
  for (int64_t u = 0; u < users.size(0); ++u) {
    const auto tr = row_of(train, u);
    std::set<int64_t> rel;
    for (int64_t i : row_of(test, u))
      if (!tr.count(i)) rel.insert(i);
    if (rel.empty()) continue;
    ++counted;
    std::vector<std::pair<float, int64_t>> all;
    for (int64_t i = 0; i < items.size(0); ++i)
      if (!tr.count(i)) all.emplace_back(scores[u][i].item<float>(), i);
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    double hits = 0, dcg = 0, idcg = 0;
    for (int64_t j = 0; j < std::min<int64_t>(k, static_cast<int64_t>(all.size())); ++j)
      if (rel.count(all[static_cast<size_t>(j)].second)) {
        hits += 1;
        dcg += 1 / std::log2(j + 2.0);
      }
    for (int64_t j = 0; j < std::min<int64_t>(k, static_cast<int64_t>(rel.size())); ++j) idcg += 1 / std::log2(j + 2.0);
    precision += hits / static_cast<double>(k);
    recall += hits / static_cast<double>(rel.size());
    ndcg += dcg / idcg;
    hit += hits > 0;
  }
  const double c = static_cast<double>(counted);
  return {{"precision", precision / c}, {"recall", recall / c}, {"ndcg", ndcg / c}, {"hit", hit / c}, {"users", c}};
}

} // namespace

TEST_CASE("Full-catalogue metrics match brute force, with ties, short lists and users with few test items",
          "[retrieval][metrics]") {
  torch::manual_seed(9);
  const int64_t users = 40, items = 60;
  for (const bool ties : {false, true}) {
    INFO((ties ? "integer factors (many tied scores)" : "real factors"));
    // Integer factors in {-1, 0, 1} make many exactly equal scores.
    const auto u = ties ? torch::randint(-1, 2, {users, 3}).to(torch::kFloat32) : torch::randn({users, 8});
    const auto v = ties ? torch::randint(-1, 2, {items, 3}).to(torch::kFloat32) : torch::randn({items, 8});
    std::vector<std::pair<int64_t, int64_t>> tr, te;
    for (int64_t a = 0; a < users; ++a) {
      const int64_t n_train = a == 0 ? items - 3 : a % 9;  // user 0: 3 items left to rank
      for (int64_t j = 0; j < n_train; ++j) tr.emplace_back(a, (a * 7 + j * 11) % items);
      const int64_t n_test = a % 4;  // 0..3 test items (fewer than K); 0: not counted
      for (int64_t j = 0; j < n_test; ++j) te.emplace_back(a, (a * 13 + j * 5 + 1) % items);
    }
    const auto train = pairs_matrix(users, items, tr), test = pairs_matrix(users, items, te);
    for (const int64_t block_bytes : {int64_t{1} << 20, int64_t{3 * 60 * 4}}) {  // one block; blocks of 3 users
      const auto m = evaluate_retrieval(u, v, train, test, RetrievalMetricsOptions().ks({1, 5, 10}).block_bytes(block_bytes));
      for (const auto& at : m.at) {
        const auto b = brute_force_metrics(u, v, train, test, at.k);
        INFO("K = " << at.k << ", block_bytes " << block_bytes);
        CHECK(m.users == static_cast<int64_t>(b.at("users")));
        CHECK(at.precision == Approx(b.at("precision")).margin(1e-12));
        CHECK(at.recall == Approx(b.at("recall")).margin(1e-12));
        CHECK(at.ndcg == Approx(b.at("ndcg")).margin(1e-12));
        CHECK(at.hit_rate == Approx(b.at("hit")).margin(1e-12));
      }
    }
    // The lists themselves: user 0 has only 3 items left, so -1 pads.
    const auto top = retrieve_top_k(u, v, 5, &train);
    CHECK(top[0][3].item<int64_t>() == -1);
    CHECK((top[0].narrow(0, 0, 3) >= 0).all().item<bool>());
  }
  const auto one = torch::ones({2, 1});
  const auto empty = pairs_matrix(2, 2, {});
  CHECK_THROWS_WITH(evaluate_retrieval(one, torch::full({2, 1}, std::nan("")), empty, empty),
                    Catch::Contains("item_factors") && Catch::Contains("NaN"));
  CHECK_THROWS_WITH(evaluate_retrieval(one, torch::ones({3, 1}), empty, empty), Catch::Contains("train is 2 x 2"));
}

TEST_CASE("The retrieval trainer is deterministic, excludes nothing it should not, and learns", "[retrieval][train]") {
  const auto log = synthetic_interactions(SyntheticInteractionsOptions(300, 400).per_user(25).clusters(10).seed(1));
  const auto catalogue = Catalogue::of({&log});
  const auto split = split_per_user(positives_matrix(log, catalogue), 0.2, 1);
  const auto pop = evaluate_retrieval(torch::ones({catalogue.num_users(), 1}),
                                      item_counts(split.train).to(torch::kFloat32).unsqueeze(1), split.train, split.test);
  for (const auto sampling : {NegativeSampling::Uniform, NegativeSampling::Popularity, NegativeSampling::InBatch,
                              NegativeSampling::Dynamic, NegativeSampling::Augmented}) {
    INFO(to_string(sampling));
    auto train_once = [&](int64_t epochs) {
      torch::manual_seed(4);
      auto model = matrix_factorization(MatrixFactorizationOptions(catalogue.num_users(), catalogue.num_items(), 16));
      RetrievalTrainer trainer(model, split.train, RetrievalColumns{},
                               RetrievalTrainerOptions().negatives(sampling).batch_size(256).l2(1e-3).seed(2).pool(8));
      torch::optim::Adam adam(trainer.parameters(), torch::optim::AdamOptions(2e-2));
      RetrievalEpochStats first, last;
      for (int64_t e = 0; e < epochs; ++e) last = trainer.train_epoch({&adam}, e), first = e == 0 ? last : first;
      CHECK(last.loss < first.loss);
      return std::make_pair(all_vectors(model, {}, true, catalogue.num_users(), torch::kCPU),
                            all_vectors(model, {}, false, catalogue.num_items(), torch::kCPU));
    };
    const auto a = train_once(2), b = train_once(2);
    CHECK(a.first.equal(b.first));
    CHECK(a.second.equal(b.second));
    const auto c = train_once(8);
    const auto m = evaluate_retrieval(c.first, c.second, split.train, split.test);
    INFO("NDCG@20 " << m.at_k(20).ndcg << " against popularity's " << pop.at_k(20).ndcg);
    CHECK(m.at_k(20).ndcg > pop.at_k(20).ndcg);
  }
}

TEST_CASE("Side-feature two-tower: item source and content columns, ALS-shaped init", "[retrieval][train]") {
  const int64_t users = 20, items = 30;
  auto model = content_two_tower(ContentTwoTowerOptions(MatrixFactorizationOptions(users, items, 4)
                                                            .user_init(torch::ones({users, 4})))
                                     .num_sources(3)
                                     .source_dim(2)
                                     .content_dim(5)
                                     .content_projection(3));
  RetrievalColumns columns;
  columns.items.add("item_source", torch::arange(items, torch::kInt64) % 3).add("item_content", torch::randn({items, 5}));
  const auto u = user_vectors(model, columns, i64({0, 1}), torch::kCPU);
  const auto v = item_vectors(model, columns, i64({2, 3, 4}).view({1, 3}), torch::kCPU);
  CHECK(u.sizes() == torch::IntArrayRef({2, 9}));
  CHECK(v.sizes() == torch::IntArrayRef({1, 3, 9}));
  CHECK(u.narrow(1, 0, 4).equal(torch::ones({2, 4})));  // the id part starts from the given factors
  const auto split = split_per_user(pairs_matrix(users, items, {{0, 1}, {0, 2}, {1, 3}, {2, 4}, {3, 5}, {3, 6}}), 0, 1);
  RetrievalTrainer trainer(model, split.train, columns, RetrievalTrainerOptions().batch_size(4));
  torch::optim::Adam adam(trainer.parameters(), torch::optim::AdamOptions(1e-2));
  const auto before = find_categorical_feature(*model, "item_source")->weight.clone();
  trainer.train_epoch({&adam}, 0);
  CHECK_FALSE(find_categorical_feature(*model, "item_source")->weight.equal(before));  // the source table learns
  CHECK_THROWS_WITH(columns.items.add("item_source", torch::zeros({items})), Catch::Contains("already there"));
}

TEST_CASE("Retrieval on CUDA agrees with the CPU", "[retrieval][cuda]") {
  if (!torch::cuda::is_available()) {
    SUCCEED("no CUDA device: skipped");
    return;
  }
  const auto log = small_log();
  const auto catalogue = Catalogue::of({&log});
  const auto split = split_per_user(positives_matrix(log, catalogue), 0.2, 1);
  for (const auto sampling : {NegativeSampling::Uniform, NegativeSampling::Popularity, NegativeSampling::InBatch,
                              NegativeSampling::Dynamic, NegativeSampling::Augmented}) {
    INFO(to_string(sampling));
    std::vector<double> losses;
    for (const auto device : {torch::Device(torch::kCPU), torch::Device(torch::kCUDA)}) {
      torch::manual_seed(4);
      auto model = matrix_factorization(MatrixFactorizationOptions(catalogue.num_users(), catalogue.num_items(), 8));
      torch::manual_seed(5);  // the augmented sampler's gates
      model->to(device);
      RetrievalTrainer trainer(model, split.train, RetrievalColumns{},
                               RetrievalTrainerOptions().negatives(sampling).batch_size(64).seed(3).device(device));
      const auto users = torch::arange(0, 64, torch::kInt64) % catalogue.num_users();
      const auto items = split.train.indices.narrow(0, 0, 64).to(torch::kInt64);
      losses.push_back(trainer.batch_loss(users, items, {}, 7).item<double>());
    }
    CHECK(losses[1] == Approx(losses[0]).epsilon(1e-4));
  }
  torch::manual_seed(1);
  const auto u = torch::randn({catalogue.num_users(), 8}), v = torch::randn({catalogue.num_items(), 8});
  const auto cpu = evaluate_retrieval(u, v, split.train, split.test);
  const auto gpu = evaluate_retrieval(u.cuda(), v.cuda(), split.train, split.test);
  CHECK(gpu.at_k(20).ndcg == Approx(cpu.at_k(20).ndcg).margin(1e-6));
}

TEST_CASE("rectrain-retrieval: split, train, export, eval, als and popularity", "[retrieval][cli]") {
  TempDir dir;
  const auto log = synthetic_interactions(SyntheticInteractionsOptions(150, 200).per_user(20).clusters(8).seed(2));
  const auto catalogue = Catalogue::of({&log});
  write_file(dir.file("all.csv"), interaction_rows_csv(positives_matrix(log, catalogue), catalogue, false));
  const std::string train = dir.file("train.csv"), test = dir.file("test.csv");
  CHECK_THAT(retrieval_run("split --input " + dir.file("all.csv") + " --train-out " + train + " --test-out " + test),
             Catch::Contains("150 users"));
  const auto out = retrieval_run("train --train " + train + " --test " + test + " --negatives augmented --epochs 3 --dim 8 "
                                 "--batch-size 128 --pool 4 --out " + dir.file("mf"));
  CHECK_THAT(out, Catch::Contains("epoch 3") && Catch::Contains("ndcg@20"));
  CHECK(read_file(dir.file("mf/metrics.jsonl")).find("\"epoch\": 3") != std::string::npos);
  retrieval_run("export --out " + dir.file("mf"));
  const auto factors = read_file(dir.file("mf/item_factors.csv"));
  CHECK(factors.rfind("id,f0,f1,f2,f3,f4,f5,f6,f7\n", 0) == 0);
  const auto eval = retrieval_run("eval --train " + train + " --test " + test + " --factors " + dir.file("mf"));
  // The exported factors score what train printed for its last epoch.
  const auto last_line = out.substr(out.rfind("epoch 3"));
  CHECK(metric_of(eval, "ndcg@20") == Approx(metric_of(last_line, "ndcg@20")).margin(1e-5));
  CHECK(metric_of(eval, "precision@10") >= 0);
  const auto als = retrieval_run("als --train " + train + " --test " + test + " --dim 8 --out " + dir.file("als"));
  const auto als_eval = retrieval_run("eval --train " + train + " --test " + test + " --factors " + dir.file("als"));
  CHECK(metric_of(als_eval, "ndcg@20") == Approx(metric_of(als, "ndcg@20")));
  const auto pop = retrieval_run("popularity --train " + train + " --test " + test);
  CHECK(metric_of(als_eval, "ndcg@20") > metric_of(pop, "ndcg@20"));

  int status = 0;
  CHECK_THAT(retrieval_run("export --out " + dir.file("none"), &status), Catch::Contains("no model"));
  CHECK(status == 1);
  fs::create_directories(dir.file("bad"));
  write_file(dir.file("bad/user_factors.csv"), "id,f0\n5,1\n3,2\n");
  write_file(dir.file("bad/item_factors.csv"), "id,f0\n1,1\n");
  CHECK_THAT(retrieval_run("eval --train " + train + " --test " + test + " --factors " + dir.file("bad"), &status),
             Catch::Contains("ascending"));
  CHECK(status == 1);
  CHECK_THAT(retrieval_run("train --train " + train + " --negatives nope --out " + dir.file("x"), &status),
             Catch::Contains("--negatives"));
  CHECK(status == 2);
}
