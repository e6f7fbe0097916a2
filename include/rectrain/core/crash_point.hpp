#pragma once
// Crash points for fault-injection tests. With RECTRAIN_CRASH_AT=<point>:<n>
// in the environment, the process kills itself with SIGKILL the n-th time
// (from 1) it reaches <point>, as the OOM killer or a power cut would: no
// destructor, flush or handler runs. The points:
//
//   checkpoint.write   a checkpoint's temporary file holds part of its bytes
//   checkpoint.rename  the temporary file is complete, not yet renamed
//   epoch.step         an optimizer step of train_epoch has been taken
//   directory.swap     write_directory_atomically's new contents are
//                      complete beside the directory, not yet swapped in
//
// Unset (always, outside tests) a crash point costs one load of a pointer.

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

namespace rectrain {
namespace detail {

struct CrashTarget {
  std::string point;
  long hit = 0;
  std::atomic<long> hits{0};
};

inline CrashTarget* crash_target() {
  static CrashTarget* target = []() -> CrashTarget* {
    const char* spec = std::getenv("RECTRAIN_CRASH_AT");
    if (!spec || !*spec) return nullptr;
    const char* colon = std::strrchr(spec, ':');
    auto* t = new CrashTarget;  // lives as long as the process
    t->point = colon ? std::string(spec, colon) : std::string(spec);
    t->hit = colon ? std::strtol(colon + 1, nullptr, 10) : 1;
    return t;
  }();
  return target;
}

inline void crash_point(const char* point) {
  CrashTarget* target = crash_target();
  if (target && target->point == point && ++target->hits == target->hit) ::kill(::getpid(), SIGKILL);
}

} // namespace detail
} // namespace rectrain
