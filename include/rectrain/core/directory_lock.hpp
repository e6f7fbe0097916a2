#pragma once
// One writer per output directory: an advisory lock (flock) on
// `<dir>/.rectrain.lock`, held while the object lives and released by the
// kernel when the process ends, however it ends. A second run into the same
// directory fails at once with a message naming the process that holds it,
// instead of the two interleaving their checkpoints, models and
// predictions.
//
//   rectrain::DirectoryLock lock(out, "rectrain-vk train --data ...");

#include <rectrain/core/error.hpp>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace rectrain {

class DirectoryLock {
 public:
  /// Creates `dir` if needed and locks it; `owner` (what this process is
  /// doing) is written into the lock file for the message another process
  /// gets. Throws when another process holds the lock.
  explicit DirectoryLock(const std::string& dir, const std::string& owner = "") : dir_(dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(detail::concat("cannot create ", dir, ": ", ec.message()));
    path_ = (std::filesystem::path(dir) / ".rectrain.lock").string();
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(detail::concat("cannot create the lock file ", path_, ": ",
                                 std::error_code(errno, std::generic_category()).message()));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      const std::string holder = read_holder();
      ::close(fd_);
      fd_ = -1;
      if (error == EWOULDBLOCK)
        throw Error(detail::concat(dir, " is in use by another process (", holder.empty() ? "unknown" : holder,
                                   "); wait for it to finish, or choose another output directory"));
      throw Error(detail::concat("cannot lock ", path_, ": ", std::error_code(error, std::generic_category()).message()));
    }
    // Who holds it, for the next process's message.
    char when[32] = "";
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    if (::localtime_r(&now, &local)) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &local);
    const std::string text = detail::concat("pid ", ::getpid(), owner.empty() ? "" : ": ", owner, ", since ", when);
    if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, text.data(), text.size(), 0) < 0) {
      // The lock holds without its description; nothing to do.
    }
  }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }

  const std::string& directory() const noexcept { return dir_; }

 private:
  std::string read_holder() const {
    char buf[512];
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

} // namespace rectrain
