#pragma once
// Outputs are written to a temporary file beside the target and renamed
// over it, so a crash never leaves a half-written file under the real name.

#include <rectrain/core/error.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <system_error>

#include <unistd.h>

namespace rectrain {

namespace detail {
inline std::string temporary_sibling(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return concat(path, ".tmp.", ::getpid(), '.', counter++);
}

/// Removes `<path>.tmp.<pid>.<n>` files left by processes that no longer
/// run (killed mid-write); another live process's temporaries stay.
inline void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp.";
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    char* stop = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &stop, 10);
    if (pid <= 0 || *stop != '.' || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(it->path(), ec);
  }
}
} // namespace detail

/// Calls `write(temp_path)`, then renames the temporary over `path`. The
/// temporary is removed if `write` throws.
inline void write_atomically(const std::string& path,
                             const std::function<void(const std::string&)>& write) {
  detail::remove_stale_temporaries(path);
  const std::string temp = detail::temporary_sibling(path);
  try {
    write(temp);
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::error_code ec(errno, std::generic_category());
    std::remove(temp.c_str());
    throw Error(detail::concat("cannot rename ", temp, " to ", path, ": ", ec.message()));
  }
}

/// Opens `temp` as a binary stream, lets `fill` write to it, checks that
/// every byte reached the disk buffer.
inline void write_stream_atomically(const std::string& path,
                                    const std::function<void(std::ostream&)>& fill) {
  write_atomically(path, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) {
      const std::error_code ec(errno, std::generic_category());
      throw Error(detail::concat("cannot create ", temp, ": ", ec.message()));
    }
    fill(out);
    out.flush();
    if (!out) throw Error(detail::concat("write to ", temp, " failed (disk full?)"));
  });
}

} // namespace rectrain
