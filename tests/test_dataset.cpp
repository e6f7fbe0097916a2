#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/data/batch.hpp>
#include <rectrain/data/challenge_schema.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/group_sampler.hpp>
#include <rectrain/data/synthetic.hpp>
#include <rectrain/metrics/baselines.hpp>
#include <rectrain/metrics/ranking.hpp>

#include <cstdlib>

using namespace rectrain;
using rectrain_test::i64;
using rectrain_test::input_error;
using rectrain_test::TempDir;
using rectrain_test::write_file;

namespace {

void write_small_dataset(const TempDir& dir) {
  write_file(dir.file("interactions.csv"),
             "user_id,item_id,timespent,like,dislike,share,bookmarks,watch_ratio\n"
             "100,7,10,1,0,0,0,0.5\n"
             "5,7,3.5,0,1,0,0,0.1\n"
             "100,9,0,0,0,1,1,0.0\n"
             "42,11,60,1,0,0,1,1.0\n");
  write_file(dir.file("users.csv"), "user_id,gender,age\n100,1,25\n42,2,40\n777,1,30\n");
  write_file(dir.file("items.csv"),
             "item_id,source_id,duration,emb_1,emb_0\n7,3,30,0.5,1.5\n11,0,12,-1,2\n13,8,5,0,0\n");
  write_file(dir.file("candidates.csv"), "user_id,item_id,target\n100,11,1\n100,13,0\n999,7,-1\n42,12345,0\n");
}


} // namespace

TEST_CASE("load_dataset remaps ids and joins metadata", "[dataset]") {
  TempDir dir;
  write_small_dataset(dir);
  const Dataset ds = load_dataset(dir.path().string());
  // Users: 5, 42, 100 from interactions and 777 from users.csv.
  CHECK(ds.user_ids.raw_ids().equal(i64({5, 42, 100, 777})));
  CHECK(ds.item_ids.raw_ids().equal(i64({7, 9, 11, 13})));
  CHECK(ds.source_ids.raw_ids().equal(i64({3, 8})));
  CHECK(ds.interactions["user"].equal(i64({2, 0, 2, 1})));
  CHECK(ds.interactions["item"].equal(i64({0, 0, 1, 2})));
  CHECK(ds.signal_names() ==
        std::vector<std::string>{"timespent", "like", "dislike", "share", "bookmarks", "watch_ratio"});
  CHECK(ds.interactions["watch_ratio"].equal(torch::tensor({0.5f, 0.1f, 0.0f, 1.0f})));
  CHECK(ds.interaction_targets().equal(torch::tensor({1, -1, 0, 1}, torch::kInt8)));
  CHECK(ds.users["gender"].equal(i64({0, 2, 1, 1})));
  CHECK(ds.users["age"].equal(torch::tensor({0.0f, 40.0f, 25.0f, 30.0f})));
  CHECK(ds.items["source"].equal(i64({0, -1, -1, 1})));  // item 9 absent, item 11 source 0
  CHECK(ds.items["duration"].equal(torch::tensor({30.0f, 0.0f, 12.0f, 5.0f})));
  REQUIRE(ds.embedding_dim() == 2);
  CHECK(ds.items["embedding"][0].equal(torch::tensor({1.5f, 0.5f})));  // emb_0, emb_1 by name
  CHECK(ds.items["embedding"][1].equal(torch::zeros({2})));
  // Cold candidates are kept and scored: unknown user 999 and item 12345 map to -1.
  CHECK(ds.candidates["user"].equal(i64({2, 2, -1, 1})));
  CHECK(ds.candidates["item"].equal(i64({2, 3, 0, -1})));
  CHECK(ds.candidates["target"].equal(i64({1, 0, -1, 0})));
  const auto pop = popularity_scores(ds);
  CHECK(pop.equal(torch::tensor({1.0f, 0.0f, 2.0f, 0.0f})));
  CHECK(torch::isfinite(like_rate_scores(ds)).all().item<bool>());
}

TEST_CASE("dataset cache round-trips every tensor", "[dataset][cache]") {
  TempDir dir;
  write_small_dataset(dir);
  const Dataset ds = load_dataset(dir.path().string());
  save_dataset_cache(ds, dir.file("cache.pt"));
  const Dataset back = load_dataset_cache(dir.file("cache.pt"));
  CHECK(back.user_ids.raw_ids().equal(ds.user_ids.raw_ids()));
  CHECK(back.item_ids.raw_ids().equal(ds.item_ids.raw_ids()));
  CHECK(back.source_ids.raw_ids().equal(ds.source_ids.raw_ids()));
  const std::vector<std::pair<const Table*, const Table*>> tables{
      {&ds.interactions, &back.interactions}, {&ds.users, &back.users},
      {&ds.items, &back.items}, {&ds.candidates, &back.candidates}};
  for (const auto& [a, b] : tables) {
    REQUIRE(a->names() == b->names());
    for (const auto& name : a->names()) CHECK((*a)[name].equal((*b)[name]));
  }
  CHECK(back.item_ids.index_of(13) == 3);
  write_file(dir.file("junk.pt"), "not a cache");
  CHECK_THROWS_AS(load_dataset_cache(dir.file("junk.pt")), InputError);
  CHECK_THROWS_AS(load_dataset_cache(dir.file("absent.pt")), InputError);
}

TEST_CASE("tables saved as a dict of tensors load like CSV", "[dataset][tensor-file]") {
  TempDir csv_dir, pt_dir;
  write_small_dataset(csv_dir);
  const Dataset from_csv = load_dataset(csv_dir.path().string());
  const Table raw = read_csv(csv_dir.file("interactions.csv"),
                             {{"user_id", CsvType::Id}, {"item_id", CsvType::Id}},
                             CsvOptions().extra_columns(ExtraColumns::KeepAsNumber));
  // Python users hand over int32 ids and bool flags; both are accepted.
  Table handed;
  handed.add("user_id", raw["user_id"].to(torch::kInt32));
  handed.add("item_id", raw["item_id"]);
  handed.add("timespent", raw["timespent"].to(torch::kFloat64));
  for (const auto& f : {"like", "dislike", "share", "bookmarks"}) handed.add(f, raw[f].to(torch::kBool));
  handed.add("watch_ratio", raw["watch_ratio"]);
  save_tensor_table(handed, pt_dir.file("interactions.pt"));
  for (const auto& name : {"users.csv", "items.csv", "candidates.csv"})
    write_file(pt_dir.file(name), rectrain_test::read_file(csv_dir.file(name)));
  const Dataset from_pt = load_dataset(pt_dir.path().string());
  for (const auto& name : from_csv.interactions.names())
    CHECK(from_pt.interactions[name].equal(from_csv.interactions[name]));

  // Bad tensors name the file and column.
  Table bad;
  bad.add("user_id", torch::tensor({1, -2}, torch::kInt64));
  bad.add("item_id", i64({1, 2}));
  save_tensor_table(bad, pt_dir.file("interactions.pt"));
  CHECK_THROWS_WITH(load_dataset(pt_dir.path().string()),
                    Catch::Contains("interactions.pt") && Catch::Contains("'user_id'") &&
                        Catch::Contains("row 1"));
  Table flags = handed;
  flags.set("like", torch::tensor({0, 2, 1, 0}, torch::kInt64));
  save_tensor_table(flags, pt_dir.file("interactions.pt"));
  CHECK_THROWS_WITH(load_dataset(pt_dir.path().string()),
                    Catch::Contains("'like'") && Catch::Contains("flag 0 or 1"));
}

TEST_CASE("tensors loaded from a file are copy-on-write views of it", "[dataset][tensor-file]") {
  TempDir dir;
  Table t;
  t.add("x", torch::arange(1000, torch::kFloat32));
  save_tensor_table(t, dir.file("t.pt"));
  const std::string before = rectrain_test::read_file(dir.file("t.pt"));
  {
    Table loaded = load_tensor_table(dir.file("t.pt"));
    CHECK(loaded["x"].equal(t["x"]));
    loaded["x"].mul_(-1);  // writes go to private pages, never to the file
    CHECK(loaded["x"][3].item<float>() == -3.0f);
  }
  CHECK(rectrain_test::read_file(dir.file("t.pt")) == before);
  CHECK(load_tensor_table(dir.file("t.pt"))["x"].equal(t["x"]));
  rectrain_test::write_file(dir.file("bad.pt"), "PK\x03\x04 not really a zip");
  CHECK_THROWS_AS(load_tensor_table(dir.file("bad.pt")), InputError);
  rectrain_test::write_file(dir.file("empty.pt"), "");
  CHECK_THROWS_WITH(load_tensor_table(dir.file("empty.pt")), Catch::Contains("empty file"));
  save_pickle(c10::IValue(int64_t{3}), dir.file("scalar.pt"));
  CHECK_THROWS_WITH(load_tensor_table(dir.file("scalar.pt")), Catch::Contains("expected a dict of tensors"));
}

TEST_CASE("tensor file written by Python's torch.save loads", "[dataset][tensor-file][python]") {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 with torch (Debian python3-torch) is not installed");
    return;
  }
  TempDir dir;
  const std::string script =
      "import torch\n"
      "torch.save({'user_id': torch.tensor([3, 1, 3], dtype=torch.int64),\n"
      "            'item_id': torch.tensor([10, 11, 12], dtype=torch.int32),\n"
      "            'timespent': torch.tensor([1.5, 2.0, 0.0]),\n"
      "            'like': torch.tensor([True, False, True]),\n"
      "            'dislike': torch.zeros(3, dtype=torch.uint8),\n"
      "            'share': torch.zeros(3, dtype=torch.uint8),\n"
      "            'bookmarks': torch.zeros(3, dtype=torch.uint8)}, '" +
      dir.file("interactions.pt") + "')\n";
  write_file(dir.file("make.py"), script);
  REQUIRE(std::system(("/usr/bin/python3 " + dir.file("make.py")).c_str()) == 0);
  const Dataset ds = load_dataset(dir.path().string());
  CHECK(ds.user_ids.raw_ids().equal(i64({1, 3})));
  CHECK(ds.interactions["user"].equal(i64({1, 0, 1})));
  CHECK(ds.interactions["like"].equal(torch::tensor({1, 0, 1}, torch::kUInt8)));
  CHECK(ds.interactions["timespent"].equal(torch::tensor({1.5f, 2.0f, 0.0f})));
}

TEST_CASE("dataset bad input names file, line and column", "[dataset][bad-input]") {
  TempDir dir;
  write_small_dataset(dir);
  const std::string d = dir.path().string();
  SECTION("missing interactions file") {
    std::filesystem::remove(dir.file("interactions.csv"));
    CHECK_THROWS_WITH(load_dataset(d), Catch::Contains("interactions.csv") && Catch::Contains("missing file"));
  }
  SECTION("empty interactions") {
    write_file(dir.file("interactions.csv"), "user_id,item_id,timespent,like,dislike,share,bookmarks\n");
    CHECK_THROWS_WITH(load_dataset(d), Catch::Contains("no interaction rows"));
  }
  SECTION("duplicate user rows") {
    write_file(dir.file("users.csv"), "user_id,gender,age\n1,1,20\n2,1,20\n1,2,30\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.line() == 4);
    CHECK(e.column() == 1);
    CHECK_THAT(e.what(), Catch::Contains("duplicate user_id 1 (first at line 2)"));
  }
  SECTION("duplicate item rows") {
    write_file(dir.file("items.csv"), "source_id,duration,item_id\n1,1,5\n1,1,6\n1,1,6\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.line() == 4);
    CHECK(e.column() == 3);
  }
  SECTION("embedding columns with a gap") {
    write_file(dir.file("items.csv"), "item_id,source_id,duration,emb_0,emb_2\n7,1,1,0,0\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.line() == 1);
    CHECK(e.column() == 5);
    CHECK_THAT(e.what(), Catch::Contains("emb_1 is missing"));
  }
  SECTION("gender outside {0,1,2}") {
    write_file(dir.file("users.csv"), "user_id,gender,age\n1,3,20\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.line() == 2);
    CHECK(e.column_name() == "gender");
  }
  SECTION("duplicate candidate pair") {
    write_file(dir.file("candidates.csv"), "user_id,item_id\n1,2\n1,3\n1,2\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.line() == 4);
    CHECK_THAT(e.what(), Catch::Contains("duplicate candidate pair"));
  }
  SECTION("missing required column in items.csv") {
    write_file(dir.file("items.csv"), "item_id,duration\n7,1\n");
    const InputError e = input_error([&] { load_dataset(d); });
    CHECK(e.column_name() == "source_id");
  }
  SECTION("candidates required but absent") {
    std::filesystem::remove(dir.file("candidates.csv"));
    CHECK(load_dataset(d).candidates.num_rows() == 0);
    CHECK_THROWS_AS(load_dataset(d, DatasetOptions().require_candidates(true)), InputError);
  }
}

TEST_CASE("synthetic data has the challenge's shape and is deterministic", "[dataset][synthetic]") {
  TempDir a, b, c;
  auto options = SyntheticOptions::at_scale(0.004).seed(7);
  const auto sa = generate_synthetic(a.path().string(), options);
  generate_synthetic(b.path().string(), options);
  generate_synthetic(c.path().string(), SyntheticOptions(options).seed(8));
  for (const auto& name : {"interactions.csv", "users.csv", "items.csv", "candidates.csv"}) {
    CHECK(rectrain_test::read_file(a.file(name)) == rectrain_test::read_file(b.file(name)));
    CHECK(rectrain_test::read_file(a.file(name)) != rectrain_test::read_file(c.file(name)));
  }
  // Thread count does not change the output.
  TempDir one;
  torch::set_num_threads(1);
  generate_synthetic(one.path().string(), options);
  torch::set_num_threads(2);
  CHECK(rectrain_test::read_file(one.file("interactions.csv")) == rectrain_test::read_file(a.file("interactions.csv")));

  const Dataset ds = load_dataset(a.path().string());
  CHECK(ds.num_users() == 734);
  CHECK(ds.embedding_dim() == 32);
  CHECK(ds.num_interactions() == sa.interactions);
  const double like = ds.interactions["like"].to(torch::kFloat64).mean().item<double>();
  CHECK(like == Approx(0.047).epsilon(0.15));
  CHECK(ds.interactions["dislike"].to(torch::kFloat64).mean().item<double>() < 0.002);
  // Histories: between 2 and the cap.
  const auto per_user = torch::bincount(ds.interactions["user"]) +
                        torch::bincount(ds.candidates["user"], {}, ds.num_users());
  CHECK(per_user.min().item<int64_t>() >= 2);
  CHECK(per_user.max().item<int64_t>() <= options.max_history());
  // 20 candidates per test user, with like - dislike targets.
  const auto cand_per_user = torch::bincount(ds.candidates["user"]);
  CHECK((cand_per_user.masked_select(cand_per_user > 0) == 20).all().item<bool>());
  // The planted structure: like-rate beats popularity beats random.
  const auto users = ds.candidates["user"], target = ds.candidates["target"];
  const double like_rate = gauc(users, target, like_rate_scores(ds)).value;
  const double popularity = gauc(users, target, popularity_scores(ds)).value;
  CHECK(like_rate > popularity);
  CHECK(like_rate > 0.6);
}

TEST_CASE("synthetic histories are heavy-tailed between 2 and 4,500", "[dataset][synthetic]") {
  TempDir dir;
  // Enough items that the full-scale history distribution is not capped.
  const auto s = generate_synthetic(dir.path().string(),
                                    SyntheticOptions().users(400).items(20000).sources(100).seed(3));
  const Dataset ds = load_dataset(dir.path().string());
  const auto per_user = (torch::bincount(ds.interactions["user"]) +
                         torch::bincount(ds.candidates["user"], {}, ds.num_users())).to(torch::kFloat64);
  CHECK(per_user.min().item<double>() >= 2);
  CHECK(per_user.max().item<double>() <= 4500);
  CHECK(per_user.max().item<double>() > 2500);
  CHECK(per_user.mean().item<double>() == Approx(790).epsilon(0.12));
  CHECK(per_user.median().item<double>() < 0.8 * per_user.mean().item<double>());  // right-skewed
  CHECK(s.interactions + s.candidates == static_cast<int64_t>(per_user.sum().item<double>()));
}

TEST_CASE("real datasets in ../shared/data load and score", "[dataset][shared]") {
  for (const std::string name : {"mlsmall", "kuairand"}) {
    const std::string dir = rectrain_test::shared_dataset(name);
    if (dir.empty()) {
      WARN("skipped: ../shared/data/" << name << " is not present");
      continue;
    }
    const Dataset ds = load_dataset(dir, DatasetOptions().require_candidates(true));
    INFO(name);
    CHECK(ds.num_interactions() > 10000);
    const auto users = ds.candidates["user_id"], target = ds.candidates["target"];
    const auto random = gauc(users, target, random_scores(ds.candidates.num_rows(), 1));
    const auto popularity = gauc(users, target, popularity_scores(ds));
    const auto like_rate = gauc(users, target, like_rate_scores(ds));
    CHECK(std::abs(random.value - 0.5) < 0.05);
    // One epoch of group sampling and gathering over the real rows.
    GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(),
                         GroupSamplerOptions(20).batch_size(128).seed(1));
    const BatchSpec spec = standard_batch_spec(ds);
    int64_t groups = 0;
    while (auto rows = sampler.next_batch()) {
      const Batch batch = spec.gather(*rows);
      CHECK(batch.mask.all().item<bool>());
      // Every group is one user's.
      const auto users = batch.feature("user");
      CHECK((users == users.select(1, 0).unsqueeze(1)).all().item<bool>());
      groups += batch.num_groups();
    }
    CHECK(groups == sampler.num_groups());
    CHECK(groups > 100);
    if (name == "mlsmall") {
      CHECK(ds.num_users() == 610);
      CHECK(ds.embedding_dim() == 19);
      CHECK(popularity.value == Approx(0.559).margin(0.01));
      CHECK(like_rate.value > popularity.value);
    } else {
      CHECK(popularity.value == Approx(0.979).margin(0.01));
    }
  }
}
