#pragma once
// rectrain-vk's program (vk::cli_main, linked from the rectrain_vk_cli
// library) run inside the test process: the same code as the binary,
// without the second or more that starting a LibTorch program costs
// (several under the sanitizers). Tests of what only a process shows (an
// exit by signal, a crash point, resource limits) start the binary instead.

#include "helpers.hpp"

#include "../examples/vk_ranker/cli.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace rectrain_test {

struct VkRun {
  int status = -1;     ///< what the program returned (1: an error, 2: a usage error)
  std::string output;  ///< its stdout and stderr, interleaved as written
};

/// Runs `program(argv)` (a program's main as a function, named `name`) with
/// `args` in this process, capturing what it writes; `args` are split at
/// spaces (test paths have none).
inline VkRun run_in_process(int (*program)(int, char**), const std::string& name, const std::string& args) {
  std::vector<std::string> words{name};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);

  // Both the C++ and the C streams, so that nothing written before lands in
  // the capture, or after it outside.
  const auto flush_all = [] {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(stdout);
    std::fflush(stderr);
  };
  flush_all();
  FILE* capture = std::tmpfile();
  REQUIRE(capture);
  const int saved_out = ::dup(STDOUT_FILENO), saved_err = ::dup(STDERR_FILENO);
  ::dup2(::fileno(capture), STDOUT_FILENO);
  ::dup2(::fileno(capture), STDERR_FILENO);
  VkRun run;
  try {
    run.status = program(static_cast<int>(words.size()), argv.data());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "(escaped cli_main) %s\n", e.what());
  }
  flush_all();
  ::dup2(saved_out, STDOUT_FILENO);
  ::dup2(saved_err, STDERR_FILENO);
  ::close(saved_out);
  ::close(saved_err);
  std::rewind(capture);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, capture)) > 0;) run.output.append(buf, n);
  std::fclose(capture);
  return run;
}

/// Runs `rectrain-vk <args>` in this process.
inline VkRun run_vk(const std::string& args) { return run_in_process(vk::cli_main, "rectrain-vk", args); }

/// `rectrain-vk --threads 2 <args>` in this process: its output.
inline std::string vk_out(const std::string& args) { return run_vk("--threads 2 " + args).output; }

/// The rectrain-vk binary with `--threads 2`, for the cases that need a
/// process of their own; RECTRAIN_VK runs them against another build. The
/// build does not order the tests after the binary (that would hold their
/// compilation back until it is linked), so a missing one is said here.
inline std::string vk_program() {
  const char* other = std::getenv("RECTRAIN_VK");
  const std::string path = other ? other : RECTRAIN_VK_BINARY;
  if (::access(path.c_str(), X_OK) != 0)
    FAIL(path << " is not there: build the rectrain-vk target too (cmake --build builds both)");
  return path + " --threads 2";
}

} // namespace rectrain_test
