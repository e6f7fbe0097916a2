#pragma once
// Outputs are written to a temporary file beside the target and renamed
// over it, so a crash never leaves a half-written file under the real name.
// A write that fails (disk full, quota, I/O error) throws with the reason,
// removes the temporary and leaves the previous file as it was. Writers
// refuse a target that is one of the program's inputs (file_identity.hpp).
// With set_durable_writes(true), the data and the rename are also fsynced,
// so a power cut after the call returns cannot lose or tear the file.

#include <rectrain/core/crash_point.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/file_identity.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <functional>
#include <ostream>
#include <streambuf>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

namespace rectrain {

namespace detail {
inline std::atomic<bool>& durable_writes_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
} // namespace detail

/// Whether every atomic write also fsyncs its data before the rename and
/// the directory after it (off by default: a killed process never leaves a
/// torn file either way; this also covers power cuts, at the cost of
/// waiting for the disk).
inline void set_durable_writes(bool durable) { detail::durable_writes_flag() = durable; }
inline bool durable_writes() { return detail::durable_writes_flag(); }

namespace detail {
inline std::string temporary_sibling(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return concat(path, ".tmp.", ::getpid(), '.', counter++);
}

inline std::string errno_text(int error) { return std::error_code(error, std::generic_category()).message(); }

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
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(it->path(), ec);
  }
}

/// fsync of a file (or directory) by path; throws with the reason.
inline void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Error(concat("cannot open ", path, " to sync it: ", errno_text(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems cannot sync a directory; the data itself is synced.
  if (rc != 0 && !(directory && (error == EINVAL || error == EBADF)))
    throw Error(concat("cannot sync ", path, " to disk: ", errno_text(error)));
}

/// A stream buffer over a file descriptor that keeps the first error
/// (errno) of any write, so the caller can say why a write failed.
class FileStreamBuf final : public std::streambuf {
 public:
  explicit FileStreamBuf(int fd) : fd_(fd), buffer_(size_t{1} << 20) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  int error() const noexcept { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n >= static_cast<std::streamsize>(buffer_.size())) {  // large writes go straight through
      if (!drain() || !write_all(s, static_cast<size_t>(n))) return 0;
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    const size_t n = static_cast<size_t>(pptr() - pbase());
    const bool ok = write_all(pbase(), n);
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return ok;
  }
  bool write_all(const char* s, size_t n) {
    if (error_ != 0) return false;
    while (n > 0) {
      const ssize_t w = ::write(fd_, s, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return false;
      }
      s += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  int fd_;
  int error_ = 0;
  std::vector<char> buffer_;
};
} // namespace detail

/// Calls `write(temp_path)`, then renames the temporary over `path`. The
/// temporary is removed if `write` throws. Refuses a `path` that is a
/// protected input (protect_input).
inline void write_atomically(const std::string& path,
                             const std::function<void(const std::string&)>& write) {
  check_not_input(path);
  detail::remove_stale_temporaries(path);
  const std::string temp = detail::temporary_sibling(path);
  try {
    write(temp);
    if (durable_writes()) detail::fsync_path(temp, false);
  } catch (...) {
    std::remove(temp.c_str());
    throw;
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    throw Error(detail::concat("cannot rename ", temp, " to ", path, ": ", detail::errno_text(error)));
  }
  if (durable_writes()) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    detail::fsync_path(parent.empty() ? std::string(".") : parent.string(), true);
  }
}

/// Lets `fill` write to a binary stream over the temporary file; any
/// failed write throws with the system's reason ("No space left on
/// device"), the temporary removed and the previous file untouched.
inline void write_stream_atomically(const std::string& path,
                                    const std::function<void(std::ostream&)>& fill) {
  write_atomically(path, [&](const std::string& temp) {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) throw Error(detail::concat("cannot create ", temp, ": ", detail::errno_text(errno)));
    detail::FileStreamBuf buffer(fd);
    std::ostream out(&buffer);
    auto failed = [&](const std::string& why) {
      return Error(detail::concat("cannot write ", path, ": ", why,
                                  " (the partial file was removed; a previous ", path, " is unchanged)"));
    };
    try {
      fill(out);
      out.flush();
    } catch (...) {
      ::close(fd);
      throw;
    }
    const int write_error = buffer.error();
    const bool bad = !out;
    if (::close(fd) != 0 && write_error == 0) throw failed(detail::errno_text(errno));
    if (write_error != 0) throw failed(detail::errno_text(write_error));
    if (bad) throw failed("the stream failed");
  });
}

namespace detail {
/// Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); false
/// where the system or the file system cannot.
inline bool exchange_paths(const std::string& a, const std::string& b) {
#if defined(__linux__) && defined(SYS_renameat2)
  constexpr unsigned exchange = 1u << 1;  // RENAME_EXCHANGE
  return ::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), exchange) == 0;
#else
  (void)a;
  (void)b;
  return false;
#endif
}
} // namespace detail

/// Builds the new contents of directory `dir` in a staging directory beside
/// it (`fill(staging)`), then puts them in place in one rename (a swap
/// with the old directory, which is then removed): a crash leaves the old
/// contents or the new, never a mix of the two. An existing `dir` may only
/// hold files for which `replaceable(name)` is true (what the new contents
/// replace), or the call refuses before writing anything.
inline void write_directory_atomically(const std::string& dir, const std::function<void(const std::string&)>& fill,
                                       const std::function<bool(const std::string&)>& replaceable) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target = fs::absolute(fs::path(dir), ec).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "data/" -> "data"
  const std::string path = target.string();
  if (fs::exists(target)) {
    if (!fs::is_directory(target)) throw Error(detail::concat(dir, " exists and is not a directory"));
    std::vector<std::string> others;
    for (fs::directory_iterator it(target, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!replaceable(name)) others.push_back(name);
      else check_not_input(it->path().string());
    }
    if (!others.empty())
      throw Error(detail::concat(dir, " holds other files than the ones written there (", detail::join_names(others),
                                 "); choose a new or empty directory"));
  }
  detail::remove_stale_temporaries(path);
  const std::string staging = detail::temporary_sibling(path);
  try {
    fs::create_directories(staging);
    fill(staging);
    if (durable_writes()) detail::fsync_path(staging, true);
    detail::crash_point("directory.swap");
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  if (!fs::exists(target)) {
    if (std::rename(staging.c_str(), path.c_str()) != 0) {
      const int error = errno;
      fs::remove_all(staging, ec);
      throw Error(detail::concat("cannot rename ", staging, " to ", path, ": ", detail::errno_text(error)));
    }
  } else if (detail::exchange_paths(staging, path)) {
    fs::remove_all(staging, ec);  // the old contents, now under the staging name
  } else {
    // No atomic swap here: the old directory goes aside first, so a crash
    // in between leaves no directory at all (which fails to load), never
    // a mix.
    const std::string old = detail::temporary_sibling(path);
    if (std::rename(path.c_str(), old.c_str()) != 0 || std::rename(staging.c_str(), path.c_str()) != 0) {
      const int error = errno;
      throw Error(detail::concat("cannot move ", staging, " to ", path, ": ", detail::errno_text(error)));
    }
    fs::remove_all(old, ec);
  }
  if (durable_writes()) detail::fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", true);
}

/// Writes `lines`, each followed by a newline, as `path`, atomically.
inline void write_lines_atomically(const std::string& path, const std::vector<std::string>& lines) {
  write_stream_atomically(path, [&](std::ostream& out) {
    for (const auto& line : lines) out << line << '\n';
  });
}

} // namespace rectrain
