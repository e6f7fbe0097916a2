// The training loop's parts: epoch records and their JSON, the run's speed,
// the phase schedule, the optimizer split, id tables by name, and the text
// parsers a trainer's settings go through.
#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/device.hpp>
#include <rectrain/core/parse.hpp>
#include <rectrain/core/settings.hpp>
#include <rectrain/data/dataset_memory.hpp>
#include <rectrain/nn/categorical_feature.hpp>
#include <rectrain/nn/id_tables.hpp>
#include <rectrain/nn/tower.hpp>
#include <rectrain/train/epoch_record.hpp>
#include <rectrain/train/phase_schedule.hpp>
#include <rectrain/train/table_optimizers.hpp>

#include <cmath>
#include <functional>
#include <fstream>
#include <sstream>

using namespace rectrain;

namespace {

EpochRecord sample_record() {
  EpochRecord r;
  r.seed = 7;
  r.frozen = true;
  r.stats.epoch = 3;
  r.stats.loss = 1.25;
  r.stats.head_losses = {{"target", 0.5}, {"like", std::nan("")}};
  r.stats.rows = 20480;
  r.stats.batches = 10;
  r.stats.seconds = 2.5;
  r.stats.wait_seconds = 0.25;
  r.validation = GroupMetric{0.6875, 34};
  r.model_gflops = 80.5;
  return r;  // mm_gflops stays NaN: not measured
}

/// A model with two id tables and a dense layer.
struct TwoTablesImpl : torch::nn::Module {
  TwoTablesImpl() {
    user = register_module("user_tower", Tower());
    user->add("user", CategoricalFeature(CategoricalFeatureOptions(5, 4).sparse(true)))
        .add("gender", CategoricalFeature(3, 2));
    item = register_module("item", CategoricalFeature(CategoricalFeatureOptions(6, 4).sparse(true)));
    dense = register_module("dense", torch::nn::Linear(4, 1));
  }
  Tower user{nullptr};
  CategoricalFeature item{nullptr};
  torch::nn::Linear dense{nullptr};
};

} // namespace

TEST_CASE("EpochRecord goes to one JSON line and back", "[train][parts]") {
  const auto r = sample_record();
  const auto line = r.to_json();
  CHECK(line ==
        "{\"seed\":7,\"epoch\":3,\"frozen\":true,\"loss\":1.25,\"loss_target\":0.5,\"loss_like\":null,"
        "\"valid_gauc\":0.6875,\"valid_users\":34,\"rows\":20480,\"batches\":10,\"seconds\":2.5,"
        "\"rows_per_second\":8192,\"data_wait_share\":0.1,\"model_gflops\":80.5,\"mm_gflops\":null}");
  const auto back = EpochRecord::from_json(line, "metrics.jsonl:1");
  CHECK(back.seed == 7);
  CHECK(back.frozen);
  CHECK(back.stats.epoch == 3);
  CHECK(back.stats.rows == 20480);
  CHECK(back.stats.batches == 10);
  REQUIRE(back.stats.head_losses.size() == 2);
  CHECK(back.stats.head_losses[0].first == "target");
  CHECK(std::isnan(back.stats.head_losses[1].second));
  CHECK(back.validation.users == 34);
  CHECK(back.stats.data_wait_share() == Approx(0.1));
  CHECK(std::isnan(back.mm_gflops));
  CHECK(back.to_json() == line);  // a resumed run writes the same line again

  CHECK_THROWS_WITH(EpochRecord::from_json("{\"seed\":1", "ckpt"), Catch::Contains("ckpt: expected '}'"));
  CHECK_THROWS_WITH(EpochRecord::from_json("{\"seed\":x}", "ckpt"),
                    Catch::Contains("expected a number") && Catch::Contains("column 9"));
  CHECK_THROWS_WITH(EpochRecord::from_json("{\"epoch\":1}", "ckpt"), Catch::Contains("needs seed and epoch"));
  CHECK_THROWS_WITH(EpochRecord::from_json("{\"seed\":1,\"epoch\":2} x", "ckpt"), Catch::Contains("text after"));
}

TEST_CASE("run_speed weighs each epoch by its seconds and skips unmeasured ones", "[train][parts]") {
  EpochRecord a, b, unmeasured;
  a.stats.seconds = 1;
  a.model_gflops = 50;
  a.mm_gflops = 100;
  b.stats.seconds = 3;
  b.model_gflops = 90;
  b.mm_gflops = 100;
  unmeasured.stats.seconds = 10;
  const auto speed = run_speed({a, b, unmeasured});
  CHECK(speed.epochs == 2);
  CHECK(speed.seconds == Approx(4));
  CHECK(speed.gflops == Approx((50.0 + 270.0) / 4));
  CHECK(speed.mm_share == Approx((0.5 + 2.7) / 4));
  CHECK(run_speed({unmeasured}).epochs == 0);
}

TEST_CASE("id tables by name: set, listed, refused when ambiguous or missing", "[train][parts]") {
  TwoTablesImpl model;
  CHECK(categorical_feature_paths(model) ==
        std::vector<std::string>{"user_tower.features.user", "user_tower.features.gender", "item"});
  set_table(model, "user", torch::ones({5, 4}));
  CHECK(model.user->feature<CategoricalFeatureImpl>("user")->weight.slice(0, 0, 5).eq(1).all().item<bool>());
  CHECK(model.user->feature<CategoricalFeatureImpl>("user")->weight[5].eq(0).all().item<bool>());  // OOV row
  set_table(model, "item", torch::full({7, 4}, 2.0));
  CHECK(model.item->weight.eq(2).all().item<bool>());
  CHECK_THROWS_WITH(set_table(model, "item", torch::ones({3, 4})), Catch::Contains("expected [7, 4] or [6, 4]"));
  CHECK_THROWS_WITH(set_table(model, "source", torch::ones({3, 4})),
                    Catch::Contains("no CategoricalFeature matches") && Catch::Contains("user_tower.features.gender"));
  CHECK(table_parameter_names(model, {"user", "item"}) ==
        std::vector<std::string>{"user_tower.features.user.weight", "item.weight"});
}

TEST_CASE("TableOptimizers: tables to SparseAdam, the rest to Adam; one Adam for dense tables", "[train][parts]") {
  TwoTablesImpl model;
  const auto tables = table_parameter_names(model, {"user", "item"});
  const auto options = torch::optim::AdamOptions(0.01);
  TableOptimizers sparse(model, tables, options, TableUpdate::Sparse);
  REQUIRE(sparse.tables() != nullptr);
  CHECK(sparse.tables()->rows() == SparseAdamRows::All);
  CHECK(sparse.tables()->param_groups()[0].params().size() == 2);
  CHECK(sparse.dense().param_groups()[0].params().size() == model.parameters().size() - 2);
  CHECK(sparse.all().size() == 2);
  TableOptimizers lazy(model, tables, options, TableUpdate::Lazy);
  CHECK(lazy.tables()->rows() == SparseAdamRows::Touched);
  TableOptimizers dense(model, tables, options, TableUpdate::Dense);
  CHECK(dense.tables() == nullptr);
  CHECK(dense.all().size() == 1);
  CHECK(dense.dense().param_groups()[0].params().size() == model.parameters().size());
  CHECK_THROWS_WITH(TableOptimizers(model, {"nothing.weight"}, options, TableUpdate::Sparse),
                    Catch::Contains("no parameter 'nothing.weight'"));
  CHECK(parse_table_update("adam") == TableUpdate::Dense);
  CHECK_THROWS_WITH(parse_table_update("fast", "--table-update"),
                    Catch::Contains("--table-update must be sparse, adam or lazy; got 'fast'"));
}

TEST_CASE("PhaseSchedule freezes its group for the first epochs", "[train][parts]") {
  TwoTablesImpl model;
  const PhaseSchedule schedule(2, 1, table_parameter_names(model, {"user", "item"}));
  CHECK(schedule.epochs() == 3);
  CHECK(schedule.apply(model, 0));
  CHECK_FALSE(model.item->weight.requires_grad());
  CHECK(model.dense->weight.requires_grad());
  CHECK(schedule.apply(model, 1));
  CHECK_FALSE(schedule.apply(model, 2));
  CHECK(model.item->weight.requires_grad());
  CHECK(model.user->feature<CategoricalFeatureImpl>("user")->weight.requires_grad());
  const PhaseSchedule nothing_frozen(2, 1);
  CHECK_FALSE(nothing_frozen.frozen_in(0));
  CHECK_THROWS_AS(PhaseSchedule(0, 0), Error);
  CHECK_THROWS_WITH(PhaseSchedule(1, 0, {"missing"}).apply(model, 0), Catch::Contains("no parameter matches 'missing'"));
}

TEST_CASE("A trainer's settings from text: lists, seeds, widths, sizes, devices", "[core][parts]") {
  CHECK(split_list("a,,b,") == std::vector<std::string>{"a", "b"});
  CHECK(split_list("x\ny\n", '\n') == std::vector<std::string>{"x", "y"});
  CHECK(join({"a", "b"}) == "a,b");
  CHECK(join({}) == "");
  CHECK(parse_seed_list("1,2,3,", "--seeds") == std::vector<uint64_t>{1, 2, 3});
  CHECK_THROWS_WITH(parse_seed_list("1,1", "--seeds"), Catch::Contains("--seeds: seed 1 is given twice"));
  CHECK_THROWS_WITH(parse_seed_list("", "--seeds"), Catch::Contains("is not a seed"));
  CHECK(parse_width_list("512,256", "--hidden") == std::vector<int64_t>{512, 256});
  CHECK_THROWS_WITH(parse_width_list("8,0", "--hidden"), Catch::Contains("not a list of positive widths"));
  CHECK(parse_byte_size("512M", "budget") == 512LL << 20);
  CHECK(parse_byte_size("1.5GiB", "budget") == 3LL << 29);
  CHECK(parse_byte_size("4096", "budget") == 4096);
  CHECK_THROWS_WITH(parse_byte_size("12X", "budget"), Catch::Contains("budget: '12X' is not a size"));
  CHECK_THROWS_WITH(parse_byte_size("-1G", "budget"), Catch::Contains("is not a size"));
  CHECK(parse_device("cpu").is_cpu());
  CHECK_THROWS_WITH(parse_device("tpu", "--device"), Catch::Contains("--device: 'tpu' is not a device"));
  if (!torch::cuda::is_available())
    CHECK_THROWS_WITH(parse_device("cuda:0", "--device"), Catch::Contains("sees no GPU"));
}

TEST_CASE("write_lines_atomically writes every line, each ended", "[core][parts]") {
  TempDir dir;
  const auto path = dir.file("lines.jsonl");
  write_lines_atomically(path, {"{\"a\":1}", "{\"b\":2}"});
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str() == "{\"a\":1}\n{\"b\":2}\n");
}

namespace {

struct ToyConfig {
  int64_t epochs = 5;
  double lr = 1e-3, dropout = 0.1;
  bool als = true, bf16 = false;
  std::string norm = "layernorm";
  std::vector<int64_t> hidden{8, 4};

  Settings settings() {
    Settings s;
    s.add("epochs", epochs, "epochs").at_least(1).note("the schedule's length");
    s.add("lr", lr, "learning rate").above(0);
    s.add("dropout", dropout, "dropout").at_least(0).below(1);
    s.add("als", als, "random tables instead of ALS");
    s.add("bf16", bf16, "bfloat16 autocast");
    s.add("norm", norm, "normalisation").one_of({"layernorm", "batchnorm", "none"});
    s.add("hidden", hidden, "widths").at_least(1);
    return s;
  }
};

} // namespace

TEST_CASE("Settings: one table gives flags, text, parsing and range checks", "[train][settings]") {
  ToyConfig c;
  auto s = c.settings();
  CHECK(s.to_text() == "epochs=5\nlr=0.001\ndropout=0.10000000000000001\nals=1\nbf16=0\nnorm=layernorm\nhidden=8,4\n");
  CHECK(s.find("als")->flag() == "--no-als");
  CHECK_FALSE(s.find("als")->flag_value());
  CHECK(s.find("bf16")->flag() == "--bf16");
  CHECK(s.find("bf16")->is_flag());
  CHECK(s.find("epochs")->flag() == "--epochs");
  CHECK(std::string(s.find("hidden")->kind()) == "INT,...");
  CHECK(std::string(s.find("lr")->kind()) == "FLOAT");
  CHECK(s.find("dropout")->text(6) == "0.1");
  CHECK(s.find("nothing") == nullptr);
  s.validate();

  // Text read back: every value, exactly.
  ToyConfig d;
  d.lr = 0.5, d.dropout = 0.3, d.als = false, d.hidden = {3}, d.norm = "none";
  const std::string text = d.settings().to_text();
  ToyConfig e;
  e.settings().from_text(text, "model.pt");
  CHECK(e.settings().to_text() == text);
  CHECK(e.lr == 0.5);
  CHECK_FALSE(e.als);
  CHECK(e.hidden == std::vector<int64_t>{3});
  CHECK_THROWS_WITH(e.settings().from_text("epochs=5\n", "m.pt"), Catch::Contains("m.pt: configuration lacks 'lr'"));
  CHECK_THROWS_WITH(e.settings().from_text(text + "extra=1\n", "m.pt"), Catch::Contains("unknown setting 'extra'"));
  CHECK_THROWS_WITH(e.settings().from_text(text + "lr=2\n", "m.pt"), Catch::Contains("gives 'lr' twice"));
  CHECK_THROWS_WITH(e.settings().from_text("lr\n", "m.pt"), Catch::Contains("bad configuration line 'lr'"));

  // One value from text, as a flag gives it; errors name the flag.
  auto t = c.settings();
  t.find("lr")->set("0.25", "--lr");
  CHECK(c.lr == 0.25);
  CHECK_THROWS_WITH(t.find("lr")->set("fast", "--lr"), Catch::Contains("--lr: 'fast' is not a number"));
  CHECK_THROWS_WITH(t.find("epochs")->set("2.5", "--epochs"), Catch::Contains("--epochs: '2.5' is not a number"));
  CHECK_THROWS_WITH(t.find("hidden")->set("8,x", "--hidden"), Catch::Contains("'8,x' is not a list of positive widths"));
  CHECK_THROWS_WITH(t.find("als")->set("2", "als"), Catch::Contains("'2' is not 0 or 1"));

  const std::vector<std::pair<std::function<void()>, std::string>> bad{
      {[&] { c.lr = std::nan(""); }, "--lr must be a finite number > 0, got nan"},
      {[&] { c.lr = -1; }, "--lr must be a finite number > 0, got -1"},
      {[&] { c.dropout = 1; }, "--dropout must be in [0, 1), got 1"},
      {[&] { c.epochs = 0; }, "--epochs must be >= 1 (the schedule's length), got 0"},
      {[&] { c.norm = "rms"; }, "--norm must be layernorm, batchnorm or none; got 'rms'"},
      {[&] { c.hidden = {4, 0}; }, "--hidden (every width) must be >= 1, got 0"},
  };
  for (const auto& [spoil, message] : bad) {
    c = ToyConfig();
    spoil();
    CHECK_THROWS_WITH(c.settings().validate(), message);
  }
  int64_t x = 0;
  Settings twice;
  twice.add("x", x, "x");
  CHECK_THROWS_WITH(twice.add("x", x, "x"), Catch::Contains("added twice"));
  CHECK_THROWS_WITH(twice.add("Bad-Key", x, "x"), Catch::Contains("lower-case letters"));
}

TEST_CASE("parse_memory_budget: auto, none, sizes", "[train][settings]") {
  CHECK(parse_memory_budget("none", "--memory-budget") == 0);
  CHECK(parse_memory_budget("12G", "--memory-budget") == int64_t{12} << 30);
  CHECK(parse_memory_budget("auto", "--memory-budget") >= 0);
  CHECK_THROWS_WITH(parse_memory_budget("lots", "--memory-budget"), Catch::Contains("--memory-budget: 'lots' is not a size"));
}
