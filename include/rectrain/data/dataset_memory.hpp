#pragma once
// How much memory loading a dataset takes, estimated before anything is
// read, so that a dataset too large for the machine fails at once with the
// figures instead of minutes later with the OOM killer.
//
//   const auto need = rectrain::estimate_dataset_memory(dir);
//   rectrain::check_memory_budget(need, rectrain::available_memory_bytes(), dir);
//
// load_dataset and load_dataset_cache do this themselves when given
// DatasetOptions::memory_budget.

#include <rectrain/core/error.hpp>
#include <rectrain/core/mapped_file.hpp>
#include <rectrain/core/parse.hpp>
#include <rectrain/core/torch_archive.hpp>
#include <rectrain/data/csv.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <sys/stat.h>

namespace rectrain {

/// The peak bytes of loading a dataset, and what they were estimated from.
struct DatasetMemoryEstimate {
  int64_t bytes = 0;
  /// Interaction rows (estimated from the first MiB of a large CSV file).
  int64_t interactions = 0;
  /// Bytes per interaction row while loading (columns, plus the id maps'
  /// temporaries).
  int64_t bytes_per_interaction = 0;
};

/// "1.5 GiB", "730 MiB", "12 KiB".
inline std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

/// Memory the kernel says is available to a new allocation without swapping
/// (MemAvailable of /proc/meminfo), or 0 where that is unknown.
inline int64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

/// A memory budget for DatasetOptions::memory_budget from text: "auto"
/// (the memory available now), "none" or 0 (no budget), or a size with an
/// optional binary suffix (512M, 12G, 1.5T). `what` names it in errors.
inline int64_t parse_memory_budget(const std::string& text, const std::string& what) {
  if (text == "auto") return available_memory_bytes();
  if (text == "none") return 0;
  return parse_byte_size(text, what);
}

namespace detail {

/// Rows and columns of a CSV file: exact below `sample` bytes, else scaled
/// from the lines of its first `sample` bytes (one read, whatever the size).
inline std::pair<int64_t, int64_t> csv_shape(const std::string& path, int64_t sample = int64_t{1} << 20) {
  const MappedFile file(path);
  const char* data = file.data();
  const auto size = static_cast<int64_t>(file.size());
  if (size == 0) return {0, 0};
  const char* header_end = line_end(data, data + size);
  const int64_t header = header_end < data + size ? header_end - data + 1 : size;
  const int64_t columns = std::count(data, data + header, ',') + 1;
  const int64_t body = size - header;
  const int64_t seen = std::min(body, sample);
  int64_t lines = count_newlines(data + header, data + header + seen);
  if (seen == body) return {lines + (body > 0 && data[size - 1] != '\n'), columns};
  lines = std::max<int64_t>(lines, 1);
  return {static_cast<int64_t>(static_cast<double>(body) * static_cast<double>(lines) / static_cast<double>(seen)),
          columns};
}

/// Bytes of the tensor records of a torch.save file (its directory only).
inline int64_t tensor_file_bytes(const std::string& path) {
  const MappedFile file(path);
  if (file.size() == 0) return 0;
  const auto index = index_torch_archive(file.data(), file.size(), path);
  int64_t bytes = 0;
  for (const auto& record : index.records)
    if (record.first.compare(0, 5, "data/") == 0) bytes += static_cast<int64_t>(record.second.size);
  return bytes;
}

inline int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) ? static_cast<int64_t>(st.st_size) : -1;
}

} // namespace detail

/// Estimates the peak memory of load_dataset(dir), from the files' sizes
/// and headers, before reading them. CSV columns are parsed into int64 ids,
/// float32 numbers and uint8 flags; a tensor file's columns are converted
/// (a copy); the id maps sort a copy of the user and item ids. A cache file
/// counts at its size (its tensors map the file).
inline DatasetMemoryEstimate estimate_dataset_memory(const std::string& dir_or_cache) {
  DatasetMemoryEstimate e;
  const int64_t cache = detail::file_size(dir_or_cache);
  if (cache >= 0) {
    e.bytes = cache;
    return e;
  }
  auto path = [&](const char* name) { return dir_or_cache + (dir_or_cache.empty() || dir_or_cache.back() == '/' ? "" : "/") + name; };
  // Interactions: user_id, item_id (int64), timespent (float32), four flags
  // (uint8), extra columns (float32); the id maps' sorted copies, 16 more.
  if (detail::file_size(path("interactions.csv")) >= 0) {
    const auto [rows, columns] = detail::csv_shape(path("interactions.csv"));
    e.interactions = rows;
    e.bytes_per_interaction = 8 + 8 + 4 + 4 + 4 * std::max<int64_t>(columns - 7, 0) + 16;
    e.bytes += rows * e.bytes_per_interaction;
  } else if (detail::file_size(path("interactions.pt")) >= 0) {
    e.bytes += 2 * detail::tensor_file_bytes(path("interactions.pt"));
  }
  // The other files: every column parsed as 8 bytes, then copied once.
  for (const char* stem : {"users", "items", "candidates"}) {
    const std::string csv = path((std::string(stem) + ".csv").c_str()), pt = path((std::string(stem) + ".pt").c_str());
    if (detail::file_size(csv) >= 0) {
      const auto [rows, columns] = detail::csv_shape(csv);
      e.bytes += 2 * rows * columns * 8;
    } else if (detail::file_size(pt) >= 0) {
      e.bytes += 2 * detail::tensor_file_bytes(pt);
    }
  }
  return e;
}

/// Throws when `need` exceeds `budget_bytes` (0: no budget), with both.
inline void check_memory_budget(const DatasetMemoryEstimate& need, int64_t budget_bytes, const std::string& what) {
  if (budget_bytes <= 0 || need.bytes <= budget_bytes) return;
  std::string basis;
  if (need.interactions > 0)
    basis = detail::concat(" (about ", need.interactions, " interactions at ", need.bytes_per_interaction,
                   " bytes each, and the other files)");
  throw Error(detail::concat(what, ": loading needs about ", format_bytes(need.bytes), basis, ", over the memory budget of ",
                     format_bytes(budget_bytes),
                     "; give a larger budget, free memory, or train on a subset of the interactions"));
}

} // namespace rectrain
