// ViewHistory (windows and counts against brute force; no leakage), the
// history and statistics columns, HistoryFeature, CrossNetwork, and the
// recipe with them end to end.
#include "helpers.hpp"
#include "vk_in_process.hpp"

#include <rectrain/rectrain.hpp>

#include <random>
#include <sstream>

using namespace rectrain;
using namespace rectrain_test;

namespace {

struct Views {
  torch::Tensor users, items, like, dislike, timespent;
  int64_t num_users, num_items;
  ViewHistory history(ViewHistoryOptions options) const {
    return ViewHistory(users, items, like, dislike, timespent, num_users, num_items, std::move(options));
  }
};

Views random_views(int64_t n, int64_t users, int64_t items, uint64_t seed) {
  torch::manual_seed(seed);
  Views v;
  v.users = torch::randint(users, {n}, torch::kInt64);
  v.items = torch::randint(items, {n}, torch::kInt64);
  v.like = (torch::rand({n}) < 0.3).to(torch::kInt64);
  v.dislike = ((torch::rand({n}) < 0.2) & (v.like == 0)).to(torch::kInt64);
  v.timespent = torch::rand({n}) * 10;
  v.num_users = users;
  v.num_items = items;
  return v;
}

int8_t reaction_of(const Views& v, int64_t r, double long_watch) {
  if (v.like[r].item<int64_t>()) return 0;
  if (v.dislike[r].item<int64_t>()) return 1;
  return v.timespent[r].item<double>() >= long_watch ? 2 : 3;
}

} // namespace

TEST_CASE("ViewHistory: windows and counts are the views strictly before the time, by brute force", "[history]") {
  const auto v = random_views(600, 7, 40, 5);
  const double long_watch = 6.0;
  const int64_t window = 5;
  const auto h = v.history(ViewHistoryOptions().window(window).long_watch(long_watch).smoothing(2));
  const int64_t n = v.users.numel();
  // Queries: every row at its own time, some users and items at every time,
  // unknown keys.
  std::vector<int64_t> qu, qi, qt;
  for (int64_t r = 0; r < n; ++r) {
    qu.push_back(v.users[r].item<int64_t>());
    qi.push_back(v.items[r].item<int64_t>());
    qt.push_back(r);
  }
  for (int64_t t : {int64_t{0}, int64_t{17}, n, n + 5}) {
    qu.push_back(3);
    qi.push_back(11);
    qt.push_back(t);
  }
  qu.push_back(-1);
  qi.push_back(-1);
  qt.push_back(n);
  const auto windows = h.windows(i64(qu), i64(qt));
  const auto user_counts = h.user_counts(i64(qu), i64(qt));
  const auto item_counts = h.item_counts(i64(qi), i64(qt));
  REQUIRE(windows.sizes() == torch::IntArrayRef({static_cast<int64_t>(qu.size()), 4, window}));
  std::vector<double> user_watch(qu.size(), 0.0), item_watch(qu.size(), 0.0);
  for (size_t q = 0; q < qu.size(); ++q) {
    std::vector<std::vector<int64_t>> expected(4);
    int64_t uc[4] = {0, 0, 0, 0}, ic[4] = {0, 0, 0, 0};
    for (int64_t r = std::min(qt[q], n) - 1; r >= 0; --r) {  // newest first
      const auto c = reaction_of(v, r, long_watch);
      const double watch = std::log1p(v.timespent[r].item<double>());
      if (v.items[r].item<int64_t>() == qi[q]) item_watch[q] += watch;
      if (v.users[r].item<int64_t>() == qu[q]) {
        user_watch[q] += watch;
        ++uc[c];
        if (static_cast<int64_t>(expected[c].size()) < window) expected[c].push_back(v.items[r].item<int64_t>());
      }
      if (v.items[r].item<int64_t>() == qi[q]) ++ic[c];
    }
    for (int64_t c = 0; c < 4; ++c) {
      expected[c].resize(window, -1);
      CHECK(torch::equal(windows[q][c], i64(expected[c])));
      CHECK(user_counts[q][c].item<int64_t>() == uc[c]);
      CHECK(item_counts[q][c].item<int64_t>() == ic[c]);
    }
  }
  // Statistics: log1p(views), count / (views + smoothing), mean log1p(timespent).
  for (const bool of_users : {true, false}) {
    const auto stats = of_users ? h.user_statistics(i64(qu), i64(qt)) : h.item_statistics(i64(qi), i64(qt));
    const auto c = (of_users ? user_counts : item_counts).to(torch::kFloat32);
    const auto views = c.sum(1, true);
    const auto watch = torch::tensor(of_users ? user_watch : item_watch, torch::kFloat64).to(torch::kFloat32).unsqueeze(1);
    CHECK(torch::allclose(stats, torch::cat({views.log1p(), c / (views + 2), watch / views.clamp_min(1)}, 1), 1e-4, 1e-5));
  }
  CHECK(h.reactions().numel() == n);

  CHECK_THROWS_WITH(v.history(ViewHistoryOptions().window(0)), Catch::Contains("window must be >= 1"));
  CHECK_THROWS_WITH(h.windows(i64({1, 2}), i64({0})), Catch::Contains("times must be [2] integers"));
  CHECK_THROWS_WITH(ViewHistory(v.users, v.items.narrow(0, 0, 10), v.like, v.dislike, v.timespent, 7, 40),
                    Catch::Contains("items must be [600]"));
  const int64_t first_bad = (v.items >= 30).nonzero()[0][0].item<int64_t>();
  CHECK_THROWS_WITH(ViewHistory(v.users, v.items, v.like, v.dislike, v.timespent, 7, 30),
                    Catch::Contains(rectrain::detail::concat("items must be in [0, 30), got ",
                                                             v.items[first_bad].item<int64_t>(), " at row ", first_bad)));
  CHECK_THROWS_WITH(ViewHistory(v.users.to(torch::kFloat32), v.items, v.like, v.dislike, v.timespent, 7, 40),
                    Catch::Contains("users must be [N] integer indices"));
}

TEST_CASE("History and statistics columns never see the row itself or a later one", "[history][leakage]") {
  // A training set where a later view reveals a row's label: the user views
  // the same item again later and likes it, and the item is liked by
  // everyone after. A row's features must not change when anything at or
  // after it changes.
  auto v = random_views(400, 5, 12, 9);
  RecipeSettings s;
  s.history = 4;
  s.statistics = true;
  auto columns_of = [&s](const Views& views) {
    auto history = std::make_shared<const ViewHistory>(views.history(ViewHistoryOptions().window(4).long_watch(5)));
    BatchSpec spec;
    spec.feature("user", views.users);
    const auto with = with_history_columns(spec, s, history, views.users, views.items, HistoryTime::Row);
    return with.gather(torch::arange(views.users.numel()).view({-1, 1}));
  };
  const auto before = columns_of(v);
  const int64_t planted = 250;
  auto changed = v;
  changed.like = v.like.clone();
  changed.dislike = v.dislike.clone();
  changed.timespent = v.timespent.clone();
  // The planted row and every later view of its item: liked.
  const auto item = v.items[planted].item<int64_t>();
  for (int64_t r = planted; r < v.users.numel(); ++r) {
    if (r == planted || v.items[r].item<int64_t>() == item) {
      changed.like[r] = 1 - v.like[r].item<int64_t>();
      changed.dislike[r] = 0;
      changed.timespent[r] = 9.5;
    }
  }
  const auto after = columns_of(changed);
  for (const char* name : {"history", "user_statistics", "item_statistics"}) {
    INFO(name);
    const auto& a = before.features[name];
    const auto& b = after.features[name];
    // Rows up to the planted one (itself included) see the same.
    CHECK(torch::equal(a.narrow(0, 0, planted + 1), b.narrow(0, 0, planted + 1)));
  }
  // A later row of the same item does see the change: the columns are live.
  bool later_differs = false;
  for (int64_t r = planted + 1; r < v.users.numel(); ++r)
    if (v.items[r].item<int64_t>() == item)
      later_differs = later_differs || !torch::equal(before.features["item_statistics"][r],
                                                      after.features["item_statistics"][r]);
  CHECK(later_differs);

  // HistoryTime::All sees every view; padded rows get -1 and 0.
  auto history = std::make_shared<const ViewHistory>(v.history(ViewHistoryOptions().window(4).long_watch(5)));
  BatchSpec spec;
  spec.feature("user", v.users);
  const auto all = with_history_columns(spec, s, history, v.users, v.items, HistoryTime::All)
                       .gather(torch::tensor({int64_t{0}, int64_t{-1}}, torch::kInt64).view({1, 2}));
  const auto full = history->user_counts(v.users.narrow(0, 0, 1), i64({v.users.numel()}));
  CHECK(all.features["user_statistics"][0][0][0].item<float>() ==
        Approx(std::log1p(full.sum().item<double>())));
  CHECK((all.features["history"][0][1] == -1).all().item<bool>());
  CHECK((all.features["user_statistics"][0][1] == 0).all().item<bool>());
  CHECK_THROWS_WITH(with_history_columns(spec, s, nullptr, v.users, v.items, HistoryTime::All),
                    Catch::Contains("no ViewHistory"));
}

TEST_CASE("BatchSpec computed columns: one output row per row, padding filled", "[history][pipeline]") {
  BatchSpec spec;
  spec.feature("x", torch::arange(10, torch::kFloat32));
  spec.computed_feature("twice", [](const torch::Tensor& rows) { return (rows * 2).view({-1, 1}); });
  const auto batch = spec.gather(torch::tensor({int64_t{3}, int64_t{-1}, int64_t{5}}, torch::kInt64).view({1, 3}));
  CHECK(torch::equal(batch.features["twice"], i64({6, -1, 10}).view({1, 3, 1})));
  CHECK(torch::equal(spec.to(torch::kCPU).gather(i64({4}).view({1, 1})).features["twice"], i64({8}).view({1, 1, 1})));
  BatchSpec bad;
  bad.computed_feature("short", [](const torch::Tensor&) { return torch::zeros({1}); });
  CHECK_THROWS_WITH(bad.gather(i64({1, 2}).view({1, 2})), Catch::Contains("'short': its function returned"));
  CHECK_THROWS_WITH(spec.computed_feature("twice", [](const torch::Tensor& r) { return r; }),
                    Catch::Contains("already has a column 'twice'"));
}

TEST_CASE("HistoryFeature pools each list's items and their fill; gradients reach the rows used", "[history][nn]") {
  torch::manual_seed(2);
  HistoryFeature f(HistoryFeatureOptions(6, 3).lists(2).window(3));
  const auto column = i64({1, 2, -1, /**/ -1, -1, -1, /**/ 5, 5, 0, /**/ 4, 7, -1}).view({2, 1, 2, 3});
  const auto out = f(column);
  REQUIRE(out.sizes() == torch::IntArrayRef({2, 1, 8}));
  CHECK(f->output_dim() == 8);
  const auto w = f->weight.detach();
  CHECK(torch::allclose(out[0][0].narrow(0, 0, 3), (w[1] + w[2]) / 2));
  CHECK(out[0][0][3].item<float>() == Approx(2.0 / 3));
  CHECK((out[0][0].narrow(0, 4, 4) == 0).all().item<bool>());  // an empty list: zeros, fill 0
  CHECK(torch::allclose(out[1][0].narrow(0, 0, 3), (w[5] * 2 + w[0]) / 3));
  CHECK(torch::allclose(out[1][0].narrow(0, 4, 3), w[4]));  // 7 is not a known item
  CHECK(out[1][0][7].item<float>() == Approx(1.0 / 3));
  // d sum / d row i = the sum over the lists holding i of 1 / (list length).
  out.sum().backward();
  const auto expected_grad = torch::tensor({1.0 / 3, 0.5, 0.5, 0.0, 1.0, 2.0 / 3}, torch::kFloat32).view({6, 1}).expand({6, 3});
  CHECK(torch::allclose(f->weight.grad(), expected_grad));
  // Clone and save/load give the same outputs.
  auto cloned = std::dynamic_pointer_cast<HistoryFeatureImpl>(f->clone());
  CHECK(torch::equal(cloned->forward(column), f(column).detach()));
  TempDir dir;
  torch::save(f, dir.file("h.pt"));
  HistoryFeature loaded(HistoryFeatureOptions(6, 3).lists(2).window(3));
  torch::load(loaded, dir.file("h.pt"));
  CHECK(torch::equal(loaded(column), f(column)));
  CHECK_THROWS_WITH(f(torch::zeros({2, 1, 3, 3}, torch::kInt64)), Catch::Contains("expected an integer column [..., 2, 3]"));
  CHECK_THROWS_WITH(f->set_weight(torch::zeros({5, 3})), Catch::Contains("expected [6, 3]"));
}

TEST_CASE("mean_bag: embedding_bag's mean, with a sparse gradient of one row per item", "[history][nn]") {
  torch::manual_seed(8);
  const auto table = torch::randn({7, 5}, torch::requires_grad());
  // Bags: {3, 1, 3}, {}, {6}, {1, 1, 0, 2}: repeats within a bag and across bags, an empty bag.
  const auto ids = i64({3, 1, 3, 6, 1, 1, 0, 2});
  const auto counts = i64({3, 0, 1, 4});
  const auto upstream = torch::randn({4, 5});
  const auto pooled = rectrain::detail::mean_bag(table, ids, counts);
  (pooled * upstream).sum().backward();
  const auto grad = table.grad();
  // The reference: embedding_bag with a dense gradient.
  const auto reference_table = table.detach().clone().requires_grad_(true);
  const auto reference = torch::nn::functional::embedding_bag(
      ids, reference_table, torch::nn::functional::EmbeddingBagFuncOptions().offsets(i64({0, 3, 3, 4})).mode(torch::kMean));
  (reference * upstream).sum().backward();
  CHECK(torch::equal(pooled.detach(), reference.detach()));
  REQUIRE(grad.is_sparse());
  // Each item once, in order (4 and 5 unused). AccumulateGrad rewraps the
  // tensor and drops its coalesced flag; SparseAdam checks the order itself.
  CHECK(torch::equal(grad._indices(), i64({0, 1, 2, 3, 6}).view({1, 5})));
  CHECK(torch::allclose(grad.to_dense(), reference_table.grad(), 1e-6, 1e-6));
  CHECK(torch::allclose(grad.to_dense()[3], upstream[0] * (2.0F / 3)));  // twice in a bag of 3
  CHECK_THROWS_WITH(rectrain::detail::mean_bag(table, ids, i64({3, 0, 1, 3})), Catch::Contains("sum to the 8 ids"));
  CHECK_THROWS_WITH(rectrain::detail::mean_bag(table.to(torch::kFloat64), ids, counts), Catch::Contains("float32"));
  // HistoryFeature with sparse(true) pools through it: the same outputs and gradients as sparse(false).
  HistoryFeature sparse(HistoryFeatureOptions(30, 4).lists(4).window(5).query(true).sparse(true));
  HistoryFeature dense(HistoryFeatureOptions(30, 4).lists(4).window(5).query(true));
  dense->set_weight(sparse->weight.detach());
  const auto column = torch::randint(-1, 30, {3, 2, 5, 5}, torch::kInt64);
  const auto a = sparse(column), b = dense(column);
  CHECK(torch::equal(a, b));
  a.pow(2).sum().backward();
  b.pow(2).sum().backward();
  REQUIRE(sparse->weight.grad().is_sparse());
  CHECK(torch::allclose(sparse->weight.grad().to_dense(), dense->weight.grad(), 1e-5, 1e-6));
}

TEST_CASE("CrossNetwork computes x_{l+1} = x0 * (W x_l + b) + x_l; gradients, clone, save and load", "[history][nn]") {
  torch::manual_seed(4);
  for (const int64_t rank : {int64_t{0}, int64_t{2}}) {
    INFO("rank " << rank);
    CrossNetwork cross(CrossNetworkOptions(5).layers(2).rank(rank));
    cross->to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : cross->parameters()) p.normal_(0, 0.5);
    }
    const auto x0 = torch::randn({3, 2, 5}, torch::kFloat64);
    auto expected = x0;
    for (int64_t l = 0; l < 2; ++l) {
      const auto* up = cross->up[l]->as<torch::nn::Linear>();
      auto w = up->weight;
      if (rank > 0) w = torch::mm(w, cross->down[l]->as<torch::nn::Linear>()->weight);
      expected = x0 * (torch::matmul(expected, w.t()) + up->bias) + expected;
    }
    CHECK(torch::allclose(cross(x0), expected));
    check_gradient([&](const torch::Tensor& x) { return cross(x).pow(2).sum(); }, x0.narrow(0, 0, 1));
    auto cloned = std::dynamic_pointer_cast<CrossNetworkImpl>(cross->clone());
    CHECK(torch::equal(cloned->forward(x0), cross(x0)));
    TempDir dir;
    torch::save(cross, dir.file("c.pt"));
    CrossNetwork loaded(CrossNetworkOptions(5).layers(2).rank(rank));
    loaded->to(torch::kFloat64);
    torch::load(loaded, dir.file("c.pt"));
    CHECK(torch::equal(loaded(x0), cross(x0)));
  }
  // Fresh layers start near the identity.
  CrossNetwork fresh(CrossNetworkOptions(8).layers(3));
  const auto x = torch::randn({4, 8});
  CHECK(((fresh(x) - x).abs().max() < x.abs().max()).item<bool>());
  CHECK_THROWS_WITH(CrossNetwork(CrossNetworkOptions(4).layers(0)), Catch::Contains("layers >= 1"));
  CHECK_THROWS_WITH(fresh(torch::zeros({2, 7})), Catch::Contains("CrossNetwork"));
}

TEST_CASE("Ranker with cross layers: trains, clones with the same outputs", "[history][nn]") {
  torch::manual_seed(6);
  Tower user, item;
  user->add("user", CategoricalFeature(4, 3));
  item->add("item", CategoricalFeature(5, 3));
  Ranker ranker(user, item, RankerOptions(MlpBlocks({8})).cross_layers(2).cross_rank(2));
  ranker->add_head("target", RankingHead(ranker->hidden_dim()));
  REQUIRE(ranker->cross);
  Batch batch;
  batch.features.insert("user", i64({0, 0, 1, 1}).view({2, 2}));
  batch.features.insert("item", i64({1, 2, 3, 4}).view({2, 2}));
  batch.labels.insert("target", torch::tensor({1.f, 0.f, 0.f, 1.f}).view({2, 2}));
  batch.mask = torch::ones({2, 2}, torch::kBool);
  ranker->eval();
  auto copy = std::dynamic_pointer_cast<RankerImpl>(ranker->clone());
  CHECK(torch::equal(copy->forward(batch)["target"], ranker->forward(batch)["target"]));
  ranker->train();
  ranker->loss(ranker->forward(batch), batch).backward();
  CHECK(ranker->cross->up[0]->as<torch::nn::Linear>()->weight.grad().abs().sum().item<double>() > 0);
  CHECK(Ranker(user, item, RankerOptions(MlpBlocks({8})))->cross.is_empty());
}

TEST_CASE("Settings: a configuration written before a setting existed reads with its absent value", "[history][core]") {
  RecipeSettings s;
  s.history = 8;
  s.statistics = true;
  s.cross_layers = 2;
  std::string text = s.to_text();
  CHECK(RecipeSettings::from_text(text, "now").history == 8);
  // Drop the lines of the settings that came later.
  std::string old;
  for (const auto& line : split_list(text, '\n'))
    if (line.rfind("history=", 0) && line.rfind("statistics=", 0) && line.rfind("cross_layers=", 0) &&
        line.rfind("long_watch=", 0) && line.rfind("history_vectors=", 0))
      old += line + "\n";
  const auto read = RecipeSettings::from_text(old, "old.pt");
  CHECK(read.history == 0);
  CHECK(read.history_vectors);  // on, as before the setting existed
  CHECK_FALSE(read.statistics);
  CHECK(read.cross_layers == 0);
  CHECK_THROWS_WITH(RecipeSettings::from_text(old.substr(old.find('\n') + 1), "old.pt"),
                    Catch::Contains("lacks 'item_factors'"));
}

TEST_CASE("rectrain-vk train with history, statistics and cross layers; predict reloads the models", "[history][cli]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string flags = " --data " + data +
                            " --frozen-epochs 1 --unfrozen-epochs 1 --hidden 32,16 --seeds 1,2 --history 4 --history-similarity "
                            "--history-attention --no-history-vectors --statistics --item-folds 3 --cross-layers 1 --experts 2 "
                            "--content-affinity";
  const auto run = vk_out("train" + flags + " --out " + dir.file("run"));
  INFO(run);
  REQUIRE_THAT(run, Catch::Contains("train: done") && Catch::Contains("ensemble: candidates GAUC"));
  const auto file = RecipeModelFile::read(dir.file("run/model-seed1.pt"));
  CHECK(file.settings.history == 4);
  CHECK(file.settings.history_attention);
  CHECK_FALSE(file.settings.history_vectors);
  CHECK(file.settings.statistics);
  CHECK(file.settings.content_affinity);
  CHECK(std::isfinite(file.settings.long_watch));
  CHECK(file.settings.long_watch >= 0);
  // The same seeds give the same bytes.
  REQUIRE_THAT(vk_out("train" + flags + " --out " + dir.file("again")), Catch::Contains("train: done"));
  CHECK(read_file(dir.file("again/predictions.csv")) == read_file(dir.file("run/predictions.csv")));
  const auto predicted = vk_out("predict --data " + data + " --models " + dir.file("run") + " --predictions " +
                                dir.file("p.csv"));
  INFO(predicted);
  CHECK_THAT(predicted, Catch::Contains("from 2 model(s)"));
  CHECK(read_file(dir.file("p.csv")) == read_file(dir.file("run/predictions.csv")));
}

TEST_CASE("HistoryFeature with a query adds the candidate's mean and max similarity per list", "[history][nn]") {
  torch::manual_seed(3);
  HistoryFeature f(HistoryFeatureOptions(6, 2).lists(2).window(3).query(true));
  CHECK(f->output_dim() == 2 * (2 + 3));
  // Lists {1, 2} and {} ; query item 4. Then lists {5} and {0, 3}; query -1.
  const auto column = i64({1, 2, -1, -1, -1, -1, 4, -1, -1, 5, -1, -1, 0, 3, -1, -1, -1, -1}).view({2, 3, 3});
  const auto out = f(column).detach();
  REQUIRE(out.sizes() == torch::IntArrayRef({2, 10}));
  const auto w = f->weight.detach();
  const auto q = w[4];
  CHECK(out[0][3].item<float>() == Approx(((w[1] + w[2]) / 2 * q).sum().item<float>()).margin(1e-6));
  CHECK(out[0][4].item<float>() ==
        Approx(std::max((w[1] * q).sum().item<float>(), (w[2] * q).sum().item<float>())).margin(1e-6));
  CHECK((out[0].narrow(0, 5, 5) == 0).all().item<bool>());  // the empty list
  CHECK((out[1].narrow(0, 3, 2) == 0).all().item<bool>());  // no query item: similarities 0
  CHECK(torch::allclose(out[1].narrow(0, 5, 2), (w[0] + w[3]) / 2));
  f(column).sum().backward();
  CHECK(f->weight.grad()[4].abs().sum().item<float>() > 0);  // the query's row learns too
}

TEST_CASE("HistoryFeature without vectors gives each list's fill and similarities only", "[history][nn]") {
  const auto column = i64({1, 2, -1, -1, -1, -1, 4, -1, -1, 5, -1, -1, 0, 3, -1, -1, -1, -1}).view({2, 3, 3});
  for (const bool attention : {false, true}) {
    INFO("attention " << attention);
    torch::manual_seed(3);
    const auto options = HistoryFeatureOptions(6, 2).lists(2).window(3).query(true).attention(attention);
    HistoryFeature with(options);
    HistoryFeature without(HistoryFeatureOptions(options).vectors(false));
    torch::NoGradGuard no_grad;
    without->weight.copy_(with->weight);
    if (attention) without->attention_scale.copy_(torch::tensor({0.5F, 2.0F}));
    if (attention) with->attention_scale.copy_(without->attention_scale);
    CHECK(without->output_dim() == 2 * 3);
    const auto full = with(column).view({2, 2, 2 + 3});
    const auto out = without(column);
    REQUIRE(out.sizes() == torch::IntArrayRef({2, 6}));
    // The same fill and similarities, the vectors (the first 2 of each list's 5) left out.
    CHECK(torch::equal(out.view({2, 2, 3}), full.narrow(2, 2, 3)));
    CHECK(out[0][1].item<float>() != 0);  // the first list's similarities are there
  }
  // Gradients still reach the list's items and the query through the similarities.
  HistoryFeature f(HistoryFeatureOptions(6, 2).lists(2).window(3).query(true).vectors(false));
  f(column).sum().backward();
  for (const int item : {1, 2, 4}) CHECK(f->weight.grad()[item].abs().sum().item<float>() > 0);
  CHECK(f->weight.grad()[5].abs().sum().item<float>() == 0);  // no query in row 1: no similarity to learn from
  std::ostringstream printed;
  printed << *f;
  CHECK_THAT(printed.str(), Catch::Contains("vectors=false"));
  CHECK_THROWS_WITH(HistoryFeature(HistoryFeatureOptions(6, 2).vectors(false)), Catch::Contains("vectors(false) needs query(true)"));
  RecipeSettings settings;
  settings.history = 4;
  settings.history_vectors = false;
  CHECK_THROWS_WITH(settings.validate(), Catch::Contains("--no-history-vectors leaves only"));
  settings.history_similarity = true;
  CHECK_NOTHROW(settings.validate());
}

TEST_CASE("HistoryFeature with attention pools each list by softmax(scale * item . query), as DIN", "[history][nn]") {
  torch::manual_seed(5);
  HistoryFeature f(HistoryFeatureOptions(6, 2).lists(2).window(3).query(true).attention(true).attention_scale(2));
  CHECK(f->output_dim() == 2 * (2 + 3));
  REQUIRE(f->attention_scale.sizes() == torch::IntArrayRef({2}));
  {
    torch::NoGradGuard no_grad;
    f->attention_scale[1] = -0.5;  // each list its own scale
  }
  // Lists {1, 2} and {} ; query item 4. Then lists {5} and {0, 3, 0}; query -1.
  const auto column = i64({1, 2, -1, -1, -1, -1, 4, -1, -1, 5, -1, -1, 0, 3, 0, -1, -1, -1}).view({2, 3, 3});
  const auto out = f(column);
  REQUIRE(out.sizes() == torch::IntArrayRef({2, 10}));
  const auto w = f->weight.detach();
  const auto q = w[4];
  const auto s1 = (w[1] * q).sum(), s2 = (w[2] * q).sum();
  const auto a = torch::softmax(torch::stack({s1, s2}) * 2, 0);
  const auto expected = a[0] * w[1] + a[1] * w[2];
  const auto got = out.detach();
  CHECK(torch::allclose(got[0].narrow(0, 0, 2), expected, 1e-5, 1e-6));
  CHECK(got[0][2].item<float>() == Approx(2.0 / 3));
  CHECK(got[0][3].item<float>() == Approx((expected * q).sum().item<float>()).margin(1e-6));
  CHECK(got[0][4].item<float>() == Approx(std::max(s1.item<float>(), s2.item<float>())).margin(1e-6));
  CHECK((got[0].narrow(0, 5, 5) == 0).all().item<bool>());  // the empty list
  // Without a query item every score is 0: the mean of the list, repeats counted.
  CHECK(torch::allclose(got[1].narrow(0, 0, 2), w[5]));
  CHECK(torch::allclose(got[1].narrow(0, 5, 2), (w[0] * 2 + w[3]) / 3, 1e-5, 1e-6));
  CHECK((got[1].narrow(0, 3, 2) == 0).all().item<bool>());
  CHECK((got[1].narrow(0, 8, 2) == 0).all().item<bool>());
  // The gradient reaches every item of a list (not only the most similar),
  // the query's row and the scales.
  out.select(1, 0).sum().backward();
  const auto grad = f->weight.grad();
  CHECK(grad[1].abs().sum().item<float>() > 0);
  CHECK(grad[2].abs().sum().item<float>() > 0);
  CHECK(grad[4].abs().sum().item<float>() > 0);
  CHECK(grad[3].abs().sum().item<float>() == 0);  // only in row 1's second list, not in column 0
  CHECK(f->attention_scale.grad()[0].item<float>() != 0);
  // Clone and save/load give the same outputs, the scales included.
  auto cloned = std::dynamic_pointer_cast<HistoryFeatureImpl>(f->clone());
  CHECK(torch::equal(cloned->forward(column), f(column).detach()));
  TempDir dir;
  torch::save(f, dir.file("a.pt"));
  HistoryFeature loaded(HistoryFeatureOptions(6, 2).lists(2).window(3).query(true).attention(true));
  torch::load(loaded, dir.file("a.pt"));
  CHECK(torch::equal(loaded->attention_scale, f->attention_scale));
  CHECK(torch::equal(loaded(column), f(column)));
  CHECK_THROWS_WITH(HistoryFeature(HistoryFeatureOptions(6, 2).attention(true)), Catch::Contains("attention needs query(true)"));
  RecipeSettings settings;
  settings.history = 4;
  settings.history_attention = true;
  CHECK_THROWS_WITH(settings.validate(), Catch::Contains("--history-attention uses the candidate"));
}

TEST_CASE("ExpertGates: MMoE and PLE mix experts per task; Ranker with experts trains and clones", "[history][nn]") {
  torch::manual_seed(8);
  for (const int64_t own : {int64_t{0}, int64_t{1}}) {
    INFO("task experts " << own);
    ExpertGates gates(ExpertGatesOptions(6, MlpBlocks({4})).shared_experts(2).task_experts(own));
    gates->add_task("a").add_task("b");
    const auto x = torch::randn({3, 5, 6});
    const auto out = gates(x);
    REQUIRE(out.size() == 2);
    CHECK(out[0].sizes() == torch::IntArrayRef({3, 5, 4}));
    const auto g = gates->gate_weights("a", x);
    CHECK(g.size(-1) == 2 + own);
    CHECK(torch::allclose(g.sum(-1), torch::ones({3, 5})));
    // Task a's output is its gate's mix of the shared experts and its own.
    std::vector<torch::Tensor> experts;
    for (const auto* e : gates->expert_modules()) experts.push_back(const_cast<MlpImpl*>(e)->forward(x));
    std::vector<torch::Tensor> of_a(experts.begin(), experts.begin() + 2);
    if (own) of_a.push_back(experts[2]);
    CHECK(torch::allclose(out[0], (torch::stack(of_a, -2) * g.unsqueeze(-1)).sum(-2), 1e-5, 1e-6));
    out[0].sum().backward();
    if (own) {  // task b's own expert gets nothing from task a's output
      const auto* b_expert = gates->expert_modules()[3];
      CHECK_FALSE(b_expert->linears[0]->weight.grad().defined());
    }
    auto copy = std::dynamic_pointer_cast<ExpertGatesImpl>(gates->clone());
    CHECK(torch::equal(copy->forward(x)[1], gates(x)[1]));
    TempDir dir;
    torch::save(gates, dir.file("g.pt"));
    ExpertGates loaded(ExpertGatesOptions(6, MlpBlocks({4})).shared_experts(2).task_experts(own));
    loaded->add_task("a").add_task("b");
    torch::load(loaded, dir.file("g.pt"));
    CHECK(torch::equal(loaded(x)[0], gates(x)[0]));
  }
  CHECK_THROWS_WITH(ExpertGates(ExpertGatesOptions(6, MlpBlocks({4})).shared_experts(0)), Catch::Contains("at least one expert"));
  ExpertGates none(ExpertGatesOptions(6, MlpBlocks({4})));
  CHECK_THROWS_WITH(none(torch::zeros({1, 6})), Catch::Contains("no tasks"));

  Tower user, item;
  user->add("user", CategoricalFeature(4, 3));
  item->add("item", CategoricalFeature(5, 3));
  Ranker ranker(user, item, RankerOptions(MlpBlocks({8})).experts(2).task_experts(1));
  ranker->add_head("target", RankingHead(ranker->hidden_dim())).add_head("like", BinaryHead(ranker->hidden_dim(), "like"));
  CHECK(ranker->hidden_dim() == 8);
  REQUIRE(ranker->experts);
  CHECK(ranker->experts->task_names() == std::vector<std::string>{"target", "like"});
  Batch batch;
  batch.features.insert("user", i64({0, 0, 1, 1}).view({2, 2}));
  batch.features.insert("item", i64({1, 2, 3, 4}).view({2, 2}));
  batch.labels.insert("target", torch::tensor({1.f, 0.f, 0.f, 1.f}).view({2, 2}));
  batch.labels.insert("like", torch::tensor({1.f, 0.f, 0.f, 1.f}).view({2, 2}));
  batch.mask = torch::ones({2, 2}, torch::kBool);
  ranker->eval();
  auto copy = std::dynamic_pointer_cast<RankerImpl>(ranker->clone());
  CHECK(torch::equal(copy->forward(batch)["like"], ranker->forward(batch)["like"]));
  ranker->train();
  ranker->loss(ranker->forward(batch), batch).backward();
  for (const auto* gate : ranker->experts->gate_modules()) CHECK(gate->weight.grad().abs().sum().item<double>() > 0);
  // The model-rate accounting sees the experts and the gates.
  const auto products = training_matmuls(ranker, 10);
  CHECK(products.size() > 2 * 3);
  CHECK_THROWS_WITH(Ranker(user, item, RankerOptions(MlpBlocks()).experts(2)), Catch::Contains("shared blocks' widths"));
}

TEST_CASE("ViewHistory item_folds: a training row's item statistics come from the other folds' users", "[history][leakage]") {
  const auto v = random_views(500, 9, 15, 13);
  const auto h = v.history(ViewHistoryOptions().long_watch(5).smoothing(1).item_folds(3));
  const int64_t n = v.users.numel();
  const auto rows = torch::arange(n);
  const auto stats = h.item_statistics(v.items, rows, v.users);
  const auto everything = h.item_statistics(v.items, torch::full({n}, n, torch::kInt64), v.users);
  for (int64_t r = 0; r < n; r += 7) {
    const auto item = v.items[r].item<int64_t>(), fold = h.fold_of(v.users[r].item<int64_t>());
    double counts[4] = {0, 0, 0, 0}, all[4] = {0, 0, 0, 0}, watch = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (v.items[j].item<int64_t>() != item) continue;
      const auto c = reaction_of(v, j, 5);
      ++all[c];
      if (h.fold_of(v.users[j].item<int64_t>()) == fold) continue;  // the row's own fold: never, at any time
      ++counts[c];
      watch += std::log1p(v.timespent[j].item<double>());
    }
    const double views = counts[0] + counts[1] + counts[2] + counts[3];
    CHECK(stats[r][0].item<double>() == Approx(std::log1p(views)));
    for (int c = 0; c < 4; ++c) CHECK(stats[r][1 + c].item<double>() == Approx(counts[c] / (views + 1)));
    CHECK(stats[r][5].item<double>() == Approx(views > 0 ? watch / views : 0.0).margin(1e-5));
    const double total = all[0] + all[1] + all[2] + all[3];
    CHECK(everything[r][0].item<double>() == Approx(std::log1p(total)));  // candidates: every user
  }
  CHECK_THROWS_WITH(h.item_statistics(v.items, rows), Catch::Contains("need each query's user"));
  CHECK_THROWS_WITH(v.history(ViewHistoryOptions().item_folds(1)), Catch::Contains("item_folds must be 0 or >= 2"));
}

TEST_CASE("HistoryFeature, CrossNetwork, ExpertGates and ViewHistory columns on CUDA agree with CPU", "[history][cuda]") {
  if (!torch::cuda::is_available()) {
    SUCCEED("no CUDA device; skipped");
    return;
  }
  torch::manual_seed(21);
  const torch::Device cuda(torch::kCUDA);
  // HistoryFeature with a query, sparse: values and gradients.
  HistoryFeature history(HistoryFeatureOptions(30, 4).lists(4).window(5).query(true).sparse(true));
  auto history_gpu = std::dynamic_pointer_cast<HistoryFeatureImpl>(history->clone(cuda));
  auto column = torch::randint(-1, 30, {3, 2, 5, 5}, torch::kInt64);
  const auto out = history(column);
  const auto out_gpu = history_gpu->forward(column.to(cuda));
  CHECK(torch::allclose(out_gpu.cpu(), out, 1e-4, 1e-5));
  out.pow(2).sum().backward();
  out_gpu.pow(2).sum().backward();
  CHECK(history_gpu->weight.grad().is_sparse());
  CHECK(torch::allclose(history_gpu->weight.grad().to_dense().cpu(), history->weight.grad().to_dense(), 1e-3, 1e-5));
  // With attention pooling: values and gradients, the scales' included.
  HistoryFeature attend(HistoryFeatureOptions(30, 4).lists(4).window(5).query(true).attention(true).attention_scale(3));
  auto attend_gpu = std::dynamic_pointer_cast<HistoryFeatureImpl>(attend->clone(cuda));
  const auto attended = attend(column);
  const auto attended_gpu = attend_gpu->forward(column.to(cuda));
  CHECK(torch::allclose(attended_gpu.cpu(), attended, 1e-4, 1e-5));
  attended.pow(2).sum().backward();
  attended_gpu.pow(2).sum().backward();
  CHECK(torch::allclose(attend_gpu->weight.grad().cpu(), attend->weight.grad(), 1e-3, 1e-5));
  CHECK(torch::allclose(attend_gpu->attention_scale.grad().cpu(), attend->attention_scale.grad(), 1e-3, 1e-5));
  // CrossNetwork and ExpertGates.
  CrossNetwork cross(CrossNetworkOptions(6).layers(2).rank(3));
  auto cross_gpu = std::dynamic_pointer_cast<CrossNetworkImpl>(cross->clone(cuda));
  const auto x = torch::randn({4, 3, 6});
  CHECK(torch::allclose(cross_gpu->forward(x.to(cuda)).cpu(), cross(x), 1e-4, 1e-5));
  ExpertGates gates(ExpertGatesOptions(6, MlpBlocks({5}).normalization(Normalization::LayerNorm)).shared_experts(2).task_experts(1));
  gates->add_task("a").add_task("b");
  auto gates_gpu = std::dynamic_pointer_cast<ExpertGatesImpl>(gates->clone(cuda));
  const auto cpu_out = gates(x), gpu_out = gates_gpu->forward(x.to(cuda));
  for (size_t t = 0; t < 2; ++t) CHECK(torch::allclose(gpu_out[t].cpu(), cpu_out[t], 1e-4, 1e-5));
  // The history columns gathered from rows on the device.
  const auto v = random_views(200, 6, 30, 22);
  RecipeSettings s;
  s.history = 5;
  s.history_similarity = true;
  s.statistics = true;
  auto h = std::make_shared<const ViewHistory>(v.history(ViewHistoryOptions().window(5).long_watch(5)));
  BatchSpec spec;
  spec.feature("user", v.users);
  const auto with = with_history_columns(spec, s, h, v.users, v.items, HistoryTime::Row);
  const auto rows = torch::randint(0, 200, {4, 5}, torch::kInt64);
  const auto on_cpu = with.gather(rows), on_gpu = with.to(cuda).gather(rows.to(cuda));
  for (const char* name : {"history", "user_statistics", "item_statistics"})
    CHECK(torch::equal(on_gpu.features[name].cpu(), on_cpu.features[name]));
}

namespace {

/// ContentAffinity's features for query (user, item, time), from its
/// definition: the ridge fit on the user's first p views before `time`.
std::pair<double, double> affinity_by_definition(const Views& v, const torch::Tensor& content,
                                                 const torch::Tensor& duration, double ridge, int64_t first_fit,
                                                 int64_t user, int64_t item, int64_t time) {
  const int64_t n = v.users.numel(), d = content.size(1);
  const auto c = content.to(torch::kFloat64);
  const auto centred = c - c.index_select(0, v.items).mean(0);
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < n; ++r)
    if (v.users[r].item<int64_t>() == user) rows.push_back(r);
  const auto views = static_cast<int64_t>(rows.size());
  int64_t before = 0;
  while (before < views && rows[static_cast<size_t>(before)] < time) ++before;
  if (views < first_fit || before < first_fit) return {0.0, 0.0};
  int64_t used = views;
  if (before < views) {
    used = first_fit;
    while (used * 2 <= before) used *= 2;
  }
  auto x = torch::ones({used, d + 1}, torch::kFloat64);
  auto y = torch::empty({used}, torch::kFloat64);
  for (int64_t j = 0; j < used; ++j) {
    const int64_t r = rows[static_cast<size_t>(j)], i = v.items[r].item<int64_t>();
    x[j].narrow(0, 0, d).copy_(centred[i]);
    y[j] = std::log1p(v.timespent[r].item<double>()) - std::log1p(duration[i].item<double>());
  }
  auto penalty = torch::full({d + 1}, ridge, torch::kFloat64);
  penalty[d] = 0;
  const auto w = at::linalg_solve(x.t().mm(x) + torch::diag(penalty), x.t().mv(y));
  return {w.narrow(0, 0, d).dot(centred[item]).item<double>(), std::log1p(static_cast<double>(used))};
}

} // namespace

TEST_CASE("ContentAffinity: each query reads the ridge fit on the views before it, by brute force",
          "[history][affinity]") {
  auto v = random_views(300, 4, 10, 21);
  const auto content = torch::randn({10, 3});
  auto duration = torch::rand({10}) * 20;
  duration[3] = 0;  // unknown duration: the response is log1p(timespent)
  const ContentAffinity affinity(v.users, v.items, v.timespent, content, duration, 4,
                                 ContentAffinityOptions().ridge(2).first_fit(4));
  CHECK(affinity.num_rows() == 300);
  CHECK(affinity.dim() == 3);
  std::vector<int64_t> users, items, times;
  for (int64_t user = 0; user < 4; ++user)
    for (int64_t time : {0, 5, 17, 40, 99, 150, 299, 300, 1000})
      for (int64_t item : {0, 3, 9}) {
        users.push_back(user);
        items.push_back(item);
        times.push_back(time);
      }
  for (int64_t r = 0; r < 300; ++r) {  // every training row, as the recipe asks: time = the row itself
    users.push_back(v.users[r].item<int64_t>());
    items.push_back(v.items[r].item<int64_t>());
    times.push_back(r);
  }
  users.push_back(-1);  // unknown user: zeros
  items.push_back(2);
  times.push_back(300);
  const auto got = affinity.features(torch::tensor(users), torch::tensor(items), torch::tensor(times));
  REQUIRE(got.sizes() == torch::IntArrayRef({static_cast<int64_t>(users.size()), ContentAffinity::kWidth}));
  int64_t fitted = 0;
  for (size_t q = 0; q + 1 < users.size(); ++q) {
    INFO("query " << q << ": user " << users[q] << ", item " << items[q] << ", time " << times[q]);
    const auto [value, used] = affinity_by_definition(v, content, duration, 2, 4, users[q], items[q], times[q]);
    CHECK(got[static_cast<int64_t>(q)][0].item<double>() == Approx(value).margin(1e-4));
    CHECK(got[static_cast<int64_t>(q)][1].item<double>() == Approx(used).margin(1e-6));
    fitted += used > 0;
  }
  CHECK(fitted > static_cast<int64_t>(users.size()) / 2);  // most queries have a fit: the check compares values
  CHECK((got[static_cast<int64_t>(users.size()) - 1] == 0).all().item<bool>());

  // Bad input names what was wrong.
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent, torch::zeros({10, 0}), duration, 4),
                    Catch::Contains("content vectors"));
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent, content, torch::zeros({9}), 4),
                    Catch::Contains("duration must be [10]"));
  auto bad = content.clone();
  bad[1][1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent, bad, duration, 4), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent, content, duration, 3),
                    Catch::Contains("users must be in [0, 3), got 3 at row"));
  auto bad_watch = v.timespent.clone();
  bad_watch[7] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, bad_watch, content, duration, 4),
                    Catch::Contains("timespent or duration has NaN or Inf"));
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent.narrow(0, 0, 5), content, duration, 4),
                    Catch::Contains("timespent must be [300]"));
  // Double watch times give the same fits as the float ones they hold.
  const ContentAffinity from_double(v.users, v.items, v.timespent.to(torch::kFloat64), content, duration, 4,
                                    ContentAffinityOptions().ridge(2).first_fit(4));
  CHECK(torch::equal(from_double.features(torch::tensor(users), torch::tensor(items), torch::tensor(times)), got));
  CHECK_THROWS_WITH(ContentAffinity(v.users, v.items, v.timespent, content, duration, 4,
                                    ContentAffinityOptions().ridge(0)),
                    Catch::Contains("ridge"));
  CHECK_THROWS_WITH(affinity.features(i64({0}), i64({10}), i64({5})), Catch::Contains("item 10"));
}

TEST_CASE("The content_affinity column never sees the row itself or a later one", "[history][affinity][leakage]") {
  // A later view that reveals a row's label (a long watch of the row's own
  // item, and of every later view) must not move the row's affinity.
  auto v = random_views(400, 5, 12, 23);
  const auto content = torch::randn({12, 4});
  const auto duration = torch::rand({12}) * 10 + 1;
  RecipeSettings s;
  s.content_affinity = true;
  auto column_of = [&](const Views& views, HistoryTime time) {
    const auto affinity = std::make_shared<const ContentAffinity>(views.users, views.items, views.timespent, content,
                                                                  duration, views.num_users);
    BatchSpec spec;
    spec.feature("user", views.users);
    return with_history_columns(spec, s, nullptr, views.users, views.items, time, {}, affinity)
        .gather(torch::arange(views.users.numel()).view({-1, 1}))
        .features["content_affinity"];
  };
  const auto before = column_of(v, HistoryTime::Row);
  const int64_t planted = 260;
  auto changed = v;
  changed.timespent = v.timespent.clone();
  changed.timespent.narrow(0, planted, 400 - planted).fill_(1000);
  const auto after = column_of(changed, HistoryTime::Row);
  CHECK(torch::equal(before.narrow(0, 0, planted + 1), after.narrow(0, 0, planted + 1)));
  CHECK(!torch::equal(before.narrow(0, planted + 1, 400 - planted - 1),
                      after.narrow(0, planted + 1, 400 - planted - 1)));  // the column is live
  // HistoryTime::All: every view, so the planted change shows for all rows.
  CHECK(!torch::equal(column_of(v, HistoryTime::All), column_of(changed, HistoryTime::All)));
  BatchSpec spec;
  CHECK_THROWS_WITH(with_history_columns(spec, s, nullptr, v.users, v.items, HistoryTime::All),
                    Catch::Contains("no ContentAffinity"));
}
