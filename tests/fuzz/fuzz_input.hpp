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

#include <rectrain/core/torch_archive.hpp>

#include <caffe2/serialize/inline_container.h>

#include <sstream>

namespace rectrain_fuzz {

/// `bytes` with every zip record's CRC-32 set to what its bytes hold now:
/// a mutated archive then reaches the checks behind the checksums (the
/// pickle walk, the code records, LibTorch's reader) instead of stopping
/// at "damaged". An archive whose directory cannot be read comes back as
/// it is.
inline std::string with_valid_checksums(std::string bytes) {
  rectrain::detail::TorchArchiveIndex index;
  try {
    index = rectrain::detail::index_torch_archive(bytes.data(), bytes.size(), "input");
  } catch (const rectrain::Error&) {
    return bytes;
  }
  auto put = [&](const rectrain::detail::ArchiveRecord& r, uint32_t crc) {
    for (int k = 0; k < 4; ++k) bytes[r.directory_entry + 16 + k] = static_cast<char>((crc >> (8 * k)) & 0xff);
  };
  bool compressed = false;
  for (const auto& entry : index.records) {
    if (entry.second.stored)
      put(entry.second, rectrain::crc32(bytes.data() + entry.second.offset, entry.second.size));
    else
      compressed = true;
  }
  if (!compressed) return bytes;
  // Compressed records' CRCs are of their inflated bytes: LibTorch's reader
  // inflates them (safe once the directory checks above passed).
  try {
    std::istringstream in(bytes);
    caffe2::serialize::PyTorchStreamReader reader(&in);
    for (const auto& entry : index.records) {
      if (entry.second.stored) continue;
      const auto record = reader.getRecord(entry.first);
      put(entry.second, rectrain::crc32(std::get<0>(record).get(), std::get<1>(record)));
    }
  } catch (const std::exception&) {
  }
  return bytes;
}

} // namespace rectrain_fuzz
