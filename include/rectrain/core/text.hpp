#pragma once
// Fast number-to-text appends for the CSV writers (std::to_chars: no locale,
// shortest exact form for floats).

#include <charconv>
#include <cstdint>
#include <string>

namespace rectrain {
namespace detail {

inline void append_int(std::string& out, int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

/// Shortest text that reads back as exactly `v`.
inline void append_float(std::string& out, float v) {
  char buf[48];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

inline void append_fixed(std::string& out, double v, int digits) {
  char buf[352];  // fixed notation of any double fits
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, digits);
  out.append(buf, r.ptr);
}

} // namespace detail
} // namespace rectrain
