#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/data/batch.hpp>
#include <rectrain/data/challenge_schema.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/group_sampler.hpp>
#include <rectrain/data/synthetic.hpp>
#include <rectrain/loss/multi_task.hpp>
#include <rectrain/metrics/baselines.hpp>
#include <rectrain/metrics/ranking.hpp>
#include <rectrain/nn/binary_head.hpp>
#include <rectrain/nn/categorical_feature.hpp>
#include <rectrain/nn/dense_feature.hpp>
#include <rectrain/nn/dropout.hpp>
#include <rectrain/nn/freezing.hpp>
#include <rectrain/nn/fused_block.hpp>
#include <rectrain/nn/mlp.hpp>
#include <rectrain/nn/numeric_feature.hpp>
#include <rectrain/nn/ranker.hpp>
#include <rectrain/nn/ranking_head.hpp>
#include <rectrain/nn/regression_head.hpp>
#include <rectrain/nn/tower.hpp>
#include <rectrain/nn/two_tower.hpp>

#include <cmath>
#include <string>
#include <vector>

using namespace rectrain;
using rectrain_test::check_gradient;
using rectrain_test::i64;
using rectrain_test::TempDir;

namespace {

/// A hand-made batch: B groups of G rows with every column the test towers
/// and heads read, and the last `padded` rows of group 0 padded.
Batch toy_batch(int64_t b, int64_t g, int64_t padded = 0, uint64_t seed = 1) {
  auto gen = compat::make_generator(torch::kCPU, seed);
  Batch batch;
  batch.rows = torch::arange(b * g).view({b, g});
  if (padded > 0) batch.rows[0].narrow(0, g - padded, padded).fill_(-1);
  batch.mask = batch.rows >= 0;
  const auto user = torch::randint(0, 7, {b, 1}, gen, torch::kInt64).expand({b, g}).contiguous();
  batch.features.insert("user", user.masked_fill(~batch.mask, -1));
  batch.features.insert("item", torch::randint(0, 11, {b, g}, gen, torch::kInt64).masked_fill(~batch.mask, -1));
  batch.features.insert("age", torch::rand({b, g}, gen) * 50 + 18);
  batch.features.insert("duration", torch::rand({b, g}, gen) * 300);
  batch.features.insert("item_embedding", torch::randn({b, g, 5}, gen));
  batch.labels.insert("target", torch::randint(-1, 2, {b, g}, gen).to(torch::kFloat32));
  batch.labels.insert("like", torch::randint(0, 2, {b, g}, gen).to(torch::kFloat32));
  batch.labels.insert("timespent", torch::rand({b, g}, gen) * 60);
  return batch;
}

Tower toy_user_tower() {
  NumericFeature age;
  age->fit(torch::linspace(18, 68, 100));
  Tower tower;
  tower->add("user", CategoricalFeature(7, 4)).add("age", age);
  return tower;
}

Tower toy_item_tower(MlpBlocks blocks = {}) {
  NumericFeature duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  duration->fit(torch::linspace(0, 300, 100));
  Tower tower(std::move(blocks));
  tower->add("item", CategoricalFeature(11, 6))
      .add("duration", duration)
      .add("item_embedding", DenseFeature(DenseFeatureOptions(5).projection(3)));
  return tower;
}

Ranker toy_ranker(RankerOptions options = RankerOptions(MlpBlocks({8, 6}))) {
  Ranker ranker(toy_user_tower(), toy_item_tower(), std::move(options));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(h))
      .add_head("like", BinaryHead(h, "like"), 0.5)
      .add_head("timespent", RegressionHead(RegressionHeadOptions(h, "timespent").log1p_label(true)), 0.25);
  return ranker;
}

bool same_parameters(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (const auto& p : pa)
    if (!pb.contains(p.key()) || !torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

} // namespace

TEST_CASE("CategoricalFeature maps unknown ids to a zero OOV row and takes ALS factors", "[nn]") {
  torch::manual_seed(1);
  CategoricalFeature f(5, 3);
  REQUIRE(f->weight.sizes() == torch::IntArrayRef({6, 3}));
  CHECK(f->weight[5].abs().sum().item<double>() == 0);
  const auto out = f(i64({0, 4, -1, 5, 99}));
  CHECK(out.sizes() == torch::IntArrayRef({5, 3}));
  CHECK(torch::equal(out[1], f->weight[4]));
  for (int k : {2, 3, 4}) CHECK(out[k].abs().sum().item<double>() == 0);
  CHECK(f(i64({1, 2}).view({1, 2})).sizes() == torch::IntArrayRef({1, 2, 3}));

  const auto factors = torch::randn({5, 3});
  CategoricalFeature from_factors(CategoricalFeatureOptions(5, 3).weight(factors));
  CHECK(torch::equal(from_factors->weight.narrow(0, 0, 5), factors));
  CHECK(from_factors->weight[5].abs().sum().item<double>() == 0);
  CHECK_FALSE(from_factors->options.weight().defined());  // no second copy kept
  const auto with_oov = torch::randn({6, 3});
  from_factors->set_weight(with_oov);
  CHECK(torch::equal(from_factors->weight, with_oov));

  CHECK_THROWS_WITH(CategoricalFeature(CategoricalFeatureOptions(5, 3).weight(torch::randn({4, 3}))),
                    Catch::Contains("expected [6, 3] or [5, 3], got [4, 3]"));
  CHECK_THROWS_WITH(f->set_weight(torch::full({5, 3}, std::nan(""))), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(f(torch::zeros({2})), Catch::Contains("ids must be an integer tensor"));
  CHECK_THROWS_WITH(CategoricalFeature(5, 0), Catch::Contains("dim > 0"));
}

TEST_CASE("CategoricalFeature: normalised rows, sparse gradients, freezing", "[nn]") {
  torch::manual_seed(2);
  CategoricalFeature unit(CategoricalFeatureOptions(4, 3).normalize(true));
  const auto rows = unit(i64({0, 1, 2, 3, -1}));
  CHECK(torch::allclose(rows.narrow(0, 0, 4).norm(2, -1), torch::ones({4})));
  CHECK(rows[4].abs().sum().item<double>() == 0);  // the OOV row stays zero, no NaN
  rows.sum().backward();
  CHECK(torch::isfinite(unit->weight.grad()).all().item<bool>());

  CategoricalFeature sparse(CategoricalFeatureOptions(10, 2).sparse(true));
  const auto before = sparse->weight.clone();
  sparse(i64({3, 3, 7})).sum().backward();
  REQUIRE(sparse->weight.grad().is_sparse());
  torch::optim::SGD sgd(sparse->parameters(), 0.1);
  sgd.step();
  const auto moved = (sparse->weight != before).any(1);
  CHECK(moved.nonzero().view(-1).equal(i64({3, 7})));
  CHECK(torch::allclose(sparse->weight[3], before[3] - 0.2));

  CategoricalFeature frozen(CategoricalFeatureOptions(4, 2).frozen(true));
  CHECK(frozen->is_frozen());
  CHECK_FALSE(frozen(i64({1})).requires_grad());
  frozen->unfreeze();
  frozen(i64({1})).sum().backward();
  CHECK(frozen->weight.grad().defined());
  frozen->freeze();
  CHECK_FALSE(frozen->weight.grad().defined());
  CHECK(std::dynamic_pointer_cast<CategoricalFeatureImpl>(frozen->clone())->is_frozen());
}

TEST_CASE("NumericFeature fits z-score, log1p z-score and min-max statistics", "[nn]") {
  const auto data = torch::tensor({1.0, 2.0, 4.0, 9.0}, torch::kFloat64);
  NumericFeature z;
  z->fit(data);
  const double mean = 4.0, sd = std::sqrt((9.0 + 4.0 + 0.0 + 25.0) / 4.0);
  const auto out = z(torch::tensor({{1.0, 9.0}}));
  CHECK(out.sizes() == torch::IntArrayRef({1, 2, 1}));
  CHECK(out[0][0][0].item<double>() == Approx((1 - mean) / sd));
  CHECK(out[0][1][0].item<double>() == Approx((9 - mean) / sd));

  NumericFeature logz(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  logz->fit(data);
  const auto logs = torch::log1p(data);
  const double lmean = logs.mean().item<double>(), lsd = logs.std(/*unbiased=*/false).item<double>();
  CHECK(logz(torch::tensor({3.0}))[0][0].item<double>() == Approx((std::log1p(3.0) - lmean) / lsd));
  CHECK(std::isfinite(logz(torch::tensor({-5.0}))[0][0].item<double>()));  // negatives: no NaN

  NumericFeature minmax(NumericFeatureOptions(2).scaling(NumericScaling::MinMax));
  minmax->fit(torch::tensor({{0.0, 5.0}, {10.0, 5.0}, {5.0, 5.0}}));
  const auto mm = minmax(torch::tensor({{{2.5, 5.0}}}));
  CHECK(mm.sizes() == torch::IntArrayRef({1, 1, 2}));
  CHECK(mm[0][0][0].item<double>() == Approx(0.25));
  CHECK(mm[0][0][1].item<double>() == 0);  // constant column -> 0, not a division by zero

  NumericFeature unfitted;
  CHECK_THROWS_WITH(unfitted(torch::ones({2})), Catch::Contains("not fitted"));
  CHECK_THROWS_WITH(z->fit(torch::tensor({1.0, std::nan(""), 3.0})), Catch::Contains("row 1 is not finite"));
  CHECK_THROWS_WITH(z->fit(torch::zeros({0})), Catch::Contains("no rows"));
  CHECK_THROWS_WITH(minmax->fit(torch::ones({3})), Catch::Contains("[N, width] with width 2"));
  CHECK_THROWS_WITH(minmax(torch::ones({2, 3})), Catch::Contains("expected [..., 2], got [2, 3]"));
}

TEST_CASE("NumericFeature statistics travel with a saved model", "[nn]") {
  TempDir dir;
  NumericFeature fitted(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  fitted->fit(torch::tensor({3.0, 30.0, 300.0}));
  torch::save(fitted, dir.file("numeric.pt"));
  NumericFeature loaded(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  torch::load(loaded, dir.file("numeric.pt"));
  const auto x = torch::tensor({{7.0, 70.0}});
  CHECK(torch::equal(loaded(x), fitted(x)));
  // and an unfitted model loaded over a fitted one is unfitted again
  NumericFeature blank;
  torch::save(blank, dir.file("blank.pt"));
  NumericFeature was_fitted;
  was_fitted->fit(torch::tensor({1.0, 2.0}));
  was_fitted(x);
  torch::load(was_fitted, dir.file("blank.pt"));
  CHECK_THROWS_WITH(was_fitted(x), Catch::Contains("not fitted"));
}

TEST_CASE("DenseFeature passes vectors through or projects them", "[nn]") {
  DenseFeature raw(DenseFeatureOptions(4));
  const auto x = torch::randn({2, 3, 4});
  CHECK(torch::equal(raw(x), x));
  CHECK(raw->output_dim() == 4);
  DenseFeature projected(DenseFeatureOptions(4).projection(2));
  CHECK(projected(x).sizes() == torch::IntArrayRef({2, 3, 2}));
  CHECK(projected->output_dim() == 2);
  CHECK_THROWS_WITH(raw(torch::randn({2, 3, 5})), Catch::Contains("expected [..., 4], got [2, 3, 5]"));
}

TEST_CASE("Mlp blocks: widths, activations, normalisation, dropout", "[nn]") {
  torch::manual_seed(3);
  const auto x = torch::randn({4, 5, 6});
  for (auto act : {Activation::ReLU, Activation::GELU, Activation::SiLU})
    for (auto norm : {Normalization::None, Normalization::LayerNorm, Normalization::BatchNorm}) {
      Mlp mlp(MlpOptions(6, {8, 3}).activation(act).normalization(norm).dropout(0.1));
      CHECK(mlp(x).sizes() == torch::IntArrayRef({4, 5, 3}));
      mlp->eval();
      CHECK(torch::equal(mlp(x), mlp(x)));  // no dropout in eval mode
    }
  Mlp relu(MlpOptions(6, {8}));
  CHECK((relu(x) >= 0).all().item<bool>());
  Mlp ln(MlpOptions(6, {8}).normalization(Normalization::LayerNorm));
  CHECK(ln(x).mean(-1).abs().max().item<double>() < 1e-5);
  Mlp identity(MlpOptions(6, {}));
  CHECK(torch::equal(identity(x), x));
  CHECK(identity->output_dim() == 6);
  CHECK_THROWS_WITH(Mlp(MlpOptions(6, {8, 0})), Catch::Contains("widths[1] must be > 0"));
  CHECK_THROWS_WITH(Mlp(MlpOptions(6, {8}).dropout(1.0)), Catch::Contains("dropout"));
  CHECK_THROWS_WITH(relu(torch::randn({2, 7})), Catch::Contains("expected input [..., 6], got [2, 7]"));
}

TEST_CASE("dropout: keep rate, scaling, gradient, seeding, thread count", "[nn]") {
  const auto x = torch::ones({1000, 1000}, torch::requires_grad());
  torch::manual_seed(5);
  const auto y = rectrain::dropout(x, 0.1, true);
  const double kept = (y != 0).to(torch::kFloat64).mean().item<double>();
  CHECK(std::abs(kept - 0.9) < 0.002);  // 1M draws: sd 3e-4
  CHECK(torch::allclose(y.masked_select(y != 0), torch::full({1}, 1 / 0.9)));
  // Neighbouring elements are independent: no stripes in the mask.
  const auto k = (y != 0).to(torch::kFloat64);
  const double both = (k.narrow(1, 0, 999) * k.narrow(1, 1, 999)).mean().item<double>();
  CHECK(std::abs(both - 0.81) < 0.003);
  y.sum().backward();
  CHECK(torch::equal(x.grad(), y.detach()));  // d(x·mask)/dx = mask
  // Same seed, same mask, whatever the thread count; the next call differs.
  const int threads = at::get_num_threads();
  torch::manual_seed(5);
  at::set_num_threads(1);
  const auto again = rectrain::dropout(x.detach(), 0.1, true);
  at::set_num_threads(threads);
  CHECK(torch::equal(again, y.detach()));
  CHECK_FALSE(torch::equal(rectrain::dropout(x.detach(), 0.1, true), y.detach()));
  // Off in eval and at p = 0; other dtypes; bad p.
  CHECK(rectrain::dropout(x, 0.1, false).is_same(x));
  CHECK(rectrain::dropout(x, 0.0, true).is_same(x));
  const auto d = rectrain::dropout(torch::ones({100, 100}, torch::kFloat64), 0.5, true);
  CHECK(d.scalar_type() == torch::kFloat64);
  CHECK(std::abs((d != 0).to(torch::kFloat64).mean().item<double>() - 0.5) < 0.03);
  const auto b = rectrain::dropout(torch::ones({100, 100}, torch::kBFloat16), 0.5, true);
  CHECK(b.scalar_type() == torch::kBFloat16);
  CHECK_THROWS_WITH(rectrain::dropout(x, 1.0, true), Catch::Contains("p must be in [0, 1), got 1"));
  CHECK_THROWS_WITH(rectrain::dropout(x, -0.1, true), Catch::Contains("p must be in [0, 1)"));
}

TEST_CASE("relu_layer_norm_dropout equals bias, ReLU, LayerNorm and dropout, values and gradients", "[nn]") {
  torch::manual_seed(11);
  const int64_t n = 70, d = 48;  // 70 rows: a partial last chunk of 32
  const auto x0 = torch::randn({n, d});
  const auto bias0 = torch::randn({d}), gamma0 = torch::randn({d}), beta0 = torch::randn({d}), g = torch::randn({n, d});
  for (const double p : {0.0, 0.25}) {
    std::vector<torch::Tensor> a, b;  // x, bias, gamma, beta for each side
    for (const auto& t : {x0, bias0, gamma0, beta0}) {
      a.push_back(t.clone().requires_grad_(true));
      b.push_back(t.clone().requires_grad_(true));
    }
    torch::manual_seed(12);
    const auto fused = relu_layer_norm_dropout(a[0], a[1], a[2], a[3], 1e-5, p, true);
    torch::manual_seed(12);  // the same seed draw: the same mask
    const auto plain = rectrain::dropout(torch::layer_norm(torch::relu(b[0] + b[1]), {d}, b[2], b[3], 1e-5), p, true);
    CHECK(torch::allclose(fused, plain, 1e-5, 1e-5));
    (fused * g).sum().backward();
    (plain * g).sum().backward();
    for (size_t k = 0; k < a.size(); ++k) {
      INFO("input " << k << ", p " << p);
      CHECK(torch::allclose(a[k].grad(), b[k].grad(), 1e-4, 1e-4));
    }
  }
  // Not training: no dropout; bad input is named.
  CHECK(torch::allclose(relu_layer_norm_dropout(x0, bias0, gamma0, beta0, 1e-5, 0.5, false),
                        torch::layer_norm(torch::relu(x0 + bias0), {d}, gamma0, beta0, 1e-5), 1e-5, 1e-5));
  CHECK_THROWS_WITH(relu_layer_norm_dropout(x0.to(torch::kFloat64), bias0, gamma0, beta0, 1e-5, 0.1, true),
                    Catch::Contains("expected float32 CPU x [N, D]"));
  CHECK_THROWS_WITH(relu_layer_norm_dropout(x0, bias0, gamma0.narrow(0, 0, 5), beta0, 1e-5, 0.1, true),
                    Catch::Contains("[5]"));
  // Mlp takes the fused path for ReLU + LayerNorm in float32, the plain ops
  // in float64: the two agree, forward and backward.
  Mlp mlp(MlpOptions(d, {16, 8}).normalization(Normalization::LayerNorm));
  mlp(x0).pow(2).sum().backward();
  const auto grad32 = mlp->linears[0]->bias.grad().clone();
  const auto y32 = mlp(x0);
  for (auto& param : mlp->parameters()) param.mutable_grad().reset();
  mlp->to(torch::kFloat64);
  const auto y64 = mlp(x0.to(torch::kFloat64));
  CHECK(torch::allclose(y32.to(torch::kFloat64), y64, 1e-4, 1e-4));
  y64.pow(2).sum().backward();
  CHECK(torch::allclose(grad32.to(torch::kFloat64), mlp->linears[0]->bias.grad(), 1e-3, 1e-4));
}

TEST_CASE("Mlp BatchNorm takes its statistics from real rows only", "[nn]") {
  torch::manual_seed(4);
  Mlp mlp(MlpOptions(3, {4}).normalization(Normalization::BatchNorm));
  auto x = torch::randn({2, 5, 3});
  auto mask = torch::ones({2, 5}, torch::kBool);
  mask[1].narrow(0, 3, 2).fill_(false);
  const auto a = mlp->forward(x, mask);
  auto y = x.clone();
  y[1].narrow(0, 3, 2).fill_(1e6);  // garbage on padded rows
  const auto b = mlp->forward(y, mask);
  CHECK(torch::allclose(a.masked_select(mask.unsqueeze(-1)), b.masked_select(mask.unsqueeze(-1))));
  CHECK_FALSE(torch::allclose(mlp->forward(y), mlp->forward(x)));  // without the mask they would leak
}

TEST_CASE("Tower concatenates named features and clones deeply", "[nn]") {
  torch::manual_seed(5);
  auto tower = toy_item_tower(MlpBlocks({7}).activation(Activation::GELU).normalization(Normalization::LayerNorm));
  CHECK(tower->feature_dim() == 6 + 1 + 3);
  CHECK(tower->output_dim() == 7);
  CHECK(tower->columns() == std::vector<std::string>{"item", "duration", "item_embedding"});
  const auto batch = toy_batch(3, 4);
  const auto out = tower(batch);
  CHECK(out.sizes() == torch::IntArrayRef({3, 4, 7}));
  const auto names = tower->named_parameters().keys();
  CHECK(std::find(names.begin(), names.end(), "features.item.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "mlp.linear0.weight") != names.end());

  auto copy = std::dynamic_pointer_cast<TowerImpl>(tower->clone());
  REQUIRE(copy);
  CHECK(same_parameters(*tower, *copy));
  CHECK(torch::equal(copy->forward(batch), out));
  {
    torch::NoGradGuard no_grad;
    copy->feature<CategoricalFeatureImpl>("item")->weight.add_(1);
  }
  CHECK(torch::equal(tower(batch), out));  // the copy owns its own tables
  CHECK(copy->feature<NumericFeatureImpl>("duration")->is_fitted());

  Tower empty;
  CHECK_THROWS_WITH(empty(batch), Catch::Contains("no features"));
  CHECK_THROWS_WITH(tower->add("item", CategoricalFeature(2, 2)), Catch::Contains("already has a feature 'item'"));
  CHECK_THROWS_WITH(tower->add("a.b", CategoricalFeature(2, 2)), Catch::Contains("contain no '.'"));
  Tower missing;
  missing->add("gender", CategoricalFeature(3, 2));
  CHECK_THROWS_WITH(missing(batch), Catch::Contains("no column 'gender' in the batch"));
  CHECK_THROWS_WITH(tower->feature<NumericFeatureImpl>("item"), Catch::Contains("not of the requested type"));
}

TEST_CASE("head losses equal their definitions over the mask", "[nn][loss]") {
  torch::manual_seed(6);
  const auto batch = toy_batch(3, 5, 2);
  const auto m = batch.mask;
  const auto logits = torch::randn({3, 5});

  BinaryHead like(4, "like");
  const auto y = batch.label("like");
  const auto p = torch::sigmoid(logits);
  const auto bce = -(y * torch::log(p) + (1 - y) * torch::log(1 - p));
  CHECK(like->loss(logits, batch).item<double>() == Approx(bce.masked_select(m).mean().item<double>()));
  BinaryHead weighted(BinaryHeadOptions(4, "like").positive_weight(3));
  const auto wbce = -(3 * y * torch::log(p) + (1 - y) * torch::log(1 - p));
  CHECK(weighted->loss(logits, batch).item<double>() == Approx(wbce.masked_select(m).mean().item<double>()));

  const auto t = batch.label("timespent");
  RegressionHead mse(4, "timespent");
  CHECK(mse->loss(logits, batch).item<double>() ==
        Approx((logits - t).square().masked_select(m).mean().item<double>()));
  RegressionHead huber(RegressionHeadOptions(4, "timespent").loss(RegressionLoss::Huber).huber_delta(2).log1p_label(true));
  const auto d = (logits - torch::log1p(t)).abs();
  const auto h = torch::where(d < 2, 0.5 * d.square(), 2 * (d - 1));
  CHECK(huber->loss(logits, batch).item<double>() == Approx(h.masked_select(m).mean().item<double>()));
  CHECK(torch::allclose(huber->decode(torch::log1p(t)), t, 1e-5, 1e-5));

  RankingHead rank(RankingHeadOptions(4).loss(RankingLossOptions(RankingLossKind::RankNet)));
  CHECK(rank->loss(logits, batch).item<double>() ==
        Approx(ranknet_loss(logits, batch.label("target"), m).item<double>()));

  // Padded rows change nothing, whatever their predictions and labels.
  auto garbage = logits.clone();
  garbage.masked_fill_(~m, 1e30);
  Batch noisy = batch;
  noisy.labels = torch::OrderedDict<std::string, torch::Tensor>("Batch label");
  for (const auto& l : batch.labels) noisy.labels.insert(l.key(), l.value().masked_fill(~m, 7));
  for (HeadInterface* head : std::vector<HeadInterface*>{like.get(), weighted.get(), mse.get(), huber.get(), rank.get()}) {
    const auto clean = head->loss(logits, batch), dirty = head->loss(garbage, noisy);
    CHECK(dirty.item<double>() == Approx(clean.item<double>()));
  }

  Batch all_padded = batch;
  all_padded.mask = torch::zeros_like(m);
  auto x = logits.clone().requires_grad_(true);
  const auto none = like->loss(x, all_padded);
  none.backward();
  CHECK(none.item<double>() == 0);
  CHECK(torch::isfinite(x.grad()).all().item<bool>());

  CHECK_THROWS_WITH(like->loss(torch::randn({3, 4}), batch), Catch::Contains("label 'like' is [3, 5] but the prediction is [3, 4]"));
  {
    Batch bad = batch;
    bad.labels = torch::OrderedDict<std::string, torch::Tensor>("Batch label");
    auto like_labels = batch.label("like").clone();
    like_labels[2][1] = 2;
    auto time_labels = batch.label("timespent").clone();
    time_labels[1][3] = std::nan("");
    time_labels[0][4] = std::nan("");  // a padded row: ignored
    bad.labels.insert("like", like_labels);
    bad.labels.insert("timespent", time_labels);
    CHECK_THROWS_WITH(like->loss(logits, bad), Catch::Contains("label 'like' must be in [0, 1]; it is 2 at [2, 1]"));
    CHECK_THROWS_WITH(mse->loss(logits, bad), Catch::Contains("label 'timespent' must be finite; it is nan at [1, 3]"));
    BinaryHead unchecked(BinaryHeadOptions(4, "like").check_labels(false));
    CHECK(std::isfinite(unchecked->loss(logits, bad).item<double>()));
  }
  CHECK_THROWS_WITH(BinaryHead(4, "dwell")->loss(logits, batch), Catch::Contains("no label 'dwell'"));
  CHECK_THROWS_WITH(like(torch::randn({3, 5, 2})), Catch::Contains("expected hidden [..., 4], got [3, 5, 2]"));
}

TEST_CASE("masked_mean: plain and weighted means over the mask", "[nn][loss]") {
  const auto x = torch::tensor({{1.0f, 2.0f, 3.0f}, {4.0f, NAN, 6.0f}});
  const auto mask = torch::tensor({{true, true, false}, {true, false, true}});
  CHECK(masked_mean(x, mask).item<float>() == Approx((1 + 2 + 4 + 6) / 4.0));
  const auto w = torch::tensor({{1.0f, 3.0f, 100.0f}, {0.0f, 5.0f, 2.0f}});
  // (1·1 + 3·2 + 0·4 + 2·6) / (1 + 3 + 0 + 2): the padded NaN and its weight count for nothing.
  CHECK(masked_mean(x, mask, w).item<float>() == Approx(19.0 / 6.0));
  const auto finite = torch::tensor({{1.0f, 2.0f, 3.0f}, {4.0f, 5.0f, 6.0f}});
  CHECK(masked_mean(finite, torch::Tensor(), torch::ones_like(finite)).item<float>() == Approx(3.5));
  CHECK(masked_mean(x, mask, torch::zeros_like(x)).item<float>() == 0);
  // The gradient reaches only the kept entries, in proportion to their weights.
  const auto y = torch::tensor({{1.0f, 2.0f, 3.0f}, {4.0f, 5.0f, 6.0f}}).requires_grad_();
  masked_mean(y, mask, w).backward();
  CHECK(torch::allclose(y.grad(), torch::tensor({{1.0f, 3.0f, 0.0f}, {0.0f, 0.0f, 2.0f}}) / 6.0));
  CHECK_THROWS_WITH(masked_mean(x, mask, torch::ones({3})), Catch::Contains("weights must be a floating tensor shaped"));
  CHECK_THROWS_WITH(masked_mean(x, mask, -w), Catch::Contains("weights must be finite and >= 0"));
}

TEST_CASE("head and multi-task loss gradients match finite differences", "[nn][loss]") {
  auto batch = toy_batch(2, 4, 1, 7);
  for (auto& l : batch.labels) l.value() = l.value().to(torch::kFloat64);
  const auto x0 = torch::randn({2, 4}, torch::kFloat64);
  std::vector<std::shared_ptr<HeadInterface>> heads{
      BinaryHead(BinaryHeadOptions(3, "like").positive_weight(2)).ptr(),
      RegressionHead(3, "timespent").ptr(),
      RegressionHead(RegressionHeadOptions(3, "timespent").loss(RegressionLoss::Huber).log1p_label(true)).ptr(),
      RankingHead(3).ptr(),
      RankingHead(RankingHeadOptions(3).loss(RankingLossOptions(RankingLossKind::ListwiseSoftmax))).ptr()};
  for (auto& head : heads) check_gradient([&](const torch::Tensor& s) { return head->loss(s, batch); }, x0);

  MultiTaskLoss uncertain(MultiTaskLossOptions({"a", "b"}).weights({1.0, 0.5}).weighting(TaskWeighting::Uncertainty));
  uncertain->to(torch::kFloat64);
  const auto losses = torch::tensor({0.7, 2.5}, torch::kFloat64);
  auto combined = [&](const torch::Tensor& l) {
    torch::OrderedDict<std::string, torch::Tensor> d;
    d.insert("a", l[0]);
    d.insert("b", l[1]);
    return uncertain->forward(d);
  };
  check_gradient(combined, losses);
  // (its gradient with respect to the log-variances is checked analytically below)
}

TEST_CASE("MultiTaskLoss: fixed weights, uncertainty weighting, and bad task lists", "[nn][loss]") {
  torch::OrderedDict<std::string, torch::Tensor> losses;
  losses.insert("like", torch::tensor(0.4));
  losses.insert("target", torch::tensor(1.5));
  MultiTaskLoss fixed(MultiTaskLossOptions({"target", "like"}).weights({2.0, 0.5}));
  CHECK(fixed->forward(losses).item<double>() == Approx(2.0 * 1.5 + 0.5 * 0.4));
  CHECK(fixed->parameters().empty());

  MultiTaskLoss learned(MultiTaskLossOptions({"target", "like"}).weighting(TaskWeighting::Uncertainty));
  REQUIRE(learned->parameters().size() == 1);
  {
    torch::NoGradGuard no_grad;
    learned->log_variance.copy_(torch::tensor({0.5, -1.0}));
  }
  const double expected = 0.5 * std::exp(-0.5) * 1.5 + 0.25 + 0.5 * std::exp(1.0) * 0.4 - 0.5;
  const auto total = learned->forward(losses);
  CHECK(total.item<double>() == Approx(expected));
  total.backward();
  // d/ds_i = ½ − ½·exp(−s_i)·L_i
  CHECK(learned->log_variance.grad()[0].item<double>() == Approx(0.5 - 0.5 * std::exp(-0.5) * 1.5));
  CHECK(learned->log_variance.grad()[1].item<double>() == Approx(0.5 - 0.5 * std::exp(1.0) * 0.4));
  CHECK(torch::allclose(learned->effective_weights(), torch::tensor({0.5 * std::exp(-0.5), 0.5 * std::exp(1.0)})));

  // Minimising over s gives σ² = L: a noisy task is down-weighted.
  MultiTaskLoss adapt(MultiTaskLossOptions({"noisy", "clean"}).weighting(TaskWeighting::Uncertainty));
  torch::optim::Adam adam(adapt->parameters(), 0.05);
  for (int step = 0; step < 800; ++step) {
    torch::OrderedDict<std::string, torch::Tensor> l;
    l.insert("noisy", torch::tensor(4.0));
    l.insert("clean", torch::tensor(0.25));
    adam.zero_grad();
    adapt->forward(l).backward();
    adam.step();
  }
  CHECK(adapt->log_variance[0].item<double>() == Approx(std::log(4.0)).margin(0.02));
  CHECK(adapt->log_variance[1].item<double>() == Approx(std::log(0.25)).margin(0.02));

  torch::OrderedDict<std::string, torch::Tensor> partial;
  partial.insert("target", torch::tensor(1.0));
  CHECK_THROWS_WITH(fixed->forward(partial), Catch::Contains("no loss for task 'like'"));
  partial.insert("like", torch::tensor(1.0));
  partial.insert("lik", torch::tensor(1.0));
  CHECK_THROWS_WITH(fixed->forward(partial), Catch::Contains("loss 'lik' is not one of its tasks"));
  CHECK_THROWS_WITH(MultiTaskLoss(MultiTaskLossOptions({"a", "a"})), Catch::Contains("listed twice"));
  CHECK_THROWS_WITH(MultiTaskLoss(MultiTaskLossOptions({"a"}).weights({1, 2})), Catch::Contains("2 weights for 1 tasks"));
  CHECK_THROWS_WITH(MultiTaskLoss(MultiTaskLossOptions({"a"}).weights({-1})), Catch::Contains("finite and >= 0"));
}

namespace {

/// A head of a user's own, as docs/heads.md describes: own label, own loss.
class CompletionHeadImpl : public torch::nn::Cloneable<CompletionHeadImpl>, public HeadInterface {
 public:
  explicit CompletionHeadImpl(int64_t input_dim) : input_dim_(input_dim) { reset(); }
  void reset() override { linear = register_module("linear", torch::nn::Linear(input_dim_, 1)); }
  torch::Tensor forward(const torch::Tensor& hidden) override { return linear(hidden).squeeze(-1); }
  torch::Tensor loss(const torch::Tensor& prediction, const Batch& batch) override {
    const auto completion = (batch.label("timespent") / batch.feature("duration").clamp_min(1)).clamp_max(1);
    return rectrain::masked_mean(torch::huber_loss(prediction, completion, at::Reduction::None), batch.mask);
  }
  int64_t input_dim() const override { return input_dim_; }
  torch::nn::Linear linear{nullptr};

 private:
  int64_t input_dim_;
};
TORCH_MODULE(CompletionHead);

} // namespace

TEST_CASE("Ranker composes towers, a shared MLP and heads", "[nn]") {
  torch::manual_seed(8);
  auto ranker = toy_ranker();
  ranker->add_head("completion", CompletionHead(ranker->hidden_dim()), 0.1);
  const auto batch = toy_batch(4, 6, 2);
  const auto predictions = ranker->forward(batch);
  CHECK(predictions.keys() == std::vector<std::string>{"target", "like", "timespent", "completion"});
  for (const auto& p : predictions) CHECK(p.value().sizes() == torch::IntArrayRef({4, 6}));
  const auto losses = ranker->losses(predictions, batch);
  double expected = 0;
  const double weights[] = {1.0, 0.5, 0.25, 0.1};
  for (size_t k = 0; k < losses.size(); ++k) expected += weights[k] * losses[losses.keys()[k]].item<double>();
  const auto total = ranker->loss(predictions, batch);
  CHECK(total.item<double>() == Approx(expected));
  total.backward();
  for (const auto& p : ranker->named_parameters())
    if (p.key().find("features.user.weight") == std::string::npos && p.key().find("features.item.weight") == std::string::npos)
      CHECK(p.value().grad().defined());

  CHECK_THROWS_WITH(ranker->add_head("wide", BinaryHead(ranker->hidden_dim() + 1, "like")),
                    Catch::Contains("takes 7 inputs but the shared MLP gives 6"));
  CHECK_THROWS_WITH(ranker->add_head("like", BinaryHead(ranker->hidden_dim(), "like")), Catch::Contains("already has a head"));
  Ranker headless(toy_user_tower(), toy_item_tower());
  CHECK_THROWS_WITH(headless(batch), Catch::Contains("no heads"));
}

TEST_CASE("Ranker scores Linear heads in one product, other heads on their own", "[nn]") {
  torch::manual_seed(13);
  Tower user, item;
  user->add("user", CategoricalFeature(10, 4));
  item->add("item", CategoricalFeature(12, 4));
  Ranker ranker(user, item, RankerOptions(MlpBlocks({8})));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(h)).add_head("like", BinaryHead(h, "like"));
  ranker->add_head("timespent", RegressionHead(RegressionHeadOptions(h, "timespent")));
  Batch b;
  b.features.insert("user", torch::randint(0, 10, {3, 5}));
  b.features.insert("item", torch::randint(0, 12, {3, 5}));
  b.mask = torch::ones({3, 5}, torch::kBool);
  const auto out = ranker->forward(b);
  const auto hidden = ranker->hidden(b);
  for (const auto& name : ranker->head_names()) {
    auto* head = dynamic_cast<HeadInterface*>(ranker->heads[name].get());
    REQUIRE(head->score_layer() != nullptr);
    CHECK(out[name].sizes() == torch::IntArrayRef({3, 5}));
    CHECK(torch::allclose(out[name], head->forward(hidden), 1e-5, 1e-6));
  }
  // Gradients reach every head's own weights through the shared product.
  out["like"].sum().backward();
  CHECK(ranker->head<BinaryHeadImpl>("like")->linear->weight.grad().abs().sum().item<double>() > 0);
  const auto& untouched = ranker->head<RankingHeadImpl>("target")->linear->weight.grad();
  CHECK((!untouched.defined() || untouched.abs().sum().item<double>() == 0));
}

TEST_CASE("Ranker clones deeply and round-trips through torch::save", "[nn]") {
  torch::manual_seed(9);
  auto ranker = toy_ranker(RankerOptions(MlpBlocks({8, 6}).normalization(Normalization::BatchNorm))
                               .weighting(TaskWeighting::Uncertainty));
  const auto batch = toy_batch(3, 5, 1);
  // A few steps so BatchNorm running statistics and log-variances move.
  torch::optim::Adam adam(ranker->parameters(), 1e-2);
  for (int step = 0; step < 3; ++step) {
    adam.zero_grad();
    ranker->loss(ranker->forward(batch), batch).backward();
    adam.step();
  }
  ranker->eval();
  const auto reference = ranker->forward(batch);

  auto copy = std::dynamic_pointer_cast<RankerImpl>(ranker->clone());
  REQUIRE(copy);
  CHECK_FALSE(copy->is_training());
  CHECK(same_parameters(*ranker, *copy));
  CHECK(copy->head_names() == ranker->head_names());
  for (const auto& p : copy->forward(batch)) CHECK(torch::equal(p.value(), reference[p.key()]));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1);
  }
  for (const auto& p : ranker->forward(batch)) CHECK(torch::equal(p.value(), reference[p.key()]));

  TempDir dir;
  torch::save(ranker, dir.file("ranker.pt"));
  torch::manual_seed(99);  // different initial weights
  auto loaded = toy_ranker(RankerOptions(MlpBlocks({8, 6}).normalization(Normalization::BatchNorm))
                               .weighting(TaskWeighting::Uncertainty));
  torch::load(loaded, dir.file("ranker.pt"));
  loaded->eval();
  CHECK(same_parameters(*ranker, *loaded));
  CHECK(torch::equal(loaded->task_loss->log_variance, ranker->task_loss->log_variance));
  for (const auto& p : loaded->forward(batch)) CHECK(torch::equal(p.value(), reference[p.key()]));

  // Double precision end to end (LibTorch's module.to(dtype)).
  auto wide = std::dynamic_pointer_cast<RankerImpl>(ranker->clone());
  wide->to(torch::kFloat64);
  for (const auto& p : wide->forward(batch)) {
    CHECK(p.value().scalar_type() == torch::kFloat64);
    CHECK(torch::allclose(p.value().to(torch::kFloat32), reference[p.key()], 1e-4, 1e-5));
  }
}

TEST_CASE("a Ranker registers inside a user's own module", "[nn]") {
  struct WrapperImpl : torch::nn::Module {
    WrapperImpl() : ranker(register_module("ranker", toy_ranker())) {}
    Ranker ranker;
  };
  torch::manual_seed(10);
  auto wrapper = std::make_shared<WrapperImpl>();
  const auto names = wrapper->named_parameters().keys();
  CHECK(std::find(names.begin(), names.end(), "ranker.user_tower.features.user.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "ranker.heads.like.linear.weight") != names.end());
  CHECK(wrapper->ranker->forward(toy_batch(2, 3)).size() == 3);
}

TEST_CASE("TwoTower scores are dot products of the two towers", "[nn]") {
  torch::manual_seed(11);
  Tower user(MlpBlocks({4}));
  user->add("user", CategoricalFeature(7, 3));
  Tower item(MlpBlocks({4}));
  item->add("item", CategoricalFeature(11, 5));
  TwoTower model(user, item, TwoTowerOptions().temperature(0.5));
  const auto batch = toy_batch(2, 3);
  const auto u = user(batch), v = item(batch);
  CHECK(torch::allclose(model(batch), (u * v).sum(-1) / 0.5));
  TwoTower cosine(user, item, TwoTowerOptions().normalize(true));
  const auto c = cosine(batch);
  CHECK(torch::allclose(c, torch::cosine_similarity(u, v, -1), 1e-5, 1e-6));
  auto copy = std::dynamic_pointer_cast<TwoTowerImpl>(model->clone());
  CHECK(torch::equal(copy->forward(batch), model(batch)));
  pairwise_margin_loss(model(batch), batch.label("target"), batch.mask).backward();
  Tower narrow(MlpBlocks({2}));
  narrow->add("item", CategoricalFeature(11, 5));
  CHECK_THROWS_WITH(TwoTower(user, narrow), Catch::Contains("user tower gives 4 dimensions and the item tower 2"));
}

TEST_CASE("freezing: frozen groups stay put under Adam, unfrozen ones move", "[nn][freeze]") {
  torch::manual_seed(12);
  auto ranker = toy_ranker();
  const auto batch = toy_batch(4, 6);
  torch::optim::Adam adam(ranker->parameters(), torch::optim::AdamOptions(1e-2).weight_decay(1e-3));
  auto step = [&] {
    adam.zero_grad();
    ranker->loss(ranker->forward(batch), batch).backward();
    adam.step();
  };
  auto snapshot = [&](const std::string& pattern) {
    std::vector<torch::Tensor> out;
    for (const auto& name : matching_parameters(*ranker, pattern)) out.push_back(ranker->named_parameters()[name].clone());
    return out;
  };
  auto unchanged = [&](const std::string& pattern, const std::vector<torch::Tensor>& before) {
    const auto names = matching_parameters(*ranker, pattern);
    for (size_t k = 0; k < names.size(); ++k)
      if (!torch::equal(ranker->named_parameters()[names[k]], before[k])) return false;
    return true;
  };
  const std::vector<std::string> tables{"*.features.user.weight", "*.features.item.weight"};
  CHECK(matching_parameters(*ranker, "*.features.*.weight").size() == 3);  // user, item, item_embedding projection
  CHECK(matching_parameters(*ranker, "user_tower").size() == 1);

  // Train unfrozen first, so Adam has momentum for the tables: freezing must
  // stop them even so (a merely zeroed gradient would not).
  step();
  step();
  freeze(*ranker, tables);
  CHECK(is_frozen(*ranker, "user_tower.features.user.weight"));
  const auto tables_before = snapshot("*.features.user.weight");
  const auto items_before = snapshot("*.features.item.weight");
  const auto mlp_before = snapshot("mlp");
  for (int k = 0; k < 3; ++k) step();
  CHECK(unchanged("*.features.user.weight", tables_before));
  CHECK(unchanged("*.features.item.weight", items_before));
  CHECK_FALSE(unchanged("mlp", mlp_before));

  unfreeze(*ranker, tables);
  CHECK_FALSE(is_frozen(*ranker, "user_tower"));
  step();
  CHECK_FALSE(unchanged("*.features.user.weight", tables_before));
  CHECK_FALSE(unchanged("*.features.item.weight", items_before));

  CHECK_THROWS_WITH(freeze(*ranker, {"user_tower.feature"}), Catch::Contains("no parameter matches 'user_tower.feature'"));
  CHECK(rectrain::detail::glob_match("a*c*e", "abcde"));
  CHECK_FALSE(rectrain::detail::glob_match("a*c", "abcd"));
}

namespace {

/// The recipe's model at toy widths, on a loaded dataset.
Ranker recipe_ranker(const Dataset& ds) {
  NumericFeature age, duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  age->fit(ds.users["age"]);
  duration->fit(ds.items["duration"]);
  Tower user;
  user->add("user", CategoricalFeature(ds.num_users(), 16))
      .add("gender", CategoricalFeature(3, 2))
      .add("age", age);
  Tower item;
  item->add("item", CategoricalFeature(ds.num_items(), 16))
      .add("source", CategoricalFeature(ds.num_sources(), 8))
      .add("duration", duration)
      .add("item_embedding", DenseFeature(ds.items["embedding"].size(1)));
  Ranker ranker(user, item, RankerOptions(MlpBlocks({64, 32}).normalization(Normalization::LayerNorm)));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(h))
      .add_head("like", BinaryHead(h, "like"))
      .add_head("dislike", BinaryHead(h, "dislike"))
      .add_head("timespent", RegressionHead(RegressionHeadOptions(h, "timespent").log1p_label(true)));
  return ranker;
}

/// Target-head scores for every candidate row, one row per group.
torch::Tensor score_candidates(Ranker& ranker, const Dataset& ds) {
  torch::NoGradGuard no_grad;
  ranker->eval();
  const auto rows = torch::arange(ds.candidates.num_rows()).view({-1, 1});
  const auto scores = ranker->forward(candidate_batch_spec(ds).gather(rows))["target"];
  ranker->train();
  return scores.view(-1);
}

} // namespace

TEST_CASE("end to end: a Ranker on synthetic data beats popularity within a few epochs", "[nn][e2e]") {
  TempDir dir;
  generate_synthetic(dir.path().string(), SyntheticOptions::at_scale(0.003).seed(5));
  const auto ds = load_dataset(dir.path().string());
  REQUIRE(ds.candidates.num_rows() > 0);
  torch::manual_seed(5);
  auto ranker = recipe_ranker(ds);
  const auto spec = standard_batch_spec(ds);
  GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(), GroupSamplerOptions(20).batch_size(32).seed(5));
  torch::optim::Adam adam(ranker->parameters(), 3e-3);
  const auto users = ds.candidates["user"], targets = ds.candidates["target"];
  const double popularity = gauc(users, targets, popularity_scores(ds)).value;
  const double untrained = gauc(users, targets, score_candidates(ranker, ds)).value;
  double trained = 0;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    sampler.set_epoch(epoch);
    while (auto rows = sampler.next_batch()) {
      const auto batch = spec.gather(*rows);
      adam.zero_grad();
      const auto loss = ranker->loss(ranker->forward(batch), batch);
      REQUIRE(std::isfinite(loss.item<double>()));
      loss.backward();
      adam.step();
    }
    trained = gauc(users, targets, score_candidates(ranker, ds)).value;
    UNSCOPED_INFO("epoch " << epoch << ": GAUC " << trained);
  }
  INFO("popularity " << popularity << ", untrained " << untrained << ", trained " << trained);
  CHECK(trained > popularity + 0.02);
  CHECK(trained > untrained + 0.05);
}

TEST_CASE("Ranker on CUDA agrees with CPU", "[nn][cuda]") {
  if (!torch::cuda::is_available()) {
    SUCCEED("no CUDA device; skipped");
    return;
  }
  torch::manual_seed(13);
  auto cpu = toy_ranker(RankerOptions(MlpBlocks({8, 6}).normalization(Normalization::BatchNorm)));
  auto gpu = std::dynamic_pointer_cast<RankerImpl>(cpu->clone(torch::Device(torch::kCUDA)));
  REQUIRE(gpu);
  CHECK(gpu->parameters()[0].is_cuda());
  const auto batch = toy_batch(4, 6, 2);
  const auto cuda_batch = batch.to(torch::kCUDA);
  const auto loss_cpu = cpu->loss(cpu->forward(batch), batch);
  const auto loss_gpu = gpu->loss(gpu->forward(cuda_batch), cuda_batch);
  CHECK(loss_gpu.item<double>() == Approx(loss_cpu.item<double>()).epsilon(1e-4));
  loss_cpu.backward();
  loss_gpu.backward();
  const auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
  for (const auto& p : pc) {
    if (!p.value().grad().defined()) continue;
    INFO(p.key());
    CHECK(torch::allclose(pg[p.key()].grad().cpu(), p.value().grad(), 1e-3, 1e-5));
  }
  // Sparse gradients and freezing on the device too.
  CategoricalFeature sparse(CategoricalFeatureOptions(10, 2).sparse(true));
  sparse->to(torch::kCUDA);
  sparse(i64({3, 3, 7}).cuda()).sum().backward();
  CHECK(sparse->weight.grad().is_sparse());
}
