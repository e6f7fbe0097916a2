#pragma once
// A program's inputs, protected from its own outputs: files registered
// with protect_input() are refused by every rectrain writer
// (write_atomically), whatever path names them: the same file is the same
// device and inode, so symlinks and hard links are seen through.
//
//   rectrain::protect_input("data/");               // every file in it
//   rectrain::write_predictions("data/candidates.csv", ...);  // throws

#include <rectrain/core/error.hpp>

#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include <sys/stat.h>

namespace rectrain {
namespace detail {

struct ProtectedFile {
  dev_t device;
  ino_t inode;
  std::string path;
};

inline std::mutex& protected_files_mutex() {
  static std::mutex m;
  return m;
}

inline std::vector<ProtectedFile>& protected_files() {
  static std::vector<ProtectedFile> files;
  return files;
}

inline void protect_one(const std::string& path, const struct stat& st) {
  std::lock_guard<std::mutex> lock(protected_files_mutex());
  for (const auto& f : protected_files())
    if (f.device == st.st_dev && f.inode == st.st_ino) return;
  protected_files().push_back({st.st_dev, st.st_ino, path});
}

} // namespace detail

/// Registers `path` as an input of this process: a regular file, or every
/// regular file directly inside a directory (symlinks followed). Writers
/// then refuse to replace it. A path that does not exist is ignored.
inline void protect_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  if (S_ISREG(st.st_mode)) {
    detail::protect_one(path, st);
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().string();
    struct stat fs {};
    if (::stat(file.c_str(), &fs) == 0 && S_ISREG(fs.st_mode)) detail::protect_one(file, fs);
  }
}

/// Forgets every protect_input() registration (for programs that run
/// several jobs in one process).
inline void clear_protected_inputs() {
  std::lock_guard<std::mutex> lock(detail::protected_files_mutex());
  detail::protected_files().clear();
}

/// Throws unless writing `path` leaves every protected input alone: `path`
/// (symlinks followed) must not be one of them.
inline void check_not_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;  // a new file cannot be an input
  std::lock_guard<std::mutex> lock(detail::protected_files_mutex());
  for (const auto& f : detail::protected_files())
    if (f.device == st.st_dev && f.inode == st.st_ino)
      throw Error(detail::concat("refusing to write ", path, ": it is ",
                                 f.path == path ? std::string("an input") : "the input " + f.path,
                                 " of this run; choose another output path"));
}

} // namespace rectrain
