#pragma once
// Shared test helpers: temporary directories, writing small files, locating
// ../shared (tests that need it skip cleanly without it).

#include "catch.hpp"

#include <rectrain/core/error.hpp>

#include <torch/torch.h>
#include <vector>

#include <cstdlib>
#include <functional>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

namespace rectrain_test {

namespace fs = std::filesystem;

/// A fresh directory removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "rectrain-test-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Runs a shell command; its stdout and stderr together.
inline std::string run_command(const std::string& command) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  char buf[4096];
  while (pipe && fgets(buf, sizeof buf, pipe.get())) out += buf;
  // A sanitizer's report from the child fails the test, whatever it
  // printed before it (the checks on its output may all pass).
  for (const char* report : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"})
    if (out.find(report) != std::string::npos) FAIL_CHECK("sanitizer report from: " << command << "\n" << out);
  return out;
}

/// ../shared/data/<name> beside the source tree, or "" when absent.
inline std::string shared_dataset(const std::string& name) {
  const char* env = std::getenv("RECTRAIN_SHARED_DIR");
  fs::path root = env ? fs::path(env) : fs::path(RECTRAIN_SOURCE_DIR) / ".." / "shared";
  fs::path dir = root / "data" / name;
  return fs::exists(dir / "interactions.csv") ? dir.string() : std::string();
}

} // namespace rectrain_test

namespace rectrain_test {
/// An int64 tensor from literal values (torch::tensor is ambiguous on long long).
inline torch::Tensor i64(std::vector<int64_t> values) {
  return torch::tensor(values, torch::kInt64);
}
} // namespace rectrain_test

namespace rectrain_test {
/// The InputError `f` throws; fails the test when it throws none.
template <typename F>
rectrain::InputError input_error(F&& f) {
  try {
    f();
  } catch (const rectrain::InputError& e) {
    return e;
  }
  FAIL("no InputError thrown");
  throw std::logic_error("unreachable");
}
} // namespace rectrain_test

namespace rectrain_test {
/// Central finite differences of f at x against autograd, double precision.
inline void check_gradient(const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x0) {
  auto x = x0.clone().requires_grad_(true);
  f(x).backward();
  const auto grad = x.grad();
  REQUIRE(torch::isfinite(grad).all().item<bool>());
  auto numeric = torch::zeros_like(x0);
  const double eps = 1e-6;
  for (int64_t k = 0; k < x0.numel(); ++k) {
    auto plus = x0.clone(), minus = x0.clone();
    plus.view(-1)[k] += eps;
    minus.view(-1)[k] -= eps;
    numeric.view(-1)[k] = (f(plus).item<double>() - f(minus).item<double>()) / (2 * eps);
  }
  CHECK(torch::allclose(grad, numeric, 1e-5, 1e-7));
}
} // namespace rectrain_test
