// Fault injection: rectrain-vk killed with SIGKILL at chosen and at random
// points, then resumed. The checkpoint on disk must load after every kill,
// and the resumed run must end on the bytes of an uninterrupted one.

#include "helpers.hpp"
#include "fuzz/fuzz_input.hpp"
#include "vk_in_process.hpp"

#include <rectrain/rectrain.hpp>

#include <chrono>
#include <csignal>
#include <random>
#include <thread>

#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// Starts `command` under /bin/sh with `exec`, so the pid is the program's.
pid_t spawn(const std::string& command, const std::string& log) {
  const std::string line = "exec " + command + " > " + log + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
    throw std::runtime_error("posix_spawn failed");
  return pid;
}

/// Waits for `pid`; true when SIGKILL ended it, false when it exited 0.
bool killed(pid_t pid, const std::string& log) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status)) {
    REQUIRE(WTERMSIG(status) == SIGKILL);
    return true;
  }
  INFO(read_file(log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  return false;
}

/// The checkpoint a kill left, if any, loads whole (its directory, pickles,
/// code and tensors are checked, and its entries read).
void check_checkpoint(const std::string& path) {
  if (!fs::exists(path)) return;
  std::string config;
  int64_t epochs_done = -1;
  Checkpoint c;
  c.add("config", config).add("epochs_done", epochs_done);
  INFO(path);
  REQUIRE_NOTHROW(c.load(path));
  CHECK_THAT(config, Catch::Contains("hidden=32,16"));
  CHECK(epochs_done >= 1);
}

size_t temporaries(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

} // namespace

TEST_CASE("rectrain-vk killed at crash points and at random times resumes to the same bytes", "[train][cli][faults]") {
  TempDir dir;
  const std::string vk = vk_program();
  const std::string data = dir.file("data");
  REQUIRE_THAT(run_command(vk + " synth --scale 0.002 --seed 5 --out " + data), Catch::Contains("synth:"));
  const std::string flags = " --data " + data + " --frozen-epochs 1 --unfrozen-epochs 2 --hidden 32,16 --seeds 1,2";
  const auto start = std::chrono::steady_clock::now();
  REQUIRE_THAT(run_command(vk + " train" + flags + " --out " + dir.file("straight")), Catch::Contains("train: done"));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string expected = read_file(dir.file("straight/predictions.csv"));
  REQUIRE(expected.size() > 1000);

  const std::string log = dir.file("run.log");
  auto train = [&](const std::string& out) { return vk + " train" + flags + " --out " + out + " --resume"; };
  auto check_checkpoints = [&](const std::string& out) {
    check_checkpoint(out + "/checkpoint-seed1.pt");
    check_checkpoint(out + "/checkpoint-seed2.pt");
  };
  auto finish = [&](const std::string& out) {
    const pid_t pid = spawn(train(out), log);
    REQUIRE_FALSE(killed(pid, log));
    INFO(read_file(log));
    CHECK(read_file(out + "/predictions.csv") == expected);
    CHECK(temporaries(out) == 0);  // the killed writers' temporaries are swept
    CHECK_THAT(read_file(out + "/metrics.jsonl"), Catch::Contains("\"seed\":2,\"epoch\":2"));
  };

  SECTION("at crash points") {
    const std::string out = dir.file("points");
    // Part of a checkpoint written; a checkpoint complete but not renamed
    // (second epoch); mid-epoch (the 30th step of the run, in seed 1's
    // second epoch on this data; the 200th, in seed 2).
    for (const char* point : {"checkpoint.write:1", "checkpoint.rename:2", "epoch.step:30", "checkpoint.write:2",
                              "epoch.step:200"}) {
      INFO(point);
      const pid_t pid = spawn("env RECTRAIN_CRASH_AT=" + std::string(point) + " " + train(out), log);
      CHECK(killed(pid, log));
      check_checkpoints(out);
      CHECK_FALSE(fs::exists(out + "/predictions.csv"));
      if (std::string(point).rfind("checkpoint.", 0) == 0) CHECK(temporaries(out) == 1);  // the half-written one
    }
    finish(out);
  }

  SECTION("at random times") {
    const std::string out = dir.file("random");
    // Times over the length of a whole run, from a fixed seed (where they
    // land still depends on the machine's speed).
    std::mt19937 rng(11);
    std::uniform_real_distribution<double> when(0.05 * seconds, 0.6 * seconds);
    int kills = 0;
    for (int attempt = 0; attempt < 10; ++attempt) {
      const pid_t pid = spawn(train(out), log);
      std::this_thread::sleep_for(std::chrono::duration<double>(when(rng)));
      ::kill(pid, SIGKILL);
      if (!killed(pid, log)) break;  // it finished first
      ++kills;
      check_checkpoints(out);
    }
    WARN("rectrain-vk killed at " << kills << " random times before it finished");
    CHECK(kills > 0);
    finish(out);
  }
}

namespace {

std::string repo_file(const std::string& relative) { return std::string(RECTRAIN_SOURCE_DIR) + "/" + relative; }

/// A valid table file's bytes, and where its data.pkl lies in them.
struct TableBytes {
  std::string bytes;
  uint64_t pickle = 0, pickle_size = 0;
};

TableBytes table_bytes(const TempDir& dir) {
  Table t;
  t.add("user_id", i64({3, 3, 5})).add("score", torch::tensor({0.5f, 1.5f, 2.5f}));
  save_tensor_table(t, dir.file("good.pt"));
  TableBytes out;
  out.bytes = read_file(dir.file("good.pt"));
  const auto index = rectrain::detail::index_torch_archive(out.bytes.data(), out.bytes.size(), "good.pt");
  out.pickle = index.find("data.pkl")->offset;
  out.pickle_size = index.find("data.pkl")->size;
  return out;
}

/// Offset in `pickle` of the first `op` whose argument is `arg_bytes` long.
uint64_t first_op(const std::string& bytes, const TableBytes& t, char op) {
  for (uint64_t i = t.pickle; i < t.pickle + t.pickle_size; ++i)
    if (bytes[i] == op) return i;
  FAIL("no such opcode");
  return 0;
}

} // namespace

TEST_CASE("Fuzzer findings stay fixed: malformed archives are refused with a message", "[faults][fuzz]") {
  TempDir dir;
  const auto t = table_bytes(dir);
  REQUIRE(load_tensor_table(dir.file("good.pt")).num_rows() == 3);
  // Each damaged file is checked with its checksums made to match, so the
  // check behind them is the one that answers (as damaged files they are
  // refused as "damaged" first).
  auto refused = [&](std::string bytes, const std::string& message) {
    INFO(message);
    const std::string path = dir.file("bad.pt");
    write_file(path, rectrain_fuzz::with_valid_checksums(bytes));
    CHECK_THROWS_WITH(load_tensor_table(path), Catch::Contains(path) && Catch::Contains(message));
  };
  auto replay = [&](const fs::path& input) {
    const std::string path = dir.file("replay-" + input.filename().string());
    write_file(path, rectrain_fuzz::with_valid_checksums(read_file(input.string())));
    return path;
  };

  // Inputs the fuzzers kept (tests/fuzz/regressions): a version record
  // marked as a directory (miniz would not extract it, LibTorch parsed an
  // unfilled buffer, threw, and leaked its zip state), and a checkpoint
  // whose code record crashed TorchScript's type parser.
  CHECK_THROWS_WITH(
      load_tensor_table(repo_file("tests/fuzz/regressions/fuzz_tensor_file/version-marked-directory-leak.pt")),
      Catch::Contains("zip entry 'archive/version' is marked as a directory"));
  {
    torch::nn::Linear model(4, 3);
    Checkpoint c;
    c.add("model", *model);
    // Its damaged code record fails its checksum now, before the code check
    // (and its deflate stream is cut short: LibTorch inflates it into an
    // unfilled buffer, so no checksum can be made to match). The code check
    // itself, on the kind of line the fuzzer made:
    const auto input = repo_file("tests/fuzz/regressions/fuzz_checkpoint/typeparser-segv.pt");
    CHECK_THROWS_WITH(c.load(input), Catch::Contains("damaged: record"));
    CHECK_THROWS_AS(c.load(replay(input)), rectrain::Error);
    const std::string code = "class Module(Module):\n  __parameters__ = [\"weight\", ]\n  weight : Tensor\n"
                             "  bias : Optional[Tuple[Tensor, List[__torch__.[int]]]]\n";
    CHECK_THROWS_WITH(rectrain::detail::check_module_code(code.data(), code.size(), "c.pt", "code/m.py"),
                      Catch::Contains("code/m.py line 4 is not an attribute declaration"));
    CHECK_NOTHROW(rectrain::detail::check_module_code(code.data(), code.rfind("  bias"), "c.pt", "code/m.py"));
  }

  // Every kept input, through what its fuzzer calls: only rectrain's own
  // errors may come out (and, in the sanitizer build, no report).
  auto only_rectrain_errors = [](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const rectrain::Error&) {
    }
  };
  for (const auto& entry : fs::directory_iterator(repo_file("tests/fuzz/regressions/fuzz_tensor_file"))) {
    INFO(entry.path());
    fs::create_directories(dir.file("replay"));
    for (const std::string& input : {entry.path().string(), replay(entry.path())}) {
      fs::copy_file(input, dir.file("replay/interactions.pt"), fs::copy_options::overwrite_existing);
      CHECK_NOTHROW(only_rectrain_errors([&] { load_tensor_table(input); }));
      CHECK_NOTHROW(only_rectrain_errors([&] { load_dataset(dir.file("replay")); }));
      CHECK_NOTHROW(only_rectrain_errors([&] { load_dataset_cache(input); }));
    }
  }
  for (const auto& entry : fs::directory_iterator(repo_file("tests/fuzz/regressions/fuzz_checkpoint"))) {
    INFO(entry.path());
    torch::nn::Linear model(4, 3);
    torch::optim::Adam adam(model->parameters());
    Checkpoint c;
    c.add("model", *model).add("adam", adam);
    CHECK_THROWS_AS(c.load(entry.path().string()), rectrain::Error);
    CHECK_THROWS_AS(c.load(replay(entry.path())), rectrain::Error);
  }

  // The same kinds, made by hand from a good file.
  {
    std::string b = t.bytes;  // no version record: LibTorch 1.13 leaked here
    for (size_t at = b.find("archive/version"); at != std::string::npos; at = b.find("archive/version", at + 1))
      b[at + 14] = 'X';
    refused(b, "no version record");
  }
  {
    std::string b = t.bytes;  // a string length of 2 GiB: LibTorch allocates it before reading
    const uint64_t at = first_op(b, t, 'X');
    b[at + 1] = '\xff', b[at + 2] = '\xff', b[at + 3] = '\xff', b[at + 4] = '\x7f';
    refused(b, "data.pkl byte " + std::to_string(at - t.pickle) + ": a length of 2147483647");
  }
  {
    std::string b = t.bytes;  // a memo index far ahead: LibTorch grows its memo table to it
    const uint64_t at = first_op(b, t, 'q');
    b[at + 1] = '\xc8';
    refused(b, "memo index 200 skips ahead");
  }
  {
    std::string b = t.bytes;  // the pickle cut short
    b[t.pickle + t.pickle_size - 1] = 'N';
    refused(b, "no STOP");
  }
  {
    std::string b = t.bytes;  // a storage claiming more elements than its record holds
    const uint64_t at = first_op(b, t, 'K');  // the first BININT1: a storage's element count (3)
    REQUIRE(b[at + 1] == 3);
    b[at + 1] = '\x7f';
    refused(b, "claims 127 elements");
  }
  {
    std::string b = t.bytes;  // the directory pointing past the end of the file (PyTorch writes zip64)
    const size_t zip64 = b.rfind(std::string("PK\x06\x06", 4));
    REQUIRE(zip64 != std::string::npos);
    b[zip64 + 48] = '\xff', b[zip64 + 49] = '\xff', b[zip64 + 50] = '\xff', b[zip64 + 51] = '\x0f';
    refused(b, "the zip directory lies outside the file");
  }
  refused(t.bytes.substr(0, t.bytes.size() / 2), "no zip end-of-directory record");
}

TEST_CASE("A dataset over the memory budget fails before loading, with the estimate and the budget", "[faults][memory]") {
  TempDir dir;
  const std::string data = dir.file("data");
  generate_synthetic(data, SyntheticOptions::at_scale(0.002).seed(4));
  const auto need = estimate_dataset_memory(data);
  const Dataset ds = load_dataset(data);
  int64_t loaded = ds.user_ids.raw_ids().nbytes() + ds.item_ids.raw_ids().nbytes();
  for (const Table* t : {&ds.interactions, &ds.users, &ds.items, &ds.candidates})
    for (const auto& c : t->columns()) loaded += c.value().nbytes();
  INFO("estimate " << need.bytes << ", loaded " << loaded);
  CHECK(need.interactions == ds.num_interactions());  // a small file: counted, not sampled
  CHECK(need.bytes >= loaded);                         // the peak, above what stays
  CHECK(need.bytes <= 4 * loaded);

  CHECK_THROWS_WITH(load_dataset(data, DatasetOptions().memory_budget(need.bytes - 1)),
                    Catch::Contains("dataset " + data + ": loading needs about " + format_bytes(need.bytes)) &&
                        Catch::Contains(std::to_string(ds.num_interactions()) + " interactions at 40 bytes each") &&
                        Catch::Contains("over the memory budget of " + format_bytes(need.bytes - 1)));
  CHECK(load_dataset(data, DatasetOptions().memory_budget(need.bytes)).num_interactions() == ds.num_interactions());

  // A large file's rows are estimated from its first MiB.
  const auto [rows, columns] = rectrain::detail::csv_shape(data + "/interactions.csv", 4096);
  CHECK(columns == 7);
  CHECK(std::abs(rows - ds.num_interactions()) < ds.num_interactions() / 20);

  save_dataset_cache(ds, dir.file("cache.pt"));
  CHECK(estimate_dataset_memory(dir.file("cache.pt")).bytes == static_cast<int64_t>(fs::file_size(dir.file("cache.pt"))));
  CHECK_THROWS_WITH(load_dataset_cache(dir.file("cache.pt"), DatasetOptions().memory_budget(1000)),
                    Catch::Contains("over the memory budget of 1000 B"));
  CHECK(available_memory_bytes() > 0);

  const std::string train = "--threads 2 train --data " + data + " --out " + dir.file("out");
  const auto refused = run_vk(train + " --memory-budget 256K").output;
  CHECK_THAT(refused, Catch::Contains("over the memory budget of 256.0 KiB") && Catch::Contains("loading needs about"));
  CHECK_FALSE(fs::exists(dir.file("out/checkpoint-seed1.pt")));
  CHECK_THAT(run_vk(train + " --memory-budget 12X").output, Catch::Contains("'12X' is not a size"));
}

TEST_CASE("rectrain-vk reports numerical faults with what to change and writes nothing", "[faults][cli]") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string train = "train --frozen-epochs 1 --unfrozen-epochs 1 --hidden 16 --seeds 1";

  // A loss that becomes NaN: named, with the remedies; no checkpoint, no predictions.
  const auto diverged = vk_out(train + " --data " + data + " --lr 1e30 --out " + dir.file("nan"));
  CHECK_THAT(diverged, Catch::Contains("training diverged: the") && Catch::Contains("became NaN") &&
                           Catch::Contains("lower the learning rate"));
  CHECK_FALSE(fs::exists(dir.file("nan/checkpoint-seed1.pt")));
  CHECK_FALSE(fs::exists(dir.file("nan/predictions.csv")));

  // NaN and infinity in an input file: the file, line and column.
  const std::string bad = dir.file("bad");
  fs::create_directories(bad);
  write_file(bad + "/interactions.csv",
             "user_id,item_id,timespent,like,dislike,share,bookmarks\n1,10,2,1,0,0,0\n1,11,inf,0,0,0,0\n");
  CHECK_THAT(vk_out(train + " --data " + bad + " --out " + dir.file("bad_out")),
             Catch::Contains(bad + "/interactions.csv:3:3: column 'timespent'") && Catch::Contains("'inf'"));
  CHECK_FALSE(fs::exists(dir.file("bad_out/checkpoint-seed1.pt")));
}
