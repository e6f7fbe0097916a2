#pragma once
// A whole file mapped into memory (POSIX mmap), shared by the CSV reader
// and the zero-copy tensor-file loader.

#include <rectrain/core/error.hpp>

#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rectrain {
namespace detail {

class MappedFile {
 public:
  /// With `copy_on_write`, pages are writable and private: writes never
  /// reach the file (tensors viewing the mapping may be modified in place).
  explicit MappedFile(const std::string& path, bool copy_on_write = false) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const std::error_code ec(errno, std::generic_category());
      throw InputError(path, 0, 0, "", concat("cannot open: ", ec.message()));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw InputError(path, 0, 0, "", "not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* data = ::mmap(nullptr, size_, copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ,
                          MAP_PRIVATE, fd_, 0);
      if (data == MAP_FAILED) {
        const std::error_code ec(errno, std::generic_category());
        ::close(fd_);
        throw InputError(path, 0, 0, "", concat("cannot map: ", ec.message()));
      }
      data_ = static_cast<char*>(data);
      ::madvise(data, size_, MADV_WILLNEED);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  char* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  char* data_ = nullptr;
  size_t size_ = 0;
};

} // namespace detail
} // namespace rectrain
