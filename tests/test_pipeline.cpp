#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/data/batch_pipeline.hpp>
#include <rectrain/data/synthetic.hpp>

using namespace rectrain;
using rectrain_test::i64;
using rectrain_test::TempDir;

TEST_CASE("BatchSpec gathers per-row and keyed columns with padding", "[pipeline]") {
  // 4 rows; row -> user (via key) and a per-row label.
  const auto user_of_row = i64({0, 1, -1, 1});
  const auto age = torch::tensor({20.0f, 30.0f});
  const auto emb = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}});
  const auto like = torch::tensor({1, 0, 1, 1}, torch::kUInt8);
  BatchSpec spec;
  spec.feature("user", user_of_row)
      .feature("age", age, user_of_row)
      .feature("emb", emb, user_of_row)
      .label("like", like, {}, torch::kFloat32);
  const Batch b = spec.gather(i64({3, 0, 2, -1}).view({2, 2}));
  CHECK(b.mask.equal(torch::tensor({true, true, true, false}).view({2, 2})));
  CHECK(b.feature("user").equal(i64({1, 0, -1, -1}).view({2, 2})));
  CHECK(b.feature("age").equal(torch::tensor({30.0f, 20.0f, 0.0f, 0.0f}).view({2, 2})));
  CHECK(b.feature("emb").sizes() == std::vector<int64_t>{2, 2, 2});
  CHECK(b.feature("emb")[0][0].equal(torch::tensor({3.0f, 4.0f})));
  CHECK(b.feature("emb")[1][0].equal(torch::zeros({2})));  // unknown user
  CHECK(b.label("like").equal(torch::tensor({1.0f, 1.0f, 1.0f, 0.0f}).view({2, 2})));
  CHECK_THROWS_WITH(b.label("dislike"), Catch::Contains("no label 'dislike'") && Catch::Contains("like"));
  CHECK_THROWS_AS(spec.feature("bad", torch::zeros({3})), TensorError);  // 3 rows, spec has 4
}

TEST_CASE("BatchPipeline delivers the sampler's batches in order for any worker count", "[pipeline]") {
  TempDir dir;
  generate_synthetic(dir.path().string(), SyntheticOptions::at_scale(0.002).seed(3));
  const Dataset ds = load_dataset(dir.path().string());
  const BatchSpec spec = standard_batch_spec(ds);
  const auto options = GroupSamplerOptions(20).batch_size(16).seed(8);

  GroupSampler reference_sampler(ds.interactions["user"], ds.interaction_targets(), options);
  reference_sampler.set_epoch(1);
  std::vector<Batch> expected;
  while (auto rows = reference_sampler.next_batch()) expected.push_back(spec.gather(*rows));
  REQUIRE(expected.size() > 3);

  for (int64_t workers : {0, 1, 3}) {
    INFO("workers " << workers);
    GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(), options);
    BatchPipeline pipeline(spec, sampler, BatchPipelineOptions().workers(workers).prefetch(2));
    pipeline.start_epoch(1);
    size_t i = 0;
    while (auto batch = pipeline.next()) {
      REQUIRE(i < expected.size());
      CHECK(batch->rows.equal(expected[i].rows));
      for (const auto& f : expected[i].features) CHECK(batch->feature(f.key()).equal(f.value()));
      for (const auto& l : expected[i].labels) CHECK(batch->label(l.key()).equal(l.value()));
      ++i;
    }
    CHECK(i == expected.size());
    const auto stats = pipeline.stats();
    CHECK(stats.batches == static_cast<int64_t>(expected.size()));
    int64_t real_rows = 0;
    for (const auto& e : expected) real_rows += e.mask.sum().item<int64_t>();
    CHECK(stats.rows == real_rows);
    CHECK(stats.gather_seconds > 0);
    // The next epoch runs too, after a full stop.
    pipeline.start_epoch(2);
    CHECK(pipeline.next().has_value());
  }
}

TEST_CASE("BatchPipeline full feature set and worker tuning", "[pipeline]") {
  TempDir dir;
  generate_synthetic(dir.path().string(), SyntheticOptions::at_scale(0.002).seed(4));
  const Dataset ds = load_dataset(dir.path().string());
  GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(), GroupSamplerOptions(20).batch_size(8));
  BatchPipeline pipeline(standard_batch_spec(ds), sampler);
  const int64_t chosen = pipeline.tune_workers(3, 8);
  CHECK(chosen >= 1);
  CHECK(chosen <= 3);
  CHECK(pipeline.tuned_rates().size() == 3);
  pipeline.start_epoch(0);
  const auto batch = pipeline.next();
  REQUIRE(batch);
  for (const auto& name : {"user", "item", "source", "duration", "item_embedding", "gender", "age"})
    CHECK(batch->features.contains(name));
  for (const auto& name : {"target", "timespent", "like", "dislike", "share", "bookmarks"}) {
    CHECK(batch->labels.contains(name));
    CHECK(batch->label(name).scalar_type() == torch::kFloat32);
  }
  CHECK(batch->feature("item_embedding").sizes() == std::vector<int64_t>{8, 20, 32});
  // Items' features agree with the tables they came from.
  const auto item = batch->feature("item").view(-1);
  CHECK(batch->feature("duration").view(-1).equal(ds.items["duration"].index_select(0, item)));
}

TEST_CASE("BatchPipeline passes worker errors to the consumer", "[pipeline][bad-input]") {
  // A key pointing outside its table fails inside a worker.
  BatchSpec spec;
  spec.feature("x", torch::zeros({2}), i64({0, 5, 1, 0}));
  GroupSampler sampler(i64({0, 0, 0, 0}), torch::tensor({0, 1, 0, 1}, torch::kInt64),
                       GroupSamplerOptions(4).seed(1));
  BatchPipeline pipeline(spec, sampler, BatchPipelineOptions().workers(2));
  pipeline.start_epoch(0);
  CHECK_THROWS(pipeline.next());
}

TEST_CASE("BatchPipeline copies to CUDA", "[pipeline][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: CUDA is not available");
    return;
  }
  TempDir dir;
  generate_synthetic(dir.path().string(), SyntheticOptions::at_scale(0.002).seed(5));
  const Dataset ds = load_dataset(dir.path().string());
  GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(), GroupSamplerOptions(20).batch_size(8));
  BatchPipeline pipeline(standard_batch_spec(ds), sampler, BatchPipelineOptions().device(torch::kCUDA));
  pipeline.start_epoch(0);
  const auto batch = pipeline.next();
  REQUIRE(batch);
  CHECK(batch->label("like").is_cuda());
  CHECK(batch->mask.is_cuda());
  // Sampling and gathering on the GPU end to end.
  GroupSampler gpu_sampler(ds.interactions["user"].cuda(), ds.interaction_targets().cuda(),
                           GroupSamplerOptions(20).batch_size(8));
  BatchPipeline gpu(standard_batch_spec(ds).to(torch::kCUDA), gpu_sampler,
                    BatchPipelineOptions().device(torch::kCUDA));
  gpu.start_epoch(0);
  CHECK(gpu.next()->feature("item_embedding").is_cuda());
}
