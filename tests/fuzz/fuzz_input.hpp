#pragma once
// Shared by the libFuzzer targets: the readers under test take paths, so
// each input is written to a file (on tmpfs when there is one) first.

#include <rectrain/core/error.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace rectrain_fuzz {

/// A directory of this process's own, removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path root = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = root / ("rectrain-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return d;
  }();
  return dir;
}

/// Writes the input to `name` under the scratch directory; returns its path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const auto path = scratch_dir() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();
  return path.string();
}

/// Runs `fn`; rectrain's own exceptions are the expected answer to bad
/// input. Any other exception escaping is a finding: the user would get
/// a message that does not say where the input is wrong.
template <typename F>
void expect_rectrain_errors(F&& fn) {
  static const bool verbose = std::getenv("RECTRAIN_FUZZ_VERBOSE") != nullptr;  // for triage
  try {
    fn();
  } catch (const rectrain::Error& e) {
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: an exception that is not a rectrain::Error escaped: %s\n", e.what());
    std::abort();
  }
}

} // namespace rectrain_fuzz
