#pragma once
// EpochRecord: what one epoch of one seed's model did, as reporters take
// it (the progress line's summary, metrics.jsonl, the learning curve, the
// run's speed summary). One flat JSON object a line in metrics.jsonl; read
// back with from_json when a run resumes.

#include <rectrain/core/error.hpp>
#include <rectrain/metrics/ranking.hpp>
#include <rectrain/train/epoch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

struct EpochRecord {
  uint64_t seed = 0;
  bool frozen = false;  ///< the id tables were frozen
  EpochStats stats;     ///< epoch, loss, per-head losses, rows, batches, seconds
  GroupMetric validation;  ///< validation GAUC and its users (NaN, 0: none)
  /// The step's matrix products at the epoch's rate, and plain torch::mm's
  /// on the same shapes (NaN: not measured).
  double model_gflops = std::numeric_limits<double>::quiet_NaN();
  double mm_gflops = std::numeric_limits<double>::quiet_NaN();

  /// One line of JSON: seed, epoch, frozen, loss, loss_<head> per head,
  /// valid_gauc, valid_users, rows, batches, seconds, rows_per_second,
  /// data_wait_share, model_gflops, mm_gflops. Non-finite numbers are null.
  std::string to_json() const;
  /// The record of a to_json() line; an Error naming `where` for anything
  /// else.
  static EpochRecord from_json(const std::string& line, const std::string& where);
  /// One line for a log: "seed 1 epoch 0 (frozen): loss 0.51234, valid
  /// GAUC 0.612345 (200 users), 51234 rows/s, data wait 1.2%, model 12.3
  /// GFLOP/s = 45% of torch::mm's 27.1, 3.4 s" (the GFLOP/s when measured).
  std::string summary() const;
};

namespace detail {

inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";  // JSON has no NaN or infinity
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

/// The fields of one flat JSON object (string keys; number, null, true or
/// false values), in order.
inline std::vector<std::pair<std::string, double>> parse_flat_json(const std::string& line, const std::string& where) {
  std::vector<std::pair<std::string, double>> out;
  size_t i = 0;
  auto fail = [&](const char* what) -> void {
    throw Error(concat(where, ": ", what, " at column ", i + 1, " of '", line, "'"));
  };
  auto skip_space = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  };
  auto expect = [&](char c) {
    skip_space();
    if (i >= line.size() || line[i] != c) fail(concat("expected '", c, "'").c_str());
    ++i;
  };
  expect('{');
  skip_space();
  if (i < line.size() && line[i] == '}') return out;
  while (true) {
    expect('"');
    std::string key;
    while (i < line.size() && line[i] != '"') {
      if (line[i] == '\\') fail("an escaped key");
      key += line[i++];
    }
    expect('"');
    expect(':');
    skip_space();
    double value = 0;
    if (line.compare(i, 4, "null") == 0) {
      value = std::numeric_limits<double>::quiet_NaN();
      i += 4;
    } else if (line.compare(i, 4, "true") == 0) {
      value = 1;
      i += 4;
    } else if (line.compare(i, 5, "false") == 0) {
      value = 0;
      i += 5;
    } else {
      const char* start = line.c_str() + i;
      char* end = nullptr;
      value = std::strtod(start, &end);
      if (end == start) fail("expected a number, null, true or false");
      i += static_cast<size_t>(end - start);
    }
    out.emplace_back(std::move(key), value);
    skip_space();
    if (i < line.size() && line[i] == ',') {
      ++i;
      continue;
    }
    expect('}');
    skip_space();
    if (i != line.size()) fail("text after the object");
    return out;
  }
}

} // namespace detail

inline std::string EpochRecord::to_json() const {
  std::string out = "{";
  auto field = [&out](const std::string& key, const std::string& value) {
    out += (out.size() > 1 ? "," : "") + detail::json_string(key) + ":" + value;
  };
  field("seed", std::to_string(seed));
  field("epoch", std::to_string(stats.epoch));
  field("frozen", frozen ? "true" : "false");
  field("loss", detail::json_number(stats.loss));
  for (const auto& [head, value] : stats.head_losses) field("loss_" + head, detail::json_number(value));
  field("valid_gauc", detail::json_number(validation.value));
  field("valid_users", std::to_string(validation.users));
  field("rows", std::to_string(stats.rows));
  field("batches", std::to_string(stats.batches));
  field("seconds", detail::json_number(stats.seconds));
  field("rows_per_second", detail::json_number(stats.rows_per_second()));
  field("data_wait_share", detail::json_number(stats.data_wait_share()));
  field("model_gflops", detail::json_number(model_gflops));
  field("mm_gflops", detail::json_number(mm_gflops));
  return out + "}";
}

inline EpochRecord EpochRecord::from_json(const std::string& line, const std::string& where) {
  EpochRecord r;
  bool seen_seed = false, seen_epoch = false;
  double wait_share = 0;  // rows_per_second is derived from rows and seconds
  for (const auto& [key, value] : detail::parse_flat_json(line, where)) {
    const auto count = [&, value = value] { return std::isfinite(value) ? static_cast<int64_t>(value) : int64_t{0}; };
    if (key == "seed") {
      r.seed = static_cast<uint64_t>(value);
      seen_seed = true;
    } else if (key == "epoch") {
      r.stats.epoch = count();
      seen_epoch = true;
    } else if (key == "frozen") {
      r.frozen = value != 0;
    } else if (key == "loss") {
      r.stats.loss = value;
    } else if (key.rfind("loss_", 0) == 0) {
      r.stats.head_losses.emplace_back(key.substr(5), value);
    } else if (key == "valid_gauc") {
      r.validation.value = value;
    } else if (key == "valid_users") {
      r.validation.users = count();
    } else if (key == "rows") {
      r.stats.rows = count();
    } else if (key == "batches") {
      r.stats.batches = count();
    } else if (key == "seconds") {
      r.stats.seconds = value;
    } else if (key == "data_wait_share") {
      wait_share = value;
    } else if (key == "model_gflops") {
      r.model_gflops = value;
    } else if (key == "mm_gflops") {
      r.mm_gflops = value;
    }
  }
  if (!seen_seed || !seen_epoch) throw Error(detail::concat(where, ": an epoch record needs seed and epoch: '", line, "'"));
  r.stats.wait_seconds = std::isfinite(wait_share) ? wait_share * r.stats.seconds : 0;
  return r;
}

inline std::string EpochRecord::summary() const {
  char buf[320];
  int n = std::snprintf(buf, sizeof buf, "seed %llu epoch %lld%s: loss %.5f, valid GAUC %.6f (%lld users), %.0f rows/s, "
                        "data wait %.1f%%", static_cast<unsigned long long>(seed), static_cast<long long>(stats.epoch),
                        frozen ? " (frozen)" : "", stats.loss, validation.value, static_cast<long long>(validation.users),
                        stats.rows_per_second(), 100 * stats.data_wait_share());
  if (std::isfinite(model_gflops) && std::isfinite(mm_gflops) && n > 0 && n < static_cast<int>(sizeof buf))
    n += std::snprintf(buf + n, sizeof buf - static_cast<size_t>(n), ", model %.1f GFLOP/s = %.0f%% of torch::mm's %.1f",
                       model_gflops, 100 * model_gflops / mm_gflops, mm_gflops);
  if (n > 0 && n < static_cast<int>(sizeof buf))
    std::snprintf(buf + n, sizeof buf - static_cast<size_t>(n), ", %.1f s", stats.seconds);
  return buf;
}

/// One to_json() line per record: metrics.jsonl's lines.
inline std::vector<std::string> to_json_lines(const std::vector<EpochRecord>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.to_json());
  return out;
}

/// The speed of a whole run: its epochs' products over their seconds, and
/// the share of torch::mm's rate that is (the seconds mm needs for the
/// same products, over the seconds the epochs took). Epochs without the
/// figures are left out.
struct RunSpeed {
  int64_t epochs = 0;
  double seconds = 0;
  double gflops = 0;
  double mm_share = 0;
};

inline RunSpeed run_speed(const std::vector<EpochRecord>& records) {
  RunSpeed speed;
  double gflop = 0, mm_seconds = 0;
  for (const auto& r : records) {
    const double s = r.stats.seconds;
    if (!(s > 0) || !(r.model_gflops > 0) || !(r.mm_gflops > 0)) continue;
    speed.seconds += s;
    gflop += r.model_gflops * s;
    mm_seconds += r.model_gflops * s / r.mm_gflops;
    ++speed.epochs;
  }
  if (speed.epochs > 0) {
    speed.gflops = gflop / speed.seconds;
    speed.mm_share = mm_seconds / speed.seconds;
  }
  return speed;
}

} // namespace rectrain
