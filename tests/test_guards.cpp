// rectrain-vk against a hostile but realistic user: models applied to
// renumbered, reordered and grown data; damaged checkpoints and models;
// outputs aimed at inputs; two runs in one directory; runs that would
// learn nothing; a full disk; bad flags; extra columns; a killed synth.
// Each case ends in the right answer or in one message and exit 1.

#include "helpers.hpp"
#include "vk_in_process.hpp"

// Only the headers used (the umbrella header's ALS and model code would
// double this file's build time).
#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/directory_lock.hpp>
#include <rectrain/core/text.hpp>
#include <rectrain/core/torch_archive.hpp>
#include <rectrain/data/csv.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/dataset_fingerprint.hpp>
#include <rectrain/data/table.hpp>

#include <map>
#include <numeric>
#include <random>
#include <set>
#include <unistd.h>

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// rectrain-vk run in this process (vk_in_process.hpp): its output with its
/// exit status on a last line "rc=N", like a shell's.
std::string vk_status(const std::string& args) {
  const auto run = run_vk("--threads 2 " + args);
  return run.output + "rc=" + std::to_string(run.status) + "\n";
}
const std::string small_run = " --frozen-epochs 1 --unfrozen-epochs 1 --hidden 16";

/// Runs a command; its output and exit status ("rc=N" on the last line).
std::string run_status(const std::string& command) { return run_command("{ " + command + " 2>&1; echo rc=$?; }"); }

/// Writes a table as CSV, columns in order; floats in their shortest exact form.
void write_table_csv(const std::string& path, const Table& t) {
  std::string text;
  const auto names = t.names();
  for (size_t c = 0; c < names.size(); ++c) text += (c ? "," : "") + names[c];
  text += '\n';
  std::vector<torch::Tensor> columns;
  for (const auto& n : names) columns.push_back(t[n].contiguous());
  for (int64_t r = 0; r < t.num_rows(); ++r) {
    for (size_t c = 0; c < columns.size(); ++c) {
      if (c) text += ',';
      const auto& col = columns[c];
      if (col.scalar_type() == torch::kFloat32)
        rectrain::detail::append_float(text, col.data_ptr<float>()[r]);
      else if (col.scalar_type() == torch::kUInt8)
        rectrain::detail::append_int(text, col.data_ptr<uint8_t>()[r]);
      else
        rectrain::detail::append_int(text, col.data_ptr<int64_t>()[r]);
    }
    text += '\n';
  }
  write_file(path, text);
}

/// The four files of a dataset directory as raw tables (ids as in the files).
struct RawDataset {
  Table interactions, users, items, candidates;

  static RawDataset read(const std::string& dir) {
    RawDataset d;
    auto read_all = [](const std::string& path) {
      std::vector<CsvField> fields;
      const CsvFile file(path);
      for (const auto& name : file.header()) {
        const bool id = name == "user_id" || name == "item_id" || name == "source_id" || name == "gender" || name == "target";
        const bool flag = name == "like" || name == "dislike" || name == "share" || name == "bookmarks";
        fields.push_back({name, id ? CsvType::Integer : flag ? CsvType::Flag : CsvType::Number});
      }
      return file.read(fields);
    };
    d.interactions = read_all(dir + "/interactions.csv");
    d.users = read_all(dir + "/users.csv");
    d.items = read_all(dir + "/items.csv");
    d.candidates = read_all(dir + "/candidates.csv");
    return d;
  }
  void write(const std::string& dir) const {
    fs::create_directories(dir);
    write_table_csv(dir + "/interactions.csv", interactions);
    write_table_csv(dir + "/users.csv", users);
    write_table_csv(dir + "/items.csv", items);
    write_table_csv(dir + "/candidates.csv", candidates);
  }
};

/// `t` with column `name` replaced by f(column).
Table with_column(const Table& t, const std::string& name, const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  Table out;
  for (const auto& c : t.columns()) out.add(c.key(), c.key() == name ? f(c.value()) : c.value());
  return out;
}

Table concat_rows(const Table& a, const Table& b) {
  Table out;
  for (const auto& c : a.columns()) out.add(c.key(), torch::cat({c.value(), b[c.key()].to(c.value().scalar_type())}));
  return out;
}

/// (user_id, item_id) -> score from a predictions.csv.
std::map<std::pair<int64_t, int64_t>, float> scores_of(const std::string& path) {
  const auto t = read_csv(path, {{"user_id", CsvType::Id}, {"item_id", CsvType::Id}, {"predict", CsvType::Number}});
  std::map<std::pair<int64_t, int64_t>, float> out;
  for (int64_t r = 0; r < t.num_rows(); ++r)
    out[{t["user_id"][r].item<int64_t>(), t["item_id"][r].item<int64_t>()}] = t["predict"][r].item<float>();
  return out;
}

} // namespace

TEST_CASE("predict scores a (raw user, raw item) pair the same after renumbering, reordering and new ids",
          "[cli][guards][vocabulary]") {
  TempDir dir;
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + dir.file("synth")), Catch::Contains("synth:"));
  const auto raw = RawDataset::read(dir.file("synth"));
  auto doubled = [](const torch::Tensor& ids) { return ids * 2; };
  // A: the synthetic set with even raw ids.
  RawDataset a;
  a.interactions = with_column(with_column(raw.interactions, "user_id", doubled), "item_id", doubled);
  a.users = with_column(raw.users, "user_id", doubled);
  a.items = with_column(raw.items, "item_id", doubled);
  a.candidates = with_column(with_column(raw.candidates, "user_id", doubled), "item_id", doubled);
  a.write(dir.file("a"));

  // B: A's rows in another order (each user's views still in time order),
  // plus 40 new users (odd ids, so every dense index moves) viewing 60 new
  // items of a new source, and candidates pairing new users with old items
  // and old users with new items.
  std::mt19937 rng(7);
  RawDataset b;
  {
    const auto users = a.interactions["user_id"];
    std::vector<int64_t> keys(static_cast<size_t>(users.numel()));
    for (int64_t r = 0; r < users.numel(); ++r) keys[static_cast<size_t>(r)] = users[r].item<int64_t>() * 7919 % 1009;
    std::vector<int64_t> rows(keys.size());
    std::iota(rows.begin(), rows.end(), 0);
    std::stable_sort(rows.begin(), rows.end(), [&](int64_t x, int64_t y) { return keys[x] < keys[y]; });
    b.interactions = a.interactions.select(torch::tensor(rows, torch::kInt64));
  }
  Table new_views, new_users, new_items, new_candidates;
  {
    std::vector<int64_t> u, i, like;
    for (int64_t k = 0; k < 40; ++k)
      for (int64_t v = 0; v < 25; ++v) {
        u.push_back(2 * k + 1);
        i.push_back(2 * static_cast<int64_t>((k * 7 + v * 3) % 60) + 1);
        like.push_back(static_cast<int64_t>(rng() % 2));
      }
    const int64_t n = static_cast<int64_t>(u.size());
    new_views.add("user_id", torch::tensor(u)).add("item_id", torch::tensor(i))
        .add("timespent", torch::full({n}, 5.0f)).add("like", torch::tensor(like).to(torch::kUInt8))
        .add("dislike", torch::zeros({n}, torch::kUInt8)).add("share", torch::zeros({n}, torch::kUInt8))
        .add("bookmarks", torch::zeros({n}, torch::kUInt8));
    new_users.add("user_id", torch::arange(40) * 2 + 1).add("gender", torch::ones({40}, torch::kInt64))
        .add("age", torch::full({40}, 30.0f));
    for (const auto& name : a.items.names()) {
      if (name == "item_id") new_items.add(name, torch::arange(60) * 2 + 1);
      else if (name == "source_id") new_items.add(name, torch::full({60}, 9999, torch::kInt64));
      else new_items.add(name, torch::full({60}, 0.25f));
    }
    auto distinct = [](const torch::Tensor& ids) {
      const auto c = ids.contiguous();
      const std::set<int64_t> set(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
      return std::vector<int64_t>(set.begin(), set.end());
    };
    const auto old_users = distinct(a.candidates["user_id"]), old_items = distinct(a.candidates["item_id"]);
    std::vector<int64_t> cu, ci;
    for (size_t k = 0; k < 20; ++k) {
      cu.push_back(2 * static_cast<int64_t>(k) + 1), ci.push_back(old_items[k]);
      cu.push_back(old_users[k]), ci.push_back(2 * static_cast<int64_t>(k) + 1);
    }
    new_candidates.add("user_id", torch::tensor(cu)).add("item_id", torch::tensor(ci))
        .add("target", torch::zeros({40}, torch::kInt64));
  }
  auto shuffled = [&](const Table& t) {
    std::vector<int64_t> rows(static_cast<size_t>(t.num_rows()));
    std::iota(rows.begin(), rows.end(), 0);
    std::shuffle(rows.begin(), rows.end(), rng);
    return t.select(torch::tensor(rows, torch::kInt64));
  };
  b.interactions = concat_rows(b.interactions, new_views);
  b.users = shuffled(concat_rows(a.users, new_users));
  b.items = shuffled(concat_rows(a.items, new_items));
  b.candidates = shuffled(concat_rows(a.candidates, new_candidates));
  b.write(dir.file("b"));

  const std::string out = dir.file("out");
  REQUIRE_THAT(vk_out("train --data " + dir.file("a") + " --out " + out + small_run + " --seeds 1,2"),
               Catch::Contains("train: done"));
  const auto on_a = vk_out("predict --data " + dir.file("a") + " --models " + out + " --predictions " +
                                dir.file("pa.csv"));
  CHECK_THAT(on_a, Catch::Contains("5500 candidates, 0 with a user and 0 with an item the model never saw"));
  CHECK(read_file(dir.file("pa.csv")) == read_file(out + "/predictions.csv"));
  const auto on_b = vk_out("predict --data " + dir.file("b") + " --models " + out + " --predictions " +
                                dir.file("pb.csv"));
  INFO(on_b);
  CHECK_THAT(on_b, Catch::Contains("5540 candidates, 20 with a user and 20 with an item the model never saw (scored "
                                   "with its out-of-vocabulary rows)"));
  const auto pa = scores_of(dir.file("pa.csv")), pb = scores_of(dir.file("pb.csv"));
  REQUIRE(pa.size() == 5500);
  REQUIRE(pb.size() == 5540);
  // The same up to the rounding of the matrix products, which depends on
  // where a row falls in a block (the scores spread over about +-3; a row
  // scored with a neighbour's embedding would be off by tenths). How many
  // come out bit-identical depends on the BLAS: most with LibTorch 1.13's
  // OpenBLAS on Zen 3, 3051 of 5500 with LibTorch 2.6's.
  double worst = 0;
  for (const auto& [pair, score] : pa) {
    REQUIRE(pb.count(pair) == 1);
    worst = std::max(worst, std::abs(static_cast<double>(score) - pb.at(pair)));
  }
  CHECK(worst < 1e-5);
  for (const auto& [pair, score] : pb) CHECK(std::isfinite(score));

  // Data that shares no id with the model, and data without its inputs.
  RawDataset c = a;
  c.candidates = with_column(with_column(a.candidates, "user_id", [](const torch::Tensor& t) { return t + 100001; }),
                             "item_id", [](const torch::Tensor& t) { return t + 100001; });
  c.write(dir.file("c"));
  CHECK_THAT(vk_status("predict --data " + dir.file("c") + " --models " + out + " --predictions " +
                        dir.file("pc.csv")),
             Catch::Contains("knows none of the users and none of the items of the 5500 candidates") &&
                 Catch::Contains("it was trained on other data") && Catch::EndsWith("rc=1\n"));
  RawDataset no_content = a;
  Table items;
  for (const auto& name : a.items.names())
    if (name.rfind("emb_", 0) != 0) items.add(name, a.items[name]);
  no_content.items = items;
  no_content.write(dir.file("no_content"));
  CHECK_THAT(vk_status("predict --data " + dir.file("no_content") + " --models " + out + " --predictions " +
                        dir.file("pd.csv")),
             Catch::Contains("the model reads 32-wide item content vectors") && Catch::EndsWith("rc=1\n"));
  CHECK_FALSE(fs::exists(dir.file("pc.csv")));
  CHECK_FALSE(fs::exists(dir.file("pd.csv")));

  // --resume refuses a checkpoint trained on other data of the same size
  // (one timespent changed), naming the part that differs.
  RawDataset a2 = a;
  a2.interactions = with_column(a.interactions, "timespent", [](const torch::Tensor& t) {
    auto c = t.clone();
    c[100] += 1;
    return c;
  });
  a2.write(dir.file("a2"));
  const std::string cut = " --out " + dir.file("cut") + small_run + " --seeds 1";
  REQUIRE_THAT(vk_out("train --data " + dir.file("a") + cut + " --stop-after 1"),
               Catch::Contains("stopped after 1 epochs"));
  const auto other = vk_status("train --data " + dir.file("a2") + cut + " --resume");
  CHECK_THAT(other, Catch::Contains("was trained on other data than " + dir.file("a2")) &&
                        Catch::Contains("  interactions: 37021 rows, fingerprint ") &&
                        Catch::Contains("rc=1"));
  CHECK_THAT(other, !Catch::Contains("  users:"));

  // Damage: 64 bytes overwritten inside a tensor record of a checkpoint,
  // 4 KiB zeroed in a model. Both refused, naming the file and the record.
  auto damage = [](const std::string& path, size_t bytes, char value, bool xor_them) {
    std::string b = read_file(path);
    const auto index = rectrain::detail::index_torch_archive(b.data(), b.size(), path);
    const rectrain::detail::ArchiveRecord* largest = nullptr;
    for (const auto& [name, r] : index.records)
      if (name.rfind("data/", 0) == 0 && (!largest || r.size > largest->size)) largest = &r;
    REQUIRE(largest);
    REQUIRE(largest->size > bytes);
    for (size_t k = 0; k < bytes; ++k) {
      char& c = b[largest->offset + largest->size / 3 + k];
      c = xor_them ? static_cast<char>(c ^ value) : value;
    }
    write_file(path, b);
  };
  damage(dir.file("cut/checkpoint-seed1.pt"), 64, '\x5a', true);
  CHECK_THAT(vk_status("train --data " + dir.file("a") + cut + " --resume"),
             Catch::Contains(dir.file("cut/checkpoint-seed1.pt") + ": damaged: record 'archive/") &&
                 Catch::Contains("rc=1"));
  damage(out + "/model-seed2.pt", 4096, 0, false);
  CHECK_THAT(vk_status("predict --data " + dir.file("a") + " --models " + out + " --predictions " +
                        dir.file("pe.csv")),
             Catch::Contains(out + "/model-seed2.pt: damaged: record 'archive/") && Catch::Contains("rc=1"));
  CHECK_FALSE(fs::exists(dir.file("pe.csv")));
}

TEST_CASE("rectrain-vk: outputs never replace inputs, one run per --out, stale outputs refused or removed",
          "[cli][guards]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string candidates = read_file(data + "/candidates.csv");
  CHECK_THAT(vk_status("baseline --data " + data + " --predictions " + data + "/candidates.csv"),
             Catch::Contains("refusing to write " + data + "/candidates.csv: it is an input of this run") &&
                 Catch::Contains("rc=1"));
  CHECK(read_file(data + "/candidates.csv") == candidates);

  const std::string out = dir.file("out");
  const std::string train = std::string("train --data ") + data + " --out " + out + small_run;
  {
    // Another process holds --out (here: this one).
    DirectoryLock held(out, "a test");
    CHECK_THAT(vk_status(train + " --seeds 1"),
               Catch::Contains(out + " is in use by another process (pid " + std::to_string(::getpid()) + ": a test") &&
                   Catch::Contains("rc=1"));
  }
  REQUIRE_THAT(vk_out(train + " --seeds 1"), Catch::Contains("train: done"));
  // predict's output aimed at the training data, through a symlink.
  fs::create_symlink(data + "/interactions.csv", dir.file("link.csv"));
  const std::string interactions = read_file(data + "/interactions.csv");
  CHECK_THAT(vk_status("predict --data " + data + " --models " + out + " --predictions " + dir.file("link.csv")),
             Catch::Contains("it is the input " + data + "/interactions.csv of this run") && Catch::Contains("rc=1"));
  CHECK(read_file(data + "/interactions.csv") == interactions);

  // A second fresh run into the same --out: refused, nothing touched.
  const std::string predictions = read_file(out + "/predictions.csv");
  CHECK_THAT(vk_status(train + " --seeds 2"),
             Catch::Contains("already holds the outputs of another run (checkpoint-seed1.pt, ") &&
                 Catch::Contains("--resume continues that run, --overwrite replaces it") && Catch::Contains("rc=1"));
  CHECK(read_file(out + "/predictions.csv") == predictions);
  // --overwrite removes the earlier run's files, a stale model among them.
  const auto replaced = vk_out(train + " --seeds 2 --overwrite");
  CHECK_THAT(replaced, Catch::Contains("--overwrite: removed 7 files of an earlier run") && Catch::Contains("train: done"));
  CHECK_FALSE(fs::exists(out + "/model-seed1.pt"));
  CHECK_FALSE(fs::exists(out + "/checkpoint-seed1.pt"));
  CHECK(fs::exists(out + "/model-seed2.pt"));
  CHECK_THAT(vk_out("predict --data " + data + " --models " + out + " --predictions " + dir.file("p.csv")),
             Catch::Contains("from 1 model(s)"));
}

TEST_CASE("rectrain-vk: bad flags are one message before any work; runs that would learn nothing fail",
          "[cli][guards]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string train = std::string("train --data ") + data + " --out " + dir.file("out");
  const std::string ok = " --frozen-epochs 1 --unfrozen-epochs 1 --seeds 1";
  const std::vector<std::pair<std::string, std::string>> cases{
      {ok + " --lr nan", "--lr must be a finite number > 0, got nan"},
      {ok + " --lr -0.01", "--lr must be a finite number > 0, got -0.01"},
      {ok + " --dropout 1", "--dropout must be in [0, 1), got 1"},
      {ok + " --device gpu", "--device: 'gpu' is not a device rectrain runs on; use cpu, cuda or cuda:N"},
      {ok + " --group-size 1", "--group-size must be >= 2"},
      {ok + " --holdout-fraction 0", "--holdout-fraction must be in (0, 1], got 0"},
      {ok + " --lr 0.1 --lr 0.2", "--lr: At Most 1 required but received 2"},
      {ok + " --hidden 8 --hidden 4", "--hidden: At Most 1 required but received 2"},
      {ok + " --hidden 8,x", "--hidden: '8,x' is not a list of positive widths"},
      {" --seeds 1,1", "--seeds: seed 1 is given twice"},
      {" --seeds -1", "--seeds: '-1' is not a seed"},
      {" --seeds 99999999999999999999", "--seeds: '99999999999999999999' is not a seed"},
      {" --seeds 1 --frozen-epochs 0 --unfrozen-epochs 0", "--frozen-epochs and --unfrozen-epochs are both 0"},
  };
  for (const auto& [flags, message] : cases) {
    INFO(flags);
    const auto output = vk_status(train + flags);
    // Exit 2 for a flag CLI11 cannot take, 1 for a value out of range.
    CHECK_THAT(output, Catch::Contains("rectrain-vk: error: " + message) &&
                           (Catch::EndsWith("rc=1\n") || Catch::EndsWith("rc=2\n")));
    CHECK_THAT(output, !Catch::Contains("frame #") && !Catch::Contains("Exception raised from"));
    CHECK_FALSE(fs::exists(dir.file("out")));  // nothing written, not even the directory
  }
  // Through the binary: the exit status a shell sees.
  CHECK_THAT(run_status(vk_program() + " " + train + ok + " --lr nan"),
             Catch::Contains("rectrain-vk: error: --lr must be a finite number > 0, got nan") && Catch::EndsWith("rc=1\n"));
  CHECK_THAT(run_status(vk_program() + " " + train + ok + " --lr 0.1 --lr 0.2"),
             Catch::Contains("--lr: At Most 1 required but received 2") && Catch::EndsWith("rc=2\n"));
  // bf16 on a CPU that would run it 20x slower than fp32: refused unless asked for.
  if (!rectrain::cpu_has_native_bf16())
    CHECK_THAT(vk_status(train + ok + " --bf16"),
               Catch::Contains("rectrain-vk: error: --bf16: this CPU has no native bf16 (AVX512-BF16 or AMX)") &&
                   Catch::Contains("--allow-slow-bf16") && Catch::EndsWith("rc=1\n"));
  else
    WARN("this CPU has native bf16: the --bf16 refusal is not checked");
  // A RECTRAIN_CPU_ISA that is not a level: an error before any work.
  CHECK_THAT(run_status("RECTRAIN_CPU_ISA=avx3 " + vk_program() + " " + train + ok),
             Catch::Contains("rectrain-vk: error: RECTRAIN_CPU_ISA: \"avx3\" is not a level") &&
                 Catch::EndsWith("rc=1\n"));
  if (!torch::cuda::is_available())
    CHECK_THAT(vk_status(train + ok + " --device cuda"),
               Catch::Contains("--device cuda: this LibTorch has no CUDA support or sees no GPU") &&
                   Catch::EndsWith("rc=1\n"));

  // All targets equal: no group has a ranking pair, validation no GAUC.
  RawDataset flat = RawDataset::read(data);
  auto zeros = [](const torch::Tensor& t) { return torch::zeros_like(t); };
  flat.interactions = with_column(with_column(flat.interactions, "like", zeros), "dislike", zeros);
  flat.write(dir.file("flat"));
  const auto nothing = vk_status("train --data " + dir.file("flat") + " --out " + dir.file("flat_out") +
                                  small_run + " --seeds 1");
  CHECK_THAT(nothing, Catch::Contains("two different targets") && Catch::EndsWith("rc=1\n"));
  CHECK_FALSE(fs::exists(dir.file("flat_out/model-seed1.pt")));
  CHECK_FALSE(fs::exists(dir.file("flat_out/predictions.csv")));

  // eval: a prediction for a pair that is not a candidate; a GAUC no user defines.
  write_file(dir.file("c.csv"), "user_id,item_id,target\n1,10,1\n1,11,0\n");
  write_file(dir.file("p.csv"), "user_id,item_id,predict\n1,10,0.5\n1,11,0.2\n2,10,0.1\n");
  CHECK_THAT(vk_status("eval --candidates " + dir.file("c.csv") + " --predictions " + dir.file("p.csv")),
             Catch::Contains(dir.file("p.csv") + ":4: user_id 2, item_id 10 is not a candidate") &&
                 Catch::EndsWith("rc=1\n"));
  write_file(dir.file("c.csv"), "user_id,item_id,target\n1,10,0\n1,11,0\n2,10,1\n");
  CHECK_THAT(vk_status("eval --candidates " + dir.file("c.csv") + " --predictions " + dir.file("p.csv")),
             Catch::Contains("GAUC is undefined: no user of") && Catch::EndsWith("rc=1\n"));
}

TEST_CASE("rectrain-vk: a full disk during a checkpoint is a message, the temporary removed", "[cli][guards][faults]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string train = vk_program() + " train --data " + data + small_run + " --seeds 1 --out ";
  // A file-size limit (every user can set one): writes past it fail with EFBIG.
  const auto limited = run_status("sh -c \"trap '' XFSZ; ulimit -f 200; exec " + train + dir.file("limited") + "\"");
  CHECK_THAT(limited, Catch::Contains("rectrain-vk: error: cannot write " + dir.file("limited/checkpoint-seed1.pt") +
                                      ": File too large (the partial file was removed") &&
                          Catch::EndsWith("rc=1\n"));
  CHECK_THAT(limited, !Catch::Contains("terminate called") && !Catch::Contains("frame #"));
  for (const auto& e : fs::directory_iterator(dir.file("limited")))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  // A real ENOSPC on a 400 KiB tmpfs, where this user may mount one.
  fs::create_directories(dir.file("small"));
  const auto full = run_status("unshare -m sh -c 'mount -t tmpfs -o size=400k tmpfs " + dir.file("small") +
                               " && exec " + train + dir.file("small/out") + "'");
  if (full.find("No space left on device") == std::string::npos && full.find("train: done") == std::string::npos) {
    WARN("no private tmpfs here (unshare/mount refused): the ENOSPC case is skipped");
    return;
  }
  CHECK_THAT(full, Catch::Contains("cannot write " + dir.file("small/out/checkpoint-seed1.pt") +
                                   ": No space left on device") && Catch::EndsWith("rc=1\n"));
}

TEST_CASE("rectrain-vk: extra interaction columns are trained as heads or reported unused", "[cli][guards]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  RawDataset d = RawDataset::read(data);
  d.interactions.add("watch_fraction", (d.interactions["timespent"] / 100.0).clamp_max(1.0).to(torch::kFloat32));
  d.interactions.add("replayed", (d.interactions["timespent"] > 40).to(torch::kUInt8));
  d.write(dir.file("extra"));
  const std::string train = std::string("train --data ") + dir.file("extra") + small_run + " --seeds 1 --out ";
  CHECK_THAT(vk_out(train + dir.file("plain")),
             Catch::Contains("heads: target,timespent,like,dislike,share,bookmarks\n") &&
                 Catch::Contains("interaction column(s) watch_fraction,replayed not used (--extra-heads") &&
                 Catch::Contains("train: done"));
  const auto with_heads = vk_out(train + dir.file("heads") + " --extra-heads");
  CHECK_THAT(with_heads, Catch::Contains("heads: target,timespent,like,dislike,share,bookmarks,watch_fraction:regression,"
                                         "replayed:binary") &&
                             Catch::Contains("train: done"));
  CHECK_THAT(read_file(dir.file("heads/metrics.jsonl")), Catch::Contains("\"loss_watch_fraction\":") &&
                                                             Catch::Contains("\"loss_replayed\":"));
  CHECK_THAT(vk_out("predict --data " + dir.file("extra") + " --models " + dir.file("heads") +
                         " --predictions " + dir.file("p.csv")),
             Catch::Contains("from 1 model(s)"));
  CHECK(read_file(dir.file("p.csv")) == read_file(dir.file("heads/predictions.csv")));
}

TEST_CASE("rectrain-vk synth killed before it finishes leaves the previous dataset whole", "[cli][guards][faults]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const auto before = DatasetFingerprint::of(load_dataset(data));
  // Killed once the new files are written beside it, before they are swapped in.
  CHECK_THAT(run_status("env RECTRAIN_CRASH_AT=directory.swap:1 " + vk_program() + " synth --scale 0.003 --seed 4 --out " + data),
             Catch::Contains("Killed") || Catch::Contains("rc=137"));
  CHECK(before.differences(DatasetFingerprint::of(load_dataset(data))).empty());
  // The next synth sweeps the dead run's staging directory and swaps in whole.
  REQUIRE_THAT(vk_out("synth --scale 0.003 --seed 4 --out " + data), Catch::Contains("synth: 550 users"));
  CHECK(load_dataset(data).num_users() == 550);
  for (const auto& e : fs::directory_iterator(dir.path())) CHECK(e.path().filename().string() == "data");
  write_file(data + "/notes.txt", "mine");
  CHECK_THAT(vk_status("synth --scale 0.002 --out " + data),
             Catch::Contains("holds other files than the ones written there (notes.txt)") && Catch::EndsWith("rc=1\n"));
}
