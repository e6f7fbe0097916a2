#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/data/batch_dataset.hpp>
#include <rectrain/data/group_sampler.hpp>

#include <algorithm>
#include <map>
#include <set>

using namespace rectrain;

namespace {

struct Rows {
  torch::Tensor users, targets;
};

// Interleaved rows of `n_users` users with histories 1..max_history.
Rows random_rows(int64_t n_users, int64_t max_history, uint64_t seed) {
  torch::manual_seed(seed);
  const auto lengths = torch::randint(1, max_history + 1, {n_users}, torch::kInt64);
  auto users = torch::repeat_interleave(torch::arange(n_users), lengths);
  users = users.index_select(0, torch::randperm(users.numel()));
  const auto targets = torch::randint(-1, 2, {users.numel()}, torch::kInt64) *
                       (torch::rand({users.numel()}) < 0.3).to(torch::kInt64);
  return {users, targets};
}

std::vector<torch::Tensor> epoch_batches(GroupSampler& sampler, int64_t epoch) {
  sampler.set_epoch(epoch);
  std::vector<torch::Tensor> out;
  while (auto b = sampler.next_batch()) out.push_back(b->to(torch::kCPU));
  return out;
}

// Checks every invariant of one epoch; returns the number of rows served.
int64_t check_epoch(const Rows& rows, const GroupSamplerOptions& o, const std::vector<torch::Tensor>& batches) {
  const auto users = rows.users.to(torch::kCPU);
  const auto targets = rows.targets.to(torch::kCPU);
  const int64_t* u = users.data_ptr<int64_t>();
  const int64_t* t = targets.data_ptr<int64_t>();
  std::set<int64_t> seen;
  int64_t served = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    const auto& batch = batches[b];
    REQUIRE(batch.dim() == 2);
    REQUIRE(batch.size(1) == o.group_size());
    if (b + 1 < batches.size()) REQUIRE(batch.size(0) == o.batch_size());
    REQUIRE(batch.size(0) <= o.batch_size());
    const int64_t* p = batch.data_ptr<int64_t>();
    for (int64_t g = 0; g < batch.size(0); ++g) {
      std::set<int64_t> group_users, group_targets;
      int64_t len = 0;
      for (int64_t k = 0; k < o.group_size(); ++k) {
        const int64_t r = p[g * o.group_size() + k];
        if (r < 0) {
          // Padding only at the end of a group.
          for (int64_t k2 = k; k2 < o.group_size(); ++k2) REQUIRE(p[g * o.group_size() + k2] == -1);
          break;
        }
        ++len;
        REQUIRE(seen.insert(r).second);  // no row twice in an epoch
        group_users.insert(u[r]);
        group_targets.insert(t[r]);
      }
      REQUIRE(len >= 1);
      REQUIRE(group_users.size() == 1);  // a group is one user's
      if (o.drop_short()) REQUIRE(len == o.group_size());
      if (o.drop_uniform()) REQUIRE(group_targets.size() >= 2);
      served += len;
    }
  }
  return served;
}

} // namespace

TEST_CASE("GroupSampler invariants on both backends", "[sampler]") {
  const Rows rows = random_rows(300, 90, 1);
  const int64_t n = rows.users.numel();
  const auto counts = torch::bincount(rows.users);
  for (const auto backend : {SamplerBackend::Cpu, SamplerBackend::TensorOps}) {
    for (const bool drop_short : {true, false}) {
      for (const bool drop_uniform : {true, false}) {
        INFO("backend " << int(backend) << " drop_short " << drop_short << " drop_uniform " << drop_uniform);
        auto o = GroupSamplerOptions(7).batch_size(16).drop_short(drop_short).drop_uniform(drop_uniform)
                     .seed(3).backend(backend);
        GroupSampler sampler(rows.users, rows.targets, o);
        const auto batches = epoch_batches(sampler, 0);
        const int64_t served = check_epoch(rows, o, batches);
        if (!drop_uniform) {
          // Without the uniform filter the count is exact.
          const int64_t expected = drop_short ? (torch::div(counts, 7, "floor") * 7).sum().item<int64_t>() : n;
          CHECK(served == expected);
        } else {
          CHECK(served > 0);
        }
        CHECK(static_cast<int64_t>(batches.size()) == sampler.num_batches());
      }
    }
  }
}

TEST_CASE("GroupSampler is deterministic per (seed, epoch) and epochs differ", "[sampler]") {
  const Rows rows = random_rows(200, 60, 2);
  for (const auto backend : {SamplerBackend::Cpu, SamplerBackend::TensorOps}) {
    auto o = GroupSamplerOptions(5).batch_size(8).seed(11).backend(backend);
    GroupSampler a(rows.users, rows.targets, o), b(rows.users, rows.targets, o);
    const auto a0 = epoch_batches(a, 0), a1 = epoch_batches(a, 1), a3 = epoch_batches(a, 3);
    // b jumps straight to epoch 3, then back to 0: the same batches.
    const auto b3 = epoch_batches(b, 3), b0 = epoch_batches(b, 0);
    REQUIRE(a0.size() == b0.size());
    for (size_t i = 0; i < a0.size(); ++i) CHECK(a0[i].equal(b0[i]));
    REQUIRE(a3.size() == b3.size());
    for (size_t i = 0; i < a3.size(); ++i) CHECK(a3[i].equal(b3[i]));
    CHECK_FALSE(torch::cat(a0).equal(torch::cat(a1)));
    GroupSampler c(rows.users, rows.targets, GroupSamplerOptions(o).seed(12));
    CHECK_FALSE(torch::cat(epoch_batches(c, 0)).equal(torch::cat(a0)));
  }
}

TEST_CASE("GroupSampler CPU path does not depend on the thread count", "[sampler]") {
  const Rows rows = random_rows(2000, 200, 3);
  auto o = GroupSamplerOptions(20).batch_size(64).seed(5);
  torch::set_num_threads(1);
  GroupSampler one(rows.users, rows.targets, o);
  const auto single = torch::cat(epoch_batches(one, 2));
  torch::set_num_threads(2);
  GroupSampler two(rows.users, rows.targets, o);
  CHECK(torch::cat(epoch_batches(two, 2)).equal(single));
}

TEST_CASE("GroupSampler shuffles within users uniformly", "[sampler]") {
  // One user with 4 rows, groups of 4, no filters: each row lands in each
  // slot about equally often across epochs.
  const auto users = torch::zeros({4}, torch::kInt64);
  GroupSampler s(users, {}, GroupSamplerOptions(4).drop_uniform(false).seed(9));
  std::map<std::pair<int64_t, int64_t>, int> hits;
  const int epochs = 4000;
  for (int e = 0; e < epochs; ++e) {
    const auto b = epoch_batches(s, e);
    REQUIRE(b.size() == 1);
    for (int64_t k = 0; k < 4; ++k) ++hits[{k, b[0][0][k].item<int64_t>()}];
  }
  for (const auto& [slot_row, count] : hits) CHECK(std::abs(count - epochs / 4) < 120);
}

TEST_CASE("GroupSampler explains impossible settings", "[sampler][bad-input]") {
  const auto users = torch::tensor({0, 0, 1, 1, 1}, torch::kInt64);
  const auto targets = torch::tensor({0, 1, 0, 1, 0}, torch::kInt64);
  CHECK_THROWS_WITH(GroupSampler(users, targets, GroupSamplerOptions(20)),
                    Catch::Contains("group_size 20 is larger than every user's history (longest: 3 rows)"));
  // Kept short groups are padded instead.
  GroupSampler padded(users, targets, GroupSamplerOptions(20).drop_short(false).seed(1));
  const auto b = padded.next_batch();
  REQUIRE(b);
  CHECK(b->size(0) == 2);
  CHECK((*b >= 0).sum().item<int64_t>() == 5);
  CHECK_THROWS_AS(GroupSampler(users, targets, GroupSamplerOptions(0)), Error);
  CHECK_THROWS_AS(GroupSampler(users.to(torch::kFloat32), targets), TensorError);
  CHECK_THROWS_AS(GroupSampler(torch::tensor({0, -1}, torch::kInt64), torch::tensor({0, 1}, torch::kInt64)),
                  TensorError);
  CHECK_THROWS_WITH(GroupSampler(torch::tensor({int64_t{5}, int64_t{1} << 40}), torch::tensor({0, 1}, torch::kInt64),
                                 GroupSamplerOptions(1)),
                    Catch::Contains("expected dense user indices"));
  CHECK_THROWS_WITH(GroupSampler(users, torch::Tensor(), GroupSamplerOptions(2)),
                    Catch::Contains("drop_uniform needs them"));
}

TEST_CASE("GroupSampler fits torch::data and resumes from a saved position", "[sampler]") {
  const Rows rows = random_rows(100, 50, 4);
  torch::data::samplers::Sampler<RowBlock>* base = nullptr;
  GroupSampler s(rows.users, rows.targets, GroupSamplerOptions(5).batch_size(4).seed(2));
  base = &s;
  base->reset(compat::nullopt);  // epoch 0
  CHECK(s.epoch() == 0);
  auto first = base->next(4);
  auto second = base->next(4);
  REQUIRE((first && second));
  torch::serialize::OutputArchive out;
  s.save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  auto third = base->next(4);
  REQUIRE(third);

  GroupSampler resumed(rows.users, rows.targets, GroupSamplerOptions(5).batch_size(4).seed(2));
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  resumed.load(in);
  CHECK(resumed.epoch() == 0);
  CHECK(resumed.position() == 8);
  CHECK(resumed.next(4)->rows.equal(third->rows));
  base->reset(compat::nullopt);  // moves on to epoch 1
  CHECK(s.epoch() == 1);
}

TEST_CASE("GroupSampler feeds torch::data's loader through BatchSpecDataset", "[sampler][pipeline]") {
  const Rows rows = random_rows(120, 30, 4);
  BatchSpec spec;
  spec.feature("row", torch::arange(rows.users.numel(), torch::kInt64)).label("target", rows.targets.to(torch::kFloat));
  GroupSampler reference(rows.users, rows.targets, GroupSamplerOptions(5).batch_size(4).seed(9));
  for (const int64_t workers : {0, 2}) {
    auto loader = torch::data::make_data_loader(
        BatchSpecDataset(spec), GroupSampler(rows.users, rows.targets, GroupSamplerOptions(5).seed(9)),
        torch::data::DataLoaderOptions().batch_size(4).workers(workers));
    for (int64_t epoch = 0; epoch < 2; ++epoch) {  // the loader moves the sampler on to each epoch
      reference.set_epoch(epoch);
      std::vector<torch::Tensor> expected;
      while (auto block = reference.next_batch()) expected.push_back(*block);
      std::vector<torch::Tensor> got;
      for (Batch& batch : *loader) {
        CHECK(batch.feature("row").equal(batch.rows));  // padding is -1 in both
        got.push_back(batch.rows);
      }
      INFO("workers " << workers << ", epoch " << epoch);
      REQUIRE(got.size() == expected.size());
      // Workers may deliver out of order: the same blocks, as a set.
      for (const auto& e : expected)
        CHECK(std::any_of(got.begin(), got.end(), [&](const torch::Tensor& g) { return g.equal(e); }));
    }
  }
}

TEST_CASE("GroupSampler on CUDA keeps the invariants", "[sampler][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: CUDA is not available");
    return;
  }
  const Rows rows = random_rows(500, 80, 5);
  const Rows on_gpu{rows.users.to(torch::kCUDA), rows.targets.to(torch::kCUDA)};
  auto o = GroupSamplerOptions(20).batch_size(32).seed(4);
  GroupSampler s(on_gpu.users, on_gpu.targets, o);
  s.set_epoch(0);
  auto b = s.next_batch();
  REQUIRE(b);
  CHECK(b->is_cuda());
  check_epoch(rows, o, epoch_batches(s, 0));
  GroupSampler again(on_gpu.users, on_gpu.targets, o);
  CHECK(torch::cat(epoch_batches(again, 0)).equal(torch::cat(epoch_batches(s, 0))));
}
