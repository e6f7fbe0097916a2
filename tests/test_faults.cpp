// Fault injection: rectrain-vk killed with SIGKILL at chosen and at random
// points, then resumed. The checkpoint on disk must load after every kill,
// and the resumed run must end on the bytes of an uninterrupted one.

#include "helpers.hpp"

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
  const std::string vk = std::string(RECTRAIN_VK_BINARY) + " --threads 2";
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
