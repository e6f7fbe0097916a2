#pragma once
// Starting N ranks of a program on this machine, as `torchrun --no-python
// --nproc-per-node N program ...` does: each rank is the program run again
// with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR (127.0.0.1) and
// MASTER_PORT (a free port) in its environment. When a rank fails, the
// others stop by themselves within the group's timeout (ProcessGroup); the
// launcher kills whatever still runs `grace_seconds` after the first
// failure.
//
//   if (!rectrain::launched_as_rank() && nproc > 1)
//     return rectrain::LocalLauncher(rectrain::LocalLaunchOptions(nproc)).run(argv_as_strings);

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace rectrain {

/// Whether this process was started as one rank of a group (torchrun, an
/// MPI launcher or LocalLauncher set WORLD_SIZE).
inline bool launched_as_rank() { return std::getenv("WORLD_SIZE") != nullptr; }

/// A TCP port on 127.0.0.1 that was free a moment ago (the system's choice).
inline int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(detail::concat("free_local_port: socket(): ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw Error(detail::concat("free_local_port: no port on 127.0.0.1: ", std::strerror(err)));
  return ntohs(addr.sin_port);
}

struct LocalLaunchOptions {
  /* implicit */ LocalLaunchOptions(int64_t nproc = 2) : nproc_(nproc) {}
  /// Ranks to start.
  TORCH_ARG(int64_t, nproc);
  /// The rendezvous port (0: a free one).
  TORCH_ARG(int64_t, master_port) = 0;
  /// After a rank fails, how long the others may take to stop by
  /// themselves before they are killed.
  TORCH_ARG(double, grace_seconds) = 330;
  /// More NAME=value variables for rank r.
  TORCH_ARG(std::function<std::vector<std::string>(int64_t rank)>, environment) = nullptr;
  /// Where rank r's stdout and stderr go ("": this process's).
  TORCH_ARG(std::function<std::string(int64_t rank)>, output) = nullptr;
};

/// How one rank ended.
struct RankExit {
  int64_t rank = 0;
  pid_t pid = -1;
  bool finished = false;
  bool killed = false;  ///< still running at the deadline, so killed
  int status = 0;       ///< waitpid's status once finished
  bool succeeded() const { return finished && !killed && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  /// The exit code a shell would report: the status, or 128 + the signal.
  int exit_code() const {
    if (!finished || killed) return 1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
  }
  std::string describe() const {
    if (!finished) return detail::concat("rank ", rank, " is running");
    if (killed) return detail::concat("rank ", rank, " did not stop in time and was killed");
    if (WIFSIGNALED(status)) return detail::concat("rank ", rank, " was killed by signal ", WTERMSIG(status));
    return detail::concat("rank ", rank, " exited with status ", WEXITSTATUS(status));
  }
};

class LocalLauncher {
 public:
  explicit LocalLauncher(LocalLaunchOptions options = {}) : options_(std::move(options)) {
    if (options_.nproc() < 1) throw Error(detail::concat("--nproc must be >= 1, got ", options_.nproc()));
  }
  LocalLauncher(const LocalLauncher&) = delete;
  LocalLauncher& operator=(const LocalLauncher&) = delete;
  ~LocalLauncher() { kill_all(); }

  /// Starts every rank of `argv` (argv[0]: the program's path).
  void start(const std::vector<std::string>& argv) {
    if (argv.empty()) throw Error("LocalLauncher: no program to start");
    if (!ranks_.empty()) throw Error("LocalLauncher: already started");
    const int64_t port = options_.master_port() > 0 ? options_.master_port() : free_local_port();
    for (int64_t r = 0; r < options_.nproc(); ++r) {
      std::vector<std::string> env;
      for (char** e = environ; *e; ++e) {
        const std::string v(*e);
        bool ours = false;
        for (const char* name : {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="})
          ours = ours || v.rfind(name, 0) == 0;
        if (!ours) env.push_back(v);
      }
      env.push_back(detail::concat("RANK=", r));
      env.push_back(detail::concat("LOCAL_RANK=", r));
      env.push_back(detail::concat("WORLD_SIZE=", options_.nproc()));
      env.push_back(detail::concat("LOCAL_WORLD_SIZE=", options_.nproc()));
      env.push_back("MASTER_ADDR=127.0.0.1");
      env.push_back(detail::concat("MASTER_PORT=", port));
      if (options_.environment())
        for (auto& v : options_.environment()(r)) env.push_back(std::move(v));
      ranks_.push_back(spawn(r, argv, env));
    }
  }

  /// Waits until every rank ended, or `seconds` passed (negative: no
  /// limit); after the first failure, at most grace_seconds more. Ranks
  /// still running then are killed. Returns every rank's end.
  const std::vector<RankExit>& wait(double seconds = -1) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    auto deadline = seconds < 0 ? clock::time_point::max()
                                : start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
    for (;;) {
      bool all = true;
      for (auto& r : ranks_) {
        if (r.finished) continue;
        if (::waitpid(r.pid, &r.status, WNOHANG) == r.pid) {
          r.finished = true;
          if (!r.succeeded()) {
            const auto grace = clock::now() + std::chrono::duration_cast<clock::duration>(
                                                  std::chrono::duration<double>(options_.grace_seconds()));
            if (grace < deadline) deadline = grace;
          }
        } else {
          all = false;
        }
      }
      if (all || clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_all();
    return ranks_;
  }

  /// start() and wait(); returns 0 when every rank succeeded, else the
  /// first failed rank's exit code, after saying on stderr how each failed.
  int run(const std::vector<std::string>& argv) {
    start(argv);
    int code = 0;
    for (const auto& r : wait()) {
      if (r.succeeded()) continue;
      std::fprintf(stderr, "rectrain: launcher: %s\n", r.describe().c_str());
      if (code == 0) code = r.exit_code() == 0 ? 1 : r.exit_code();
    }
    return code;
  }

  const std::vector<RankExit>& ranks() const noexcept { return ranks_; }

 private:
  RankExit spawn(int64_t rank, const std::vector<std::string>& argv, std::vector<std::string>& env) {
    std::vector<char*> args, envp;
    std::vector<std::string> argv_copy = argv;
    for (auto& a : argv_copy) args.push_back(a.data());
    args.push_back(nullptr);
    for (auto& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string output = options_.output() ? options_.output()(rank) : std::string();
    if (!output.empty()) {
      posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    RankExit r;
    r.rank = rank;
    const int rc = posix_spawn(&r.pid, argv_copy[0].c_str(), &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      kill_all();
      throw Error(detail::concat("LocalLauncher: could not start rank ", rank, " (", argv[0], "): ", std::strerror(rc)));
    }
    return r;
  }

  void kill_all() noexcept {
    for (auto& r : ranks_)
      if (!r.finished && r.pid > 0) {
        ::kill(r.pid, SIGKILL);
        ::waitpid(r.pid, &r.status, 0);
        r.finished = r.killed = true;
      }
  }

  LocalLaunchOptions options_;
  std::vector<RankExit> ranks_;
};

} // namespace rectrain
