#pragma once
// A progress line for a training loop's on_progress callback: rewritten in
// place on a terminal, one line every `log_seconds` otherwise (logs stay
// readable), on stderr.
//
//   ProgressLine progress;
//   options.progress_seconds(progress.seconds()).on_progress([&](const EpochProgress& p) {
//     progress.show(seed, p, frozen);
//   });
//   train_epoch(...);
//   progress.clear();

#include <rectrain/train/epoch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace rectrain {

/// A progress line on stderr: rewritten in place on a terminal, one line
/// every `seconds` otherwise (logs stay readable).
class ProgressLine {
 public:
  explicit ProgressLine(double terminal_seconds = 1.0, double log_seconds = 30.0)
      : terminal_(::isatty(STDERR_FILENO) != 0), seconds_(terminal_ ? terminal_seconds : log_seconds) {}
  double seconds() const { return seconds_; }

  void show(uint64_t seed, const EpochProgress& p, bool frozen) {
    std::fprintf(stderr, "%sseed %llu epoch %lld%s batch %lld/%lld  %.0f rows/s  loss %.4f  ETA %s%s",
                 terminal_ ? "\r\033[K" : "", static_cast<unsigned long long>(seed),
                 static_cast<long long>(p.epoch), frozen ? " (frozen)" : "", static_cast<long long>(p.batch),
                 static_cast<long long>(p.batches), p.rows_per_second(), p.loss, duration(p.eta_seconds()).c_str(),
                 terminal_ ? "" : "\n");
    std::fflush(stderr);
    shown_ = terminal_;
  }
  /// Ends an in-place line before other output.
  void clear() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

  static std::string duration(double s) {
    char buf[32];
    const auto t = static_cast<long long>(std::llround(std::max(0.0, s)));
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t / 60 % 60);
    else
      std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
    return buf;
  }

 private:
  bool terminal_;
  double seconds_;
  bool shown_ = false;
};

} // namespace rectrain
