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
// With RECTRAIN_CRASH_RANK=<r> as well, only the process whose RANK is r
// crashes (one rank of a data-parallel run).
//
// Compiled in only where a build asks for it with RECTRAIN_FAULT_INJECTION=1
// (rectrain's own tests and rectrain-vk do, for the fault tests); elsewhere
// a crash point is nothing, and no environment variable can kill a user's
// program. Every translation unit of one program must agree on the macro.

#ifndef RECTRAIN_FAULT_INJECTION
#define RECTRAIN_FAULT_INJECTION 0
#endif

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

#if RECTRAIN_FAULT_INJECTION
inline CrashTarget* crash_target() {
  static CrashTarget* target = []() -> CrashTarget* {
    const char* spec = std::getenv("RECTRAIN_CRASH_AT");
    if (!spec || !*spec) return nullptr;
    const char* only_rank = std::getenv("RECTRAIN_CRASH_RANK");
    const char* rank = std::getenv("RANK");
    if (only_rank && *only_rank && std::strcmp(only_rank, rank ? rank : "0") != 0) return nullptr;
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
#else
inline void crash_point(const char*) {}
#endif

} // namespace detail
} // namespace rectrain
