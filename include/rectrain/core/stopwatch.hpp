#pragma once
// Seconds since a point in time, on the steady clock: the one way rectrain
// times its stages, epochs and iterations.

#include <chrono>

namespace rectrain {

class Stopwatch {
 public:
  using clock = std::chrono::steady_clock;
  Stopwatch() : start_(clock::now()) {}
  /// Seconds since construction or the last restart().
  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  void restart() { start_ = clock::now(); }

 private:
  clock::time_point start_;
};

} // namespace rectrain
