// Training components: checkpoints, the validation holdout, the epoch loop,
// scoring, ensembles, autocast; and rectrain-vk train / predict / --resume.

#include "helpers.hpp"
#include "vk_in_process.hpp"

#include <rectrain/rectrain.hpp>

#include <set>

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// A small recipe-shaped Ranker with dropout (so the generator matters).
Ranker small_ranker(const Dataset& ds) {
  NumericFeature duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  duration->fit(ds.items["duration"]);
  Tower user;
  user->add("user", CategoricalFeature(ds.num_users(), 8)).add("gender", CategoricalFeature(3, 2));
  Tower item;
  item->add("item", CategoricalFeature(ds.num_items(), 8)).add("duration", duration);
  Ranker ranker(user, item, RankerOptions(MlpBlocks({16}).normalization(Normalization::LayerNorm).dropout(0.2)));
  ranker->add_head("target", RankingHead(ranker->hidden_dim())).add_head("like", BinaryHead(ranker->hidden_dim(), "like"));
  return ranker;
}

const Dataset& synthetic_dataset() {
  static TempDir dir;
  static const Dataset ds = [&] {
    generate_synthetic(dir.path().string(), SyntheticOptions::at_scale(0.002).seed(9));
    return load_dataset(dir.path().string());
  }();
  return ds;
}

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (const auto& p : pa)
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

/// Everything one training run holds, built the same way every time.
struct Run {
  explicit Run(const Dataset& ds)
      : model((torch::manual_seed(3), small_ranker(ds))),
        adam(model->parameters(), 1e-2),
        sampler(ds.interactions["user"], ds.interaction_targets(), GroupSamplerOptions(20).batch_size(16).seed(3)),
        pipeline(standard_batch_spec(ds), sampler, BatchPipelineOptions().workers(2)) {
    state.add("model", *model).add("adam", adam).add("sampler", sampler).add("rng", rng).add("epochs", epochs);
  }
  void train(int64_t epoch) {
    // The tables are frozen in epoch 0, as the recipe's schedule does.
    for (auto* tower : {&model->user_tower, &model->item_tower})
      for (const char* column : {"user", "item"})
        if ((*tower)->features->contains(column)) {
          auto table = (*tower)->feature<CategoricalFeatureImpl>(column);
          epoch == 0 ? table->freeze() : table->unfreeze();
        }
    train_epoch(model, {&adam}, pipeline, epoch);
    epochs = epoch + 1;
  }
  Ranker model;
  torch::optim::Adam adam;
  GroupSampler sampler;
  BatchPipeline pipeline;
  at::Generator rng = at::globalContext().defaultGenerator(torch::kCPU);
  int64_t epochs = 0;
  Checkpoint state;
};

} // namespace

TEST_CASE("Checkpoint saves and loads every bound object, atomically", "[train]") {
  TempDir dir;
  const auto path = dir.file("state.pt");
  torch::manual_seed(1);
  torch::nn::Linear linear(3, 2);
  torch::optim::Adam adam(linear->parameters(), 0.1);
  linear->forward(torch::randn({4, 3})).sum().backward();
  adam.step();
  GroupSampler sampler(i64({0, 0, 0, 1, 1, 1}), {}, GroupSamplerOptions(2).drop_uniform(false).batch_size(1).seed(4));
  sampler.set_epoch(2);
  sampler.next_batch();
  int64_t count = 7;
  double rate = 0.25;
  std::string text = "line one\nline \"two\"\n";
  auto gen = compat::make_generator(torch::kCPU, 11);
  Checkpoint state;
  state.add("linear", *linear).add("adam", adam).add("sampler", sampler).add("count", count).add("rate", rate)
      .add("text", text).add("gen", gen);
  CHECK(state.names() == std::vector<std::string>{"linear", "adam", "sampler", "count", "rate", "text", "gen"});
  state.save(path);
  for (const auto& entry : fs::directory_iterator(dir.path())) CHECK(entry.path().filename() == "state.pt");

  const auto weight = linear->weight.detach().clone();
  const auto next_random = torch::rand({3}, gen);
  torch::optim::Adam scratch(linear->parameters(), 0.1);  // a fresh optimizer must get the moments back
  {
    torch::NoGradGuard no_grad;
    linear->weight.add_(1);
  }
  sampler.set_epoch(5);
  count = 0;
  rate = 0;
  text.clear();
  torch::rand({5}, gen);
  Checkpoint restored;
  restored.add("linear", *linear).add("adam", scratch).add("sampler", sampler).add("count", count).add("rate", rate)
      .add("text", text).add("gen", gen);
  restored.load(path);
  CHECK(torch::equal(linear->weight, weight));
  CHECK(sampler.epoch() == 2);
  CHECK(sampler.position() == 1);
  CHECK(count == 7);
  CHECK(rate == 0.25);
  CHECK(text == "line one\nline \"two\"\n");
  CHECK(torch::equal(torch::rand({3}, gen), next_random));
  // Adam's moments came back: one more identical step from both.
  const auto& moments = scratch.state();
  CHECK(moments.size() == 2);

  SECTION("errors name the file and the entry") {
    Checkpoint other;
    torch::nn::Linear wider(4, 2);
    other.add("linear", *wider);
    CHECK_THROWS_WITH(other.load(path), Catch::Contains(path) && Catch::Contains("entry 'linear'") &&
                                            Catch::Contains("'weight' is [2, 3] in the checkpoint but [2, 4]"));
    Checkpoint missing;
    int64_t x = 0;
    missing.add("absent", x);
    CHECK_THROWS_WITH(missing.load(path), Catch::Contains("no entry 'absent'"));
    write_file(dir.file("junk.pt"), "not an archive");
    CHECK_THROWS_WITH(missing.load(dir.file("junk.pt")), Catch::Contains("not a readable LibTorch archive"));
    CHECK_THROWS_WITH(missing.load(dir.file("none.pt")), Catch::Contains("no such file"));
    torch::serialize::OutputArchive plain;
    plain.write("absent", torch::tensor(1));
    plain.save_to(dir.file("plain.pt"));
    CHECK_THROWS_WITH(missing.load(dir.file("plain.pt")), Catch::Contains("not a rectrain checkpoint"));
    CHECK_THROWS_WITH(missing.add("absent", x), Catch::Contains("already bound"));
    CHECK_THROWS_WITH(missing.add("a.b", x), Catch::Contains("invalid entry name"));
  }
  SECTION("a failed save leaves the previous checkpoint") {
    const auto before = read_file(path);
    Checkpoint failing;
    failing.add("count", count);
    CHECK_THROWS(failing.save(dir.file("no-such-dir/state.pt")));
    CHECK(read_file(path) == before);
  }
}

TEST_CASE("holdout_last_views holds out chosen users' last views as groups", "[train]") {
  const auto& ds = synthetic_dataset();
  const auto h = holdout_last_views(ds, HoldoutOptions().views(5).min_views(12).fraction(0.2).seed(1));
  const auto users = ds.interactions["user"];
  const int64_t n = ds.num_interactions();
  REQUIRE(h.valid_rows.dim() == 2);
  REQUIRE(h.valid_rows.size(1) == 5);
  const auto counts = torch::bincount(users, {}, ds.num_users());
  const int64_t eligible = (counts >= 12).sum().item<int64_t>();
  CHECK(h.valid_users.numel() == std::llround(0.2 * static_cast<double>(eligible)));
  CHECK(h.train_rows.numel() + h.valid_rows.numel() == n);
  // Disjoint, together every row once.
  const auto all = std::get<0>(torch::cat({h.train_rows, h.valid_rows.reshape(-1)}).sort());
  CHECK(torch::equal(all, torch::arange(n)));
  CHECK(torch::equal(std::get<0>(h.train_rows.sort()), h.train_rows));
  // Each group: one user's rows, ascending, and nothing later of that user stays in training.
  const auto train_users = users.index_select(0, h.train_rows);
  for (int64_t k = 0; k < h.valid_rows.size(0); ++k) {
    const auto rows = h.valid_rows[k];
    const int64_t u = h.valid_users[k].item<int64_t>();
    CHECK((users.index_select(0, rows) == u).all().item<bool>());
    CHECK((rows.slice(0, 1) > rows.slice(0, 0, -1)).all().item<bool>());
    CHECK(counts[u].item<int64_t>() >= 12);
    const auto kept = h.train_rows.masked_select(train_users == u);
    CHECK(kept.numel() == counts[u].item<int64_t>() - 5);
    CHECK(kept.max().item<int64_t>() < rows.min().item<int64_t>());
  }
  // Same seed, same split; another seed, other users.
  const auto again = holdout_last_views(ds, HoldoutOptions().views(5).min_views(12).fraction(0.2).seed(1));
  CHECK(torch::equal(again.valid_rows, h.valid_rows));
  const auto other = holdout_last_views(ds, HoldoutOptions().views(5).min_views(12).fraction(0.2).seed(2));
  CHECK_FALSE(torch::equal(other.valid_users, h.valid_users));
  CHECK(holdout_last_views(ds, HoldoutOptions().views(5).min_views(12).max_users(3)).valid_users.numel() == 3);

  const auto train = with_interactions(ds, h.train_rows);
  CHECK(train.num_interactions() == h.train_rows.numel());
  CHECK(torch::equal(train.interactions["item"], ds.interactions["item"].index_select(0, h.train_rows)));
  CHECK(train.num_users() == ds.num_users());

  CHECK_THROWS_WITH(holdout_last_views(ds, HoldoutOptions().views(5).min_views(5)), Catch::Contains("min_views > views"));
  CHECK_THROWS_WITH(holdout_last_views(ds, HoldoutOptions().fraction(0)), Catch::Contains("fraction"));
  CHECK_THROWS_WITH(holdout_last_views(ds, HoldoutOptions().views(20).min_views(1000000)),
                    Catch::Contains("no user has 1000000 views"));
  CHECK_THROWS_WITH(ds.interactions.select(i64({0, n})), Catch::Contains("indices must lie in [0, "));
}

TEST_CASE("train_epoch trains, reports, and a resumed run ends where an uninterrupted one does", "[train]") {
  const auto& ds = synthetic_dataset();
  torch::set_num_threads(2);
  Run straight(ds);
  std::vector<EpochProgress> seen;
  TrainEpochOptions options;
  options.progress_seconds(0).on_progress([&](const EpochProgress& p) { seen.push_back(p); });
  const auto stats = train_epoch(straight.model, {&straight.adam}, straight.pipeline, 0, options);
  CHECK(stats.batches == straight.sampler.num_batches());
  CHECK(stats.rows > 0);
  int64_t real_rows = 0;
  straight.sampler.set_epoch(0);
  while (auto rows = straight.sampler.next_batch()) real_rows += (*rows >= 0).sum().item<int64_t>();
  CHECK(stats.rows == real_rows);
  REQUIRE(stats.head_losses.size() == 2);
  CHECK(stats.head_losses[0].first == "target");
  CHECK(stats.head_losses[1].first == "like");
  CHECK(std::isfinite(stats.loss));
  CHECK(stats.loss == Approx(stats.head_losses[0].second + stats.head_losses[1].second).epsilon(1e-6));
  CHECK(stats.data_wait_share() >= 0);
  CHECK(stats.data_wait_share() < 1);
  REQUIRE(static_cast<int64_t>(seen.size()) == stats.batches);
  CHECK(seen.back().batch == stats.batches);
  CHECK(seen.back().rows == stats.rows);
  CHECK(seen.front().eta_seconds() >= 0);

  // Three epochs straight, against one epoch, a checkpoint, fresh objects
  // built the same way, a load and two more epochs.
  TempDir dir;
  Run a(ds);
  for (int64_t e = 0; e < 3; ++e) a.train(e);
  Run b(ds);  // built after a has trained: both start from the same global generator state
  b.train(0);
  b.state.save(dir.file("ckpt.pt"));
  torch::rand({100});  // disturb the global generator: the checkpoint restores it
  Run resumed(ds);
  CHECK_FALSE(same_parameters(*resumed.model, *b.model));
  resumed.state.load(dir.file("ckpt.pt"));
  CHECK(resumed.epochs == 1);
  CHECK(same_parameters(*resumed.model, *b.model));
  for (int64_t e = resumed.epochs; e < 3; ++e) resumed.train(e);
  CHECK(same_parameters(*resumed.model, *a.model));
}

namespace {

/// What a Trainer drives, built the same way every time.
struct TrainerParts {
  explicit TrainerParts(const Dataset& ds)
      : model((torch::manual_seed(3), small_ranker(ds))),
        adam(model->parameters(), 1e-2),
        sampler(ds.interactions["user"], ds.interaction_targets(), GroupSamplerOptions(20).batch_size(16).seed(3)),
        pipeline(standard_batch_spec(ds), sampler, BatchPipelineOptions().workers(2)) {}
  PhaseSchedule schedule() const { return PhaseSchedule(1, 2, table_parameter_names(*model, {"user", "item"})); }
  Ranker model;
  torch::optim::Adam adam;
  GroupSampler sampler;
  BatchPipeline pipeline;
};

} // namespace

TEST_CASE("Trainer runs a schedule with validation, records and checkpoints; a cut run resumes bit for bit",
          "[train][trainer]") {
  const auto& ds = synthetic_dataset();
  torch::set_num_threads(2);
  TempDir dir;
  const auto split = split_holdout(ds, HoldoutOptions().views(10).min_views(20).fraction(0.3).seed(1));
  CHECK(split.train.num_interactions() + split.valid.num_interactions() == ds.num_interactions());
  CHECK(split.valid_rows.size(1) == 10);
  CHECK(split.valid_users.numel() == split.valid.num_interactions());
  const auto valid_spec = standard_batch_spec(split.valid);
  auto options_for = [&](TrainerParts& p, const std::string& path, std::vector<EpochRecord>& seen) {
    return TrainerOptions()
        .seed(5)
        .checkpoint_path(path)
        .measure([](EpochRecord& r) { r.model_gflops = 1, r.mm_gflops = 2; })
        .validate([&p, &split, &valid_spec] {
          return gauc(split.valid_users, split.valid_targets,
                      score_groups(p.model, valid_spec, split.valid_rows).reshape(-1));
        })
        .on_epoch([&seen](const EpochRecord& r) { seen.push_back(r); });
  };

  TrainerParts a(ds);
  std::vector<EpochRecord> seen_a;
  Trainer<Ranker> straight(a.model, {&a.adam}, a.pipeline, a.schedule(), options_for(a, dir.file("a.pt"), seen_a));
  REQUIRE(straight.fit());
  CHECK(straight.epochs_done() == 3);
  REQUIRE(seen_a.size() == 3);
  CHECK(seen_a[0].frozen);
  CHECK_FALSE(seen_a[1].frozen);
  CHECK(a.model->user_tower->feature<CategoricalFeatureImpl>("user")->weight.requires_grad());
  CHECK(seen_a[2].stats.epoch == 2);
  CHECK(seen_a[0].seed == 5);
  CHECK(seen_a[0].model_gflops == 1);
  CHECK(std::isfinite(seen_a[2].validation.value));
  CHECK(seen_a[2].validation.users > 0);
  CHECK_THAT(seen_a[0].summary(), Catch::StartsWith("seed 5 epoch 0 (frozen): loss ") &&
                                      Catch::Contains("GFLOP/s = 50% of torch::mm's 2.0"));
  CHECK(fs::exists(dir.file("a.pt")));
  CHECK(straight.records().size() == 3);
  CHECK(to_json_lines(straight.records()).size() == 3);

  // One epoch, then a fresh set of objects resumed from the checkpoint: the
  // same weights as the straight run, and the checkpoint keeps what the
  // caller bound too.
  std::vector<EpochRecord> seen_b;
  {
    TrainerParts b(ds);
    std::string tag = "first";
    Trainer<Ranker> cut(b.model, {&b.adam}, b.pipeline, b.schedule(), options_for(b, dir.file("b.pt"), seen_b));
    cut.checkpoint().add("tag", tag);
    CHECK_FALSE(cut.fit(1));
    CHECK(cut.epochs_done() == 1);
  }
  torch::rand({100});  // the checkpoint restores the generator
  TrainerParts c(ds);
  std::vector<EpochRecord> seen_c;
  std::string tag;
  Trainer<Ranker> resumed(c.model, {&c.adam}, c.pipeline, c.schedule(), options_for(c, dir.file("b.pt"), seen_c));
  resumed.checkpoint().add("tag", tag);
  CHECK(resumed.resume() == 1);
  CHECK(tag == "first");
  REQUIRE(resumed.records().size() == 1);
  CHECK(resumed.records()[0].stats.loss == Approx(seen_b[0].stats.loss).epsilon(1e-9));
  CHECK(resumed.fit());
  CHECK(seen_c.size() == 2);
  CHECK(resumed.records().size() == 3);
  CHECK(same_parameters(*c.model, *a.model));
  CHECK(resumed.fit());  // nothing left to train
  CHECK(seen_c.size() == 2);

  CHECK_THROWS_WITH(Trainer<Ranker>(a.model, {}, a.pipeline, a.schedule()), Catch::Contains("no optimizer"));
  TrainerParts d(ds);
  std::string other_tag;
  Trainer<Ranker> wrong(d.model, {&d.adam}, d.pipeline, d.schedule());
  wrong.checkpoint().add("other", other_tag);
  CHECK_THROWS_WITH(wrong.resume(dir.file("b.pt")), Catch::Contains("no entry 'other'"));
  CHECK_THROWS_WITH(wrong.resume(), Catch::Contains("no checkpoint path"));
}

TEST_CASE("Trainer keep_best ends on the best epoch's weights, through a resume; patience stops early",
          "[train][trainer]") {
  const auto& ds = synthetic_dataset();
  torch::set_num_threads(2);
  TempDir dir;
  // A scripted validation metric: epoch 1 is the best of three.
  const std::vector<double> script{0.6, 0.8, 0.7};
  auto options_for = [&](const std::string& path, std::vector<torch::Tensor>& weights, TrainerParts& p) {
    return TrainerOptions()
        .checkpoint_path(path)
        .keep_best(true)
        .validate([&script, &p] {
          // The epoch just trained: train_epoch set the sampler to it.
          return GroupMetric{script[static_cast<size_t>(p.sampler.epoch())], 10};
        })
        .on_epoch([&weights, &p](const EpochRecord&) {
          weights.push_back(p.model->item_tower->feature<CategoricalFeatureImpl>("item")->weight.detach().clone());
        });
  };
  TrainerParts a(ds);
  std::vector<torch::Tensor> seen;
  Trainer<Ranker> straight(a.model, {&a.adam}, a.pipeline, a.schedule(), options_for(dir.file("a.pt"), seen, a));
  REQUIRE(straight.fit());
  REQUIRE(seen.size() == 3);
  CHECK(straight.best_epoch() == 1);
  CHECK(straight.best_value() == 0.8);
  CHECK(straight.stopped_after() == -1);
  const auto& item = a.model->item_tower->feature<CategoricalFeatureImpl>("item")->weight;
  CHECK(torch::equal(item, seen[1]));
  CHECK_FALSE(torch::equal(seen[1], seen[2]));

  // Cut after epoch 1 and resumed: the same best weights at the end.
  {
    TrainerParts b(ds);
    std::vector<torch::Tensor> ignored;
    Trainer<Ranker> cut(b.model, {&b.adam}, b.pipeline, b.schedule(), options_for(dir.file("b.pt"), ignored, b));
    CHECK_FALSE(cut.fit(2));
  }
  TrainerParts c(ds);
  std::vector<torch::Tensor> ignored;
  Trainer<Ranker> resumed(c.model, {&c.adam}, c.pipeline, c.schedule(), options_for(dir.file("b.pt"), ignored, c));
  CHECK(resumed.resume() == 2);
  CHECK(resumed.best_epoch() == 1);
  REQUIRE(resumed.fit());
  CHECK(same_parameters(*c.model, *a.model));

  // Patience 1 with a falling metric: stops after epoch 1 (no better than 0).
  TrainerParts d(ds);
  const std::vector<double> falling{0.8, 0.7, 0.9};
  Trainer<Ranker> patient(d.model, {&d.adam}, d.pipeline, d.schedule(),
                          TrainerOptions().patience(1).validate([&falling, &d] {
                            return GroupMetric{falling[static_cast<size_t>(d.sampler.epoch())], 10};
                          }));
  REQUIRE(patient.fit());
  CHECK(patient.epochs_done() == 2);
  CHECK(patient.stopped_after() == 2);
  CHECK(patient.best_epoch() == 0);
  CHECK_THROWS_WITH(Trainer<Ranker>(d.model, {&d.adam}, d.pipeline, d.schedule(), TrainerOptions().keep_best(true)),
                    Catch::Contains("set validate"));
}

TEST_CASE("split_holdout refuses a validation set whose GAUC is undefined", "[train]") {
  auto ds = synthetic_dataset();
  ds.interactions.set("like", torch::zeros_like(ds.interactions["like"]));
  ds.interactions.set("dislike", torch::zeros_like(ds.interactions["dislike"]));
  CHECK_THROWS_WITH(split_holdout(ds, HoldoutOptions().views(10).min_views(20)),
                    Catch::Contains("validation GAUC is undefined"));
}

TEST_CASE("save_module / load_module refuse a model of other sizes; torch::load would not", "[train]") {
  const auto& ds = synthetic_dataset();
  TempDir dir;
  auto model = small_ranker(ds);
  save_module(dir.file("m.pt"), *model);
  auto same = small_ranker(ds);
  load_module(dir.file("m.pt"), *same);
  CHECK(same_parameters(*same, *model));
  Tower user;
  user->add("user", CategoricalFeature(ds.num_users() + 5, 8)).add("gender", CategoricalFeature(3, 2));
  NumericFeature duration;
  Tower item;
  item->add("item", CategoricalFeature(ds.num_items(), 8)).add("duration", duration);
  Ranker bigger(user, item, RankerOptions(MlpBlocks({16}).normalization(Normalization::LayerNorm).dropout(0.2)));
  bigger->add_head("target", RankingHead(bigger->hidden_dim())).add_head("like", BinaryHead(bigger->hidden_dim(), "like"));
  CHECK_THROWS_WITH(load_module(dir.file("m.pt"), *bigger),
                    Catch::Contains("m.pt") && Catch::Contains("in the checkpoint but") && Catch::Contains("other sizes"));
}

TEST_CASE("RunDirectory names a run's files and finds an earlier run's", "[train]") {
  TempDir dir;
  const RunDirectory run(dir.path().string(), {"checkpoint", "model"}, {"predictions.csv"});
  CHECK(run.seed_file("model", 12) == dir.file("model-seed12.pt"));
  uint64_t seed = 0;
  CHECK(run.seed_of("checkpoint-seed7.pt", seed));
  CHECK(seed == 7);
  CHECK_FALSE(run.seed_of("checkpoint-seed.pt", seed));
  CHECK_FALSE(run.seed_of("checkpoint-seedx.pt", seed));
  CHECK_FALSE(run.seed_of("other-seed1.pt", seed));
  CHECK(run.outputs().empty());
  for (const char* name : {"model-seed2.pt", "model-seed1.pt", "checkpoint-seed3.pt", "predictions.csv", "notes.txt"})
    write_file(dir.file(name), "x");
  CHECK(run.outputs() == std::vector<std::string>{"checkpoint-seed3.pt", "model-seed1.pt", "model-seed2.pt",
                                                  "predictions.csv"});
  CHECK(run.seed_files("model") == std::vector<std::string>{dir.file("model-seed1.pt"), dir.file("model-seed2.pt")});
  CHECK(run.file_of_other_seed({1, 2, 3}).empty());
  CHECK(run.file_of_other_seed({1, 2}) == "checkpoint-seed3.pt");
  run.remove(run.outputs());
  CHECK(run.outputs().empty());
  CHECK(fs::exists(dir.file("notes.txt")));
}

TEST_CASE("trainable_signals, add_signal_head and initialize_tables_from_als build the recipe's parts", "[train]") {
  const auto& ds = synthetic_dataset();
  std::vector<std::string> unused;
  const auto signals = trainable_signals(ds, false, &unused);
  CHECK(std::find(signals.begin(), signals.end(), "like") != signals.end());
  CHECK(std::find(signals.begin(), signals.end(), "timespent") != signals.end());
  auto ranker = small_ranker(ds);
  add_signal_head(*ranker, "dislike");
  add_signal_head(*ranker, "watched:binary");
  add_signal_head(*ranker, "minutes:regression", 0.5);
  CHECK(ranker->heads->contains("watched"));
  CHECK(ranker->heads->contains("minutes"));
  CHECK_THROWS_WITH(add_signal_head(*ranker, "minutes:count"), Catch::Contains("unknown signal 'minutes:count'"));

  // ALS rows into the id tables: unit rows (users and items with views),
  // the out-of-vocabulary row zero.
  Tower user, item;
  user->add("user", CategoricalFeature(ds.num_users(), 8 + 4));
  item->add("item", CategoricalFeature(ds.num_items(), 8)).add("source", CategoricalFeature(ds.num_sources(), 4));
  Ranker model(user, item, RankerOptions(MlpBlocks({8})));
  initialize_tables_from_als(*model, ds, AlsTablesOptions(ImplicitAlsOptions(8).iterations(2).seed(4)).source_factors(4));
  const auto item_table = find_categorical_feature(*model, "item")->weight;
  const auto norms = item_table.slice(0, 0, -1).norm(2, 1);
  CHECK(((norms - 1).abs() < 1e-4 | (norms == 0)).all().item<bool>());
  CHECK((norms > 0).sum().item<int64_t>() > ds.num_items() / 2);
  CHECK(item_table[-1].abs().sum().item<double>() == 0);
  const auto user_table = find_categorical_feature(*model, "user")->weight;
  CHECK(user_table.slice(1, 0, 8).slice(0, 0, -1).norm(2, 1).max().item<double>() == Approx(1).epsilon(1e-4));
  CHECK(user_table.slice(1, 8, 12).slice(0, 0, -1).norm(2, 1).max().item<double>() == Approx(1).epsilon(1e-4));
  CHECK_THROWS_WITH(initialize_tables_from_als(*model, ds, AlsTablesOptions(ImplicitAlsOptions(6).iterations(1))),
                    Catch::Contains("set_table('user', user_tower.features.user): CategoricalFeature weight"));
}

TEST_CASE("train_epoch stops on a loss that is no longer finite, naming the head", "[train]") {
  const auto& ds = synthetic_dataset();
  Run run(ds);
  {
    torch::NoGradGuard no_grad;
    run.model->heads->named_parameters()["like.linear.bias"].fill_(std::nan(""));
  }
  CHECK_THROWS_WITH(train_epoch(run.model, {&run.adam}, run.pipeline, 0),
                    Catch::Contains("the like loss became NaN in epoch 0 between batches 0 and 1") &&
                        Catch::Contains("lower the learning rate"));
  CHECK_THROWS_WITH(train_epoch(run.model, {}, run.pipeline, 0), Catch::Contains("no optimizer"));
}

TEST_CASE("score_groups scores groups in chunks, in eval mode, and restores the mode", "[train]") {
  const auto& ds = synthetic_dataset();
  torch::manual_seed(2);
  auto model = small_ranker(ds);
  const auto spec = standard_batch_spec(ds);
  auto rows = torch::arange(60).view({6, 10});
  rows[5][9] = -1;
  model->train();
  const auto scores = score_groups(model, spec, rows, ScoreOptions().chunk_rows(25));
  CHECK(model->is_training());
  model->eval();
  torch::NoGradGuard no_grad;
  const auto direct = model->forward(spec.gather(rows))["target"];
  CHECK(torch::allclose(scores.slice(0, 0, 5), direct.slice(0, 0, 5), 1e-5, 1e-6));
  CHECK(scores[5][9].item<float>() == 0.0f);
  CHECK(scores.sizes() == torch::IntArrayRef{6, 10});
  CHECK_THROWS_WITH(score_groups(model, spec, rows, ScoreOptions().head("watch")),
                    Catch::Contains("no head 'watch'") && Catch::Contains("target, like"));
  CHECK_THROWS_WITH(score_groups(model, spec, torch::arange(5)), Catch::Contains("expected [N, G] int64"));
  // A failure in the middle of scoring leaves the training mode as it was.
  model->train();
  CHECK_THROWS(score_groups(model, spec, rows, ScoreOptions().head("watch")));
  CHECK(model->is_training());
}

TEST_CASE("ensemble_scores averages standardised scores", "[train]") {
  const auto a = torch::tensor({1.0, 2.0, 3.0}), b = torch::tensor({30.0, 10.0, 20.0});
  const auto z = ensemble_scores({a, b});
  // z(a) = (-1, 0, 1), z(b) = (1, -1, 0): mean (0, -0.5, 0.5).
  CHECK(torch::allclose(z, torch::tensor({0.0f, -0.5f, 0.5f}), 1e-6, 1e-6));
  CHECK(torch::allclose(ensemble_scores({a, b}, EnsembleScaling::None), torch::tensor({15.5f, 6.0f, 11.5f})));
  CHECK(torch::equal(ensemble_scores({a}, EnsembleScaling::None), a.to(torch::kFloat32)));
  CHECK_THROWS_WITH(ensemble_scores({}), Catch::Contains("no scores"));
  CHECK_THROWS_WITH(ensemble_scores({a, torch::ones({4})}), Catch::Contains("model 1's scores must be 1-D"));
  CHECK_THROWS_WITH(ensemble_scores({a, torch::tensor({1.0, std::nan(""), 2.0})}), Catch::Contains("NaN"));
}

TEST_CASE("AutocastGuard runs matrix products in bfloat16 and restores the previous state", "[train]") {
  const auto x = torch::randn({4, 8}), w = torch::randn({8, 3});
  CHECK(torch::mm(x, w).scalar_type() == torch::kFloat32);
  {
    compat::AutocastGuard outer(torch::kCPU, at::kBFloat16);
    CHECK(torch::mm(x, w).scalar_type() == torch::kBFloat16);
    {
      compat::AutocastGuard inner(torch::kCPU, at::kBFloat16);
      CHECK(torch::mm(x, w).scalar_type() == torch::kBFloat16);
    }
    CHECK(torch::mm(x, w).scalar_type() == torch::kBFloat16);
  }
  CHECK(torch::mm(x, w).scalar_type() == torch::kFloat32);
  CHECK_THROWS_AS(compat::AutocastGuard(torch::Device(torch::kMeta), at::kBFloat16), std::invalid_argument);
}

TEST_CASE("train_epoch and score_groups under bf16 autocast: LayerNorm and BatchNorm blocks train", "[train]") {
  const auto& ds = synthetic_dataset();
  for (const auto norm : {Normalization::LayerNorm, Normalization::BatchNorm}) {
    Run run(ds);
    run.model->mlp = run.model->replace_module(
        "mlp", Mlp(MlpOptions(run.model->mlp->options.input_dim(), {16}).normalization(norm).dropout(0.2)));
    torch::optim::Adam adam(run.model->parameters(), 1e-2);
    const auto stats = train_epoch(run.model, {&adam}, run.pipeline, 0, TrainEpochOptions().autocast(at::kBFloat16));
    CHECK(std::isfinite(stats.loss));
    CHECK(stats.rows > 0);
    const auto rows = torch::arange(40).view({2, 20});
    const auto scores = score_groups(run.model, standard_batch_spec(ds), rows, ScoreOptions().autocast(at::kBFloat16));
    CHECK(scores.sizes() == torch::IntArrayRef({2, 20}));
    CHECK(torch::isfinite(scores).all().item<bool>());
  }
}

TEST_CASE("rectrain-vk train, predict and --resume", "[train][cli]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string flags = " --data " + data + " --frozen-epochs 1 --unfrozen-epochs 1 --hidden 32,16 --seeds 1,2";
  const auto full = vk_out("train" + flags + " --out " + dir.file("full"));
  INFO(full);
  REQUIRE_THAT(full, Catch::Contains("train: done"));
  CHECK_THAT(full, Catch::Contains("seed 1 epoch 0 (frozen)") && Catch::Contains("seed 2 epoch 1:") &&
                       Catch::Contains("ensemble: candidates GAUC"));
  for (const char* file : {"predictions.csv", "metrics.jsonl", "model-seed1.pt", "model-seed2.pt",
                           "checkpoint-seed1.pt", "learning_curve.dat", "learning_curve.gp"})
    CHECK(fs::exists(dir.file("full/") + file));
  // The same seeds give the same bytes (a fresh run into another --out);
  // other seeds give others.
  REQUIRE_THAT(vk_out("train" + flags + " --out " + dir.file("again")), Catch::Contains("train: done"));
  CHECK(read_file(dir.file("again/predictions.csv")) == read_file(dir.file("full/predictions.csv")));
  const std::string other_seeds = flags.substr(0, flags.find(" --seeds")) + " --seeds 3,4";
  REQUIRE_THAT(vk_out("train" + other_seeds + " --out " + dir.file("other")), Catch::Contains("train: done"));
  CHECK(read_file(dir.file("other/predictions.csv")) != read_file(dir.file("full/predictions.csv")));
  const auto log = read_file(dir.file("full/metrics.jsonl"));
  CHECK(std::count(log.begin(), log.end(), '\n') == 4);
  CHECK_THAT(log, Catch::Contains("{\"seed\":1,\"epoch\":0,\"frozen\":true,\"loss\":") &&
                      Catch::Contains("\"valid_gauc\":") && Catch::Contains("\"data_wait_share\":"));

  // Interrupted after 1 and after 2 more epochs, then resumed: the same bytes.
  const std::string cut = " --out " + dir.file("cut");
  CHECK_THAT(vk_out("train" + flags + cut + " --stop-after 1"), Catch::Contains("stopped after 1 epochs"));
  CHECK_FALSE(fs::exists(dir.file("cut/predictions.csv")));
  CHECK_THAT(vk_out("train" + flags + cut + " --resume --stop-after 2"),
             Catch::Contains("resumed from") && Catch::Contains("after epoch 1"));
  const auto resumed = vk_out("train" + flags + cut + " --resume");
  INFO(resumed);
  CHECK(read_file(dir.file("cut/predictions.csv")) == read_file(dir.file("full/predictions.csv")));
  const auto cut_log = read_file(dir.file("cut/metrics.jsonl"));
  CHECK(std::count(cut_log.begin(), cut_log.end(), '\n') == 4);
  CHECK_THAT(vk_out("train --data " + data + " --hidden 8 --frozen-epochs 1 --unfrozen-epochs 1 --seeds 1,2" +
                         cut + " --resume"),
             Catch::Contains("other settings") && Catch::Contains("hidden=32,16"));
  // A resumed run with fewer seeds would leave the others' models for predict.
  CHECK_THAT(vk_out("train" + flags.substr(0, flags.find(" --seeds")) + " --seeds 1" + cut + " --resume"),
             Catch::Contains("holds checkpoint-seed2.pt, from a seed this run does not train (--seeds 1)"));

  CHECK_THAT(full, Catch::Contains("training: 4 epochs in") && Catch::Contains("of torch::mm's rate"));

  // Lazy table updates, unfrozen from the start: SparseAdam's moments go
  // through the checkpoint, and a cut run still ends on the same bytes.
  const std::string sparse =
      " --data " + data + " --frozen-epochs 0 --unfrozen-epochs 2 --hidden 32,16 --seeds 1 --table-update lazy";
  REQUIRE_THAT(vk_out("train" + sparse + " --out " + dir.file("sparse")), Catch::Contains("train: done"));
  CHECK_THAT(vk_out("train" + sparse + " --out " + dir.file("sparse_cut") + " --stop-after 1"),
             Catch::Contains("stopped after 1 epochs"));
  CHECK_THAT(vk_out("train" + sparse + " --out " + dir.file("sparse_cut") + " --resume"),
             Catch::Contains("after epoch 1") && Catch::Contains("train: done"));
  CHECK(read_file(dir.file("sparse_cut/predictions.csv")) == read_file(dir.file("sparse/predictions.csv")));

  // predict rebuilds both models from their files: the same predictions.
  const auto predicted = vk_out("predict --data " + data + " --models " + dir.file("full") +
                                     " --predictions " + dir.file("again.csv"));
  INFO(predicted);
  CHECK_THAT(predicted, Catch::Contains("from 2 model(s)"));
  CHECK(read_file(dir.file("again.csv")) == read_file(dir.file("full/predictions.csv")));
  CHECK_THAT(vk_out("predict --data " + data + " --models " + dir.file("cut/metrics.jsonl")),
             Catch::Contains("not a readable LibTorch archive"));
  CHECK_THAT(vk_out("train --help"), Catch::Contains("--no-als") && Catch::Contains("--no-freeze") &&
                                                   Catch::Contains("--seeds") && Catch::Contains("--resume"));
}

TEST_CASE("training_matmuls lists a step's products; frozen inputs need no input gradient", "[train]") {
  using namespace rectrain;
  Tower user, item;
  user->add("user", CategoricalFeature(10, 6));
  item->add("item", CategoricalFeature(12, 10));
  Ranker ranker(user, item, RankerOptions(MlpBlocks({8})));
  ranker->add_head("target", RankingHead(8)).add_head("like", BinaryHead(8, "like"));
  const int64_t rows = 100;
  // Trainable tables: the first layer's input gradient too.
  auto products = training_matmuls(ranker, rows);
  REQUIRE(products.size() == 9);  // 3 for the MLP layer, 3 per head
  CHECK(products[0].m == rows);
  CHECK(products[0].k == 16);
  CHECK(products[0].n == 8);
  CHECK(products[1].transposed_left);
  const double unfrozen = 3 * 2.0 * rows * 16 * 8 + 2 * 3 * 2.0 * rows * 8;
  CHECK(matmul_flops(products) == Approx(unfrozen));
  user->feature<CategoricalFeatureImpl>("user")->freeze();
  item->feature<CategoricalFeatureImpl>("item")->freeze();
  products = training_matmuls(ranker, rows);
  CHECK(products.size() == 8);
  CHECK(matmul_flops(products) == Approx(unfrozen - 2.0 * rows * 16 * 8));
  CHECK(matmul_gflops(products, torch::kCPU, 2) > 0);
  CHECK_THROWS_WITH(matmul_gflops({}, torch::kCPU), Catch::Contains("no products"));
}

TEST_CASE("SparseAdam: Adam's update of every row, or of the rows a step touched", "[train][sparse_adam]") {
  torch::manual_seed(3);
  const auto init = torch::randn({6, 4});
  const auto options = torch::optim::AdamOptions(0.05).weight_decay(0.01);
  auto loss_of = [](const torch::Tensor& table, const torch::Tensor& ids, bool sparse, int step) {
    const auto rows = torch::embedding(table, ids, -1, false, sparse);
    const auto target = torch::arange(rows.numel()).view(rows.sizes()).to(table.scalar_type()) - 3.0 * step;
    return (rows * target).pow(2).sum();
  };
  // Five steps of torch::optim::Adam on dense gradients beside SparseAdam
  // on sparse ones, each step using `ids(step)`.
  auto compare_with_adam = [&](torch::ScalarType dtype, SparseAdamRows mode, auto ids) {
    auto dense = init.to(dtype).clone().requires_grad_(true), sparse = init.to(dtype).clone().requires_grad_(true);
    torch::optim::Adam adam({dense}, options);
    SparseAdam sparse_adam({sparse}, options, mode);
    for (int step = 0; step < 5; ++step) {
      adam.zero_grad();
      sparse_adam.zero_grad();
      loss_of(dense, ids(step), false, step).backward();
      loss_of(sparse, ids(step), true, step).backward();
      REQUIRE(sparse.grad().is_sparse());
      adam.step();
      sparse_adam.step();
      INFO("step " << step << ", dtype " << dtype << ", max difference " << (sparse - dense).abs().max().item<double>());
      CHECK(torch::allclose(sparse, dense, 1e-5, 1e-5));  // float32 rounding of a fused pass vs separate ops
    }
  };
  const auto every_row = [](int) { return torch::tensor({5, 0, 1, 2, 3, 4, 0}, torch::kInt64); };  // row 0 twice
  const auto some_rows = [](int step) {
    return step % 2 ? torch::tensor({1, 3, 3}, torch::kInt64) : torch::tensor({0, 5}, torch::kInt64);
  };

  SECTION("All: Adam's values, whichever rows a step used (fused float32 pass, and the float64 ops)") {
    compare_with_adam(torch::kFloat, SparseAdamRows::All, every_row);
    compare_with_adam(torch::kFloat, SparseAdamRows::All, some_rows);
    compare_with_adam(torch::kDouble, SparseAdamRows::All, some_rows);
  }

  SECTION("All without weight decay (moments held scaled): Adam's values over 300 steps, through a rescale and a "
          "checkpoint") {
    const auto no_decay = torch::optim::AdamOptions(0.01);
    const auto start = torch::randn({40, 37});  // 37: vector lanes and a scalar tail
    auto dense = start.clone().requires_grad_(true), sparse = start.clone().requires_grad_(true);
    torch::optim::Adam adam({dense}, no_decay);
    SparseAdam sparse_adam({sparse}, no_decay);
    torch::Tensor resumed;
    std::unique_ptr<SparseAdam> resumed_adam;
    TempDir dir;
    auto step_loss = [](const torch::Tensor& table, int step, bool is_sparse) {
      // A few rows a step, one twice; the others coast on their momentum.
      const auto ids = torch::tensor({step % 40, (7 * step + 3) % 40, step % 40}, torch::kInt64);
      const auto rows = torch::embedding(table, ids, -1, false, is_sparse);
      return (rows - std::sin(0.1 * step)).pow(2).sum();
    };
    for (int step = 0; step < 300; ++step) {  // β1^k < 1e-12 at k = 263: the moments are rescaled once
      if (step == 150) {
        const auto path = dir.file("scaled.pt");
        torch::save(sparse_adam, path);
        resumed = sparse.detach().clone().requires_grad_(true);
        resumed_adam = std::make_unique<SparseAdam>(std::vector<torch::Tensor>{resumed}, no_decay);
        torch::load(*resumed_adam, path);
      }
      adam.zero_grad();
      sparse_adam.zero_grad();
      step_loss(dense, step, false).backward();
      step_loss(sparse, step, true).backward();
      adam.step();
      sparse_adam.step();
      if (resumed_adam) {
        resumed_adam->zero_grad();
        step_loss(resumed, step, true).backward();
        resumed_adam->step();
      }
    }
    INFO("largest difference from Adam " << (sparse - dense).abs().max().item<double>());
    CHECK(torch::allclose(sparse, dense, 1e-4, 1e-5));
    CHECK(resumed.equal(sparse));  // save() unscales, so both went on from Adam's own moments
    // Unscaled, the state is Adam's: the moments of the last step agree.
    sparse_adam.unscale_moments();
    const auto& mine = static_cast<torch::optim::AdamParamState&>(*sparse_adam.state().begin()->second);
    const auto& theirs = static_cast<torch::optim::AdamParamState&>(*adam.state().begin()->second);
    CHECK(torch::allclose(mine.exp_avg(), theirs.exp_avg(), 1e-4, 1e-6));
    CHECK(torch::allclose(mine.exp_avg_sq(), theirs.exp_avg_sq(), 1e-4, 1e-7));
  }

  SECTION("Touched: Adam's values when every row is used at every step") {
    compare_with_adam(torch::kFloat, SparseAdamRows::Touched, every_row);
  }

  SECTION("Touched: untouched rows and their moments stay as they were") {
    auto table = init.clone().requires_grad_(true);
    SparseAdam sparse_adam({table}, options, SparseAdamRows::Touched);
    CHECK(sparse_adam.rows() == SparseAdamRows::Touched);
    const auto ids = torch::tensor({1, 3}, torch::kInt64);
    loss_of(table, ids, true, 0).backward();
    sparse_adam.step();
    const auto untouched = torch::tensor({0, 2, 4, 5}, torch::kInt64);
    CHECK(table.detach().index_select(0, untouched).equal(init.index_select(0, untouched)));
    CHECK_FALSE(table.detach().index_select(0, ids).equal(init.index_select(0, ids)));
  }

  SECTION("its state goes through a checkpoint and the next step is the same") {
    for (const auto mode : {SparseAdamRows::All, SparseAdamRows::Touched}) {
      const auto ids = torch::tensor({1, 3, 3}, torch::kInt64);
      auto a = init.clone().requires_grad_(true);
      SparseAdam first({a}, options, mode);
      for (int step = 0; step < 2; ++step) {
        first.zero_grad();
        loss_of(a, ids, true, step).backward();
        first.step();
      }
      TempDir dir;
      const auto path = dir.file("sparse_adam.pt");
      torch::save(first, path);
      auto b = a.detach().clone().requires_grad_(true);
      SparseAdam second({b}, options, mode);
      torch::load(second, path);
      first.zero_grad();
      second.zero_grad();
      loss_of(a, ids, true, 2).backward();
      loss_of(b, ids, true, 2).backward();
      first.step();
      second.step();
      CHECK(a.equal(b));
    }
  }

  SECTION("a dense gradient is refused with the parameter's shape; so are bad options") {
    auto table = init.clone().requires_grad_(true);
    SparseAdam sparse_adam({table}, options);
    loss_of(table, torch::tensor({1}, torch::kInt64), false, 0).backward();
    CHECK_THROWS_WITH(sparse_adam.step(), Catch::Contains("parameter [6, 4] has a dense gradient"));
    CHECK_THROWS_AS(SparseAdam({table}, torch::optim::AdamOptions(0.1).amsgrad(true)), Error);
    CHECK_THROWS_AS(SparseAdam({table}, torch::optim::AdamOptions(-1.0)), Error);
  }
}
