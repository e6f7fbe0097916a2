#pragma once
// Reading a trainer's settings from text (command-line flags, key=value
// files), with errors that name the setting: comma-separated lists, seeds,
// widths and byte sizes.

#include <rectrain/core/error.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace rectrain {

namespace detail {

/// Every part of `text` between `separator`s, empty ones too ("" gives one
/// empty part).
inline std::vector<std::string> split_keeping_empty(const std::string& text, char separator) {
  std::vector<std::string> out(1);
  for (const char c : text) {
    if (c == separator)
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

/// `text` as a T (long long, unsigned long long or double) when all of it
/// is one number; nullopt otherwise (empty, trailing text, out of range).
template <typename T>
std::optional<T> whole_number(const std::string& text) {
  try {
    size_t used = 0;
    T v{};
    if constexpr (std::is_floating_point_v<T>) v = std::stod(text, &used);
    else if constexpr (std::is_unsigned_v<T>) v = std::stoull(text, &used);
    else v = std::stoll(text, &used);
    if (!text.empty() && used == text.size()) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

} // namespace detail

/// The non-empty parts of `text` between `separator`s.
inline std::vector<std::string> split_list(const std::string& text, char separator = ',') {
  std::vector<std::string> out;
  for (auto& part : detail::split_keeping_empty(text, separator))
    if (!part.empty()) out.push_back(std::move(part));
  return out;
}

/// Distinct non-negative integers below 2^64, comma-separated (a trailing
/// comma is allowed): seeds, say. `what` names the setting in errors.
inline std::vector<uint64_t> parse_seed_list(const std::string& text, const std::string& what) {
  std::vector<uint64_t> seeds;
  auto parts = detail::split_keeping_empty(text, ',');
  if (parts.size() > 1 && parts.back().empty()) parts.pop_back();  // a trailing comma
  for (const auto& part : parts) {
    // stoull takes "-1" as 2^64 - 1: a sign is refused before it.
    const auto value = part.empty() || part[0] == '-' || part[0] == '+'
                           ? std::nullopt
                           : detail::whole_number<unsigned long long>(part);
    if (!value) throw Error(what + ": '" + part + "' is not a seed (a non-negative integer below 2^64)");
    if (std::find(seeds.begin(), seeds.end(), *value) != seeds.end())
      throw Error(what + ": seed " + part + " is given twice (the ensemble would average a model with itself)");
    seeds.push_back(*value);
  }
  return seeds;
}

/// "512,256" as positive widths.
inline std::vector<int64_t> parse_width_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  for (const auto& part : detail::split_keeping_empty(text, ',')) {
    const auto v = detail::whole_number<long long>(part);
    if (!v || *v < 1) throw Error(what + ": '" + text + "' is not a list of positive widths (e.g. 512,256)");
    out.push_back(*v);
  }
  return out;
}

/// A size in bytes with an optional binary suffix (K, M, G, T, also KiB,
/// MB, ...): "512M", "12G", "1.5T", "4096".
inline int64_t parse_byte_size(const std::string& text, const std::string& what) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string suffix = text.substr(used);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix.size() > 1 && suffix.back() == 'i') suffix.pop_back();
  double scale = 1;
  if (suffix == "K" || suffix == "k") scale = 1024.0;
  else if (suffix == "M" || suffix == "m") scale = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "g") scale = 1024.0 * 1024 * 1024;
  else if (suffix == "T" || suffix == "t") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (!suffix.empty()) used = 0;
  if (used == 0 || !(value >= 0) || value * scale > 9.0e18)
    throw Error(what + ": '" + text + "' is not a size (e.g. 12G, 512M)");
  return static_cast<int64_t>(value * scale);
}

} // namespace rectrain
