#pragma once
// RunDirectory: the files a training run keeps in its output directory.
// Per model of an ensemble "<stem>-seed<N>.pt" (checkpoint, model), and
// files of the whole run (predictions.csv, metrics.jsonl, ...). A trainer
// asks it what an earlier run left there before it writes: a fresh run
// must not mix its files with another run's, and a resumed run must not
// find models of seeds it does not train.

#include <rectrain/core/error.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rectrain {

class RunDirectory {
 public:
  RunDirectory(std::string path, std::vector<std::string> seed_stems, std::vector<std::string> run_files)
      : path_(std::move(path)), seed_stems_(std::move(seed_stems)), run_files_(std::move(run_files)) {}

  const std::string& path() const { return path_; }
  /// path/name.
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  /// path/<stem>-seed<seed>.pt.
  std::string seed_file(const std::string& stem, uint64_t seed) const {
    return file(stem + "-seed" + std::to_string(seed) + ".pt");
  }

  /// The seed in "<stem>-seed<N>.pt" for one of the seed stems; false for
  /// any other name.
  bool seed_of(const std::string& name, uint64_t& seed) const {
    for (const auto& stem : seed_stems_) {
      const std::string prefix = stem + "-seed";
      if (name.size() <= prefix.size() + 3 || name.compare(0, prefix.size(), prefix) != 0 ||
          name.compare(name.size() - 3, 3, ".pt") != 0)
        continue;
      const std::string digits = name.substr(prefix.size(), name.size() - 3 - prefix.size());
      if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 19) continue;
      seed = std::stoull(digits);
      return true;
    }
    return false;
  }

  /// The names of the run's files the directory holds, sorted.
  std::vector<std::string> outputs() const {
    std::vector<std::string> out;
    if (!std::filesystem::is_directory(path_)) return out;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      const std::string name = entry.path().filename().string();
      uint64_t seed = 0;
      if (seed_of(name, seed) || std::find(run_files_.begin(), run_files_.end(), name) != run_files_.end())
        out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  /// The paths of "<stem>-seed<N>.pt" files, sorted.
  std::vector<std::string> seed_files(const std::string& stem) const {
    std::vector<std::string> out;
    uint64_t seed = 0;
    for (const auto& name : outputs())
      if (name.compare(0, stem.size() + 5, stem + "-seed") == 0 && seed_of(name, seed)) out.push_back(file(name));
    return out;
  }

  /// The first per-seed file whose seed is not in `seeds` ("": none).
  std::string file_of_other_seed(const std::vector<uint64_t>& seeds) const {
    for (const auto& name : outputs()) {
      uint64_t seed = 0;
      if (seed_of(name, seed) && std::find(seeds.begin(), seeds.end(), seed) == seeds.end()) return name;
    }
    return "";
  }

  /// Removes the named files (outputs() names).
  void remove(const std::vector<std::string>& names) const {
    for (const auto& name : names) std::filesystem::remove(file(name));
  }

 private:
  std::string path_;
  std::vector<std::string> seed_stems_, run_files_;
};

} // namespace rectrain
