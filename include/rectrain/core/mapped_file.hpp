#pragma once
// A whole file mapped into memory (POSIX mmap), shared by the CSV reader
// and the zero-copy tensor-file loader.
//
// A mapped file that shrinks while it is read (another program truncates
// or rewrites it in place) would kill the process with SIGBUS on the first
// page past its new end. rectrain's SIGBUS handler recognises its own
// mappings: while a reader is still checking what it read (MappedFile's
// default), the missing page is replaced by zeros and the file is marked
// changed, so the reader throws "changed while it was read" instead of
// crashing; once a reader has handed the mapping over for long-lived use
// (tensors viewing it, hand_over()), the process stops with a message
// naming the file, since nothing can report the error any more. Faults at
// other addresses go to the handler that was installed before, or kill the
// process as they would have. Files that are not regular (pipes, process
// substitution) are read into memory instead.

#include <rectrain/core/error.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rectrain {
namespace detail {

/// One live mapping, as the SIGBUS handler sees it.
struct MappingSlot {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<const char*> path{nullptr};
  std::atomic<bool> fatal{false};    ///< handed over: a fault stops the process
  std::atomic<bool> faulted{false};  ///< a page past the file's end was read
};

inline constexpr int kMappingSlots = 256;

inline MappingSlot* mapping_slots() {
  static MappingSlot slots[kMappingSlots];
  return slots;
}

struct BusHandlerState {
  struct sigaction previous {};
  uintptr_t page_size = 4096;
};

inline BusHandlerState& bus_handler_state() {
  static BusHandlerState state;
  return state;
}

inline void write_stderr(const char* text) noexcept {
  size_t n = std::strlen(text);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, text, n);
    if (w <= 0) return;
    text += w;
    n -= static_cast<size_t>(w);
  }
}

inline void on_sigbus(int signal, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  const BusHandlerState& state = bus_handler_state();
  MappingSlot* slots = mapping_slots();
  for (int i = 0; i < kMappingSlots; ++i) {
    MappingSlot& slot = slots[i];
    if (address < slot.begin.load(std::memory_order_acquire) || address >= slot.end.load(std::memory_order_acquire))
      continue;
    if (slot.fatal.load()) {
      // Threads reading the same file fault together: one reports and ends
      // the process, the others wait for that (their writes interleaved).
      static std::atomic<bool> reporting{false};
      if (reporting.exchange(true))
        for (;;) ::pause();
      const char* path = slot.path.load();
      write_stderr("rectrain: fatal: ");
      write_stderr(path ? path : "a memory-mapped file");
      write_stderr(" shrank while this process still used its data (it is memory-mapped); do not modify or "
                   "truncate a file while a rectrain program reads it\n");
      ::_exit(1);
    }
    // Zeros in place of the page that is gone; the reader sees `faulted`.
    void* page = reinterpret_cast<void*>(address & ~(state.page_size - 1));
    if (::mmap(page, state.page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
        MAP_FAILED)
      ::_exit(1);
    slot.faulted.store(true);
    return;
  }
  // Not one of ours: as it would have been without rectrain.
  if ((state.previous.sa_flags & SA_SIGINFO) && state.previous.sa_sigaction) {
    state.previous.sa_sigaction(signal, info, context);
    return;
  }
  if (state.previous.sa_handler != SIG_DFL && state.previous.sa_handler != SIG_IGN && state.previous.sa_handler) {
    state.previous.sa_handler(signal);
    return;
  }
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  ::sigaction(SIGBUS, &fallback, nullptr);  // the fault repeats on return and ends the process
}

inline void install_bus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    BusHandlerState& state = bus_handler_state();
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page > 0) state.page_size = static_cast<uintptr_t>(page);
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &state.previous);
  });
}

inline std::mutex& mapping_slots_mutex() {
  static std::mutex m;
  return m;
}

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
    try {
      open_contents(copy_on_write);
    } catch (...) {
      release();
      throw;
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { release(); }
  char* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

  /// Whether the file changed since it was opened: a page past its end was
  /// read (it shrank), or its size, modification time or inode differ now.
  bool changed() const {
    if (slot_ && slot_->faulted.load()) return true;
    if (!S_ISREG(opened_.st_mode)) return false;
    struct stat now {};
    if (::stat(path_.c_str(), &now) != 0) return true;
    return now.st_ino != opened_.st_ino || now.st_dev != opened_.st_dev || now.st_size != opened_.st_size ||
           now.st_mtim.tv_sec != opened_.st_mtim.tv_sec || now.st_mtim.tv_nsec != opened_.st_mtim.tv_nsec;
  }

  /// The error to throw when changed(): what the file was and is.
  InputError changed_error() const {
    struct stat now {};
    const bool exists = ::stat(path_.c_str(), &now) == 0;
    return InputError(path_, 0, 0, "",
                      concat("the file changed while it was read (", opened_.st_size, " bytes when opened, ",
                             exists ? concat(now.st_size, " bytes now") : std::string("gone now"),
                             "); read it again once nothing writes to it"));
  }

  /// From now on the mapping serves long-lived data (tensors): a page
  /// that disappears stops the process with a message naming the file.
  void hand_over() const {
    if (slot_) slot_->fatal.store(true);
  }

 private:
  void open_contents(bool copy_on_write) {
    if (::fstat(fd_, &opened_) != 0) {
      const std::error_code ec(errno, std::generic_category());
      throw InputError(path_, 0, 0, "", concat("cannot read its size: ", ec.message()));
    }
    if (S_ISDIR(opened_.st_mode)) throw InputError(path_, 0, 0, "", "is a directory, expected a file");
    if (!S_ISREG(opened_.st_mode)) return read_stream();
    size_ = static_cast<size_t>(opened_.st_size);
    if (size_ == 0) return;
    install_bus_handler();
    void* data = ::mmap(nullptr, size_, copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd_, 0);
    if (data == MAP_FAILED) {
      const std::error_code ec(errno, std::generic_category());
      throw InputError(path_, 0, 0, "", concat("cannot map: ", ec.message()));
    }
    data_ = static_cast<char*>(data);
    ::madvise(data, size_, MADV_WILLNEED);
    if (!register_slot()) {  // every slot taken: read it instead
      ::munmap(data_, size_);
      data_ = nullptr;
      read_regular();
    }
  }

  void release() noexcept {
    if (slot_) {
      std::lock_guard<std::mutex> lock(mapping_slots_mutex());
      slot_->begin.store(0);
      slot_->end.store(0);
      slot_->path.store(nullptr);
      slot_->fatal.store(false);
      slot_->faulted.store(false);
      slot_ = nullptr;
    }
    if (data_ && !read_) ::munmap(data_, size_);
    if (data_ && read_) std::free(data_);
    data_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool register_slot() {
    std::lock_guard<std::mutex> lock(mapping_slots_mutex());
    MappingSlot* slots = mapping_slots();
    for (int i = 0; i < kMappingSlots; ++i) {
      if (slots[i].end.load() != 0) continue;
      slots[i].faulted.store(false);
      slots[i].fatal.store(false);
      slots[i].path.store(path_.c_str());
      slots[i].begin.store(reinterpret_cast<uintptr_t>(data_), std::memory_order_release);
      slots[i].end.store(reinterpret_cast<uintptr_t>(data_) + size_, std::memory_order_release);
      slot_ = &slots[i];
      return true;
    }
    return false;
  }

  void read_regular() {
    read_ = true;
    data_ = static_cast<char*>(std::malloc(size_));
    if (!data_) throw InputError(path_, 0, 0, "", concat("cannot allocate ", size_, " bytes to read it"));
    size_t done = 0;
    while (done < size_) {
      const ssize_t r = ::pread(fd_, data_ + done, size_ - done, static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        const std::string why = r < 0 ? std::error_code(errno, std::generic_category()).message()
                                      : std::string("it shrank while it was read");
        throw InputError(path_, 0, 0, "", concat("cannot read: ", why));
      }
      done += static_cast<size_t>(r);
    }
  }

  /// Pipes and other streams: read to the end.
  void read_stream() {
    read_ = true;
    size_t capacity = size_t{1} << 20;
    data_ = static_cast<char*>(std::malloc(capacity));
    while (data_) {
      if (size_ == capacity) {
        char* bigger = static_cast<char*>(std::realloc(data_, capacity * 2));
        if (!bigger) break;
        data_ = bigger;
        capacity *= 2;
      }
      const ssize_t r = ::read(fd_, data_ + size_, capacity - size_);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        const std::error_code ec(errno, std::generic_category());
        throw InputError(path_, 0, 0, "", concat("cannot read: ", ec.message()));
      }
      if (r == 0) return;
      size_ += static_cast<size_t>(r);
    }
    throw InputError(path_, 0, 0, "", "cannot allocate memory to read it");
  }

  std::string path_;
  int fd_ = -1;
  char* data_ = nullptr;
  size_t size_ = 0;
  struct stat opened_ {};
  bool read_ = false;  // data_ is a malloc'd copy, not a mapping
  MappingSlot* slot_ = nullptr;
};

} // namespace detail

/// A read-only (or copy-on-write) mapping of a whole file that notices the
/// file changing or shrinking under it (see MappedFile's members).
using detail::MappedFile;

} // namespace rectrain
