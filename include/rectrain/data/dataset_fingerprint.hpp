#pragma once
// What a dataset holds, in a few numbers: the rows and a content
// fingerprint of each of its parts (the three vocabularies, the four
// tables). Checkpoints and models keep it, so a run can tell the data it
// was trained on from other data of the same size, and say which part
// differs:
//
//   const auto here = DatasetFingerprint::of(ds);
//   const auto diff = saved.differences(here);   // "" when the same data

#include <rectrain/core/checksum.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/table.hpp>

#include <sstream>
#include <string>
#include <vector>

namespace rectrain {

/// A fingerprint of a table: its column names, types, shapes and bytes,
/// in column order.
inline uint64_t fingerprint(const Table& table) {
  std::vector<uint64_t> parts;
  for (const auto& column : table.columns()) {
    parts.push_back(detail::xxh64(column.key().data(), column.key().size()));
    parts.push_back(fingerprint(column.value()));
  }
  return detail::xxh64(parts.data(), parts.size() * sizeof(uint64_t));
}

struct DatasetFingerprint {
  struct Part {
    std::string name;
    int64_t rows = 0;
    uint64_t value = 0;
  };
  std::vector<Part> parts;

  /// The parts of `ds`: user_ids, item_ids, source_ids (the raw ids of each
  /// vocabulary), interactions, users, items, candidates.
  static DatasetFingerprint of(const Dataset& ds) {
    DatasetFingerprint f;
    f.parts.push_back({"user_ids", ds.num_users(), fingerprint(ds.user_ids.raw_ids())});
    f.parts.push_back({"item_ids", ds.num_items(), fingerprint(ds.item_ids.raw_ids())});
    f.parts.push_back({"source_ids", ds.num_sources(), fingerprint(ds.source_ids.raw_ids())});
    f.parts.push_back({"interactions", ds.interactions.num_rows(), fingerprint(ds.interactions)});
    f.parts.push_back({"users", ds.users.num_rows(), fingerprint(ds.users)});
    f.parts.push_back({"items", ds.items.num_rows(), fingerprint(ds.items)});
    f.parts.push_back({"candidates", ds.candidates.num_rows(), fingerprint(ds.candidates)});
    return f;
  }

  /// One line per part: "<name> <rows> <16 hex digits>".
  std::string to_text() const {
    std::string out;
    for (const auto& p : parts) out += detail::concat(p.name, ' ', p.rows, ' ', fingerprint_hex(p.value), '\n');
    return out;
  }

  /// Reads to_text(); `where` names the file for errors.
  static DatasetFingerprint from_text(const std::string& text, const std::string& where) {
    DatasetFingerprint f;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::istringstream fields(line);
      Part p;
      std::string hex;
      if (!(fields >> p.name >> p.rows >> hex) || hex.size() != 16 ||
          hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw Error(detail::concat(where, ": bad data fingerprint line '", line, "'"));
      p.value = std::stoull(hex, nullptr, 16);
      f.parts.push_back(p);
    }
    return f;
  }

  /// The parts that differ from `other`, described ("interactions: 76700
  /// rows, fingerprint 1a2b... there; 76700 rows, 3c4d... here"), one per
  /// line; empty when the two describe the same data.
  std::string differences(const DatasetFingerprint& other, const std::string& there = "there",
                          const std::string& here = "here") const {
    std::string out;
    for (const auto& mine : parts) {
      const Part* theirs = nullptr;
      for (const auto& p : other.parts)
        if (p.name == mine.name) theirs = &p;
      if (!theirs) {
        out += detail::concat("  ", mine.name, ": only ", there, '\n');
      } else if (theirs->rows != mine.rows || theirs->value != mine.value) {
        out += detail::concat("  ", mine.name, ": ", mine.rows, " rows, fingerprint ", fingerprint_hex(mine.value),
                              " ", there, "; ", theirs->rows, " rows, fingerprint ", fingerprint_hex(theirs->value),
                              " ", here, '\n');
      }
    }
    for (const auto& p : other.parts) {
      bool found = false;
      for (const auto& mine : parts) found = found || mine.name == p.name;
      if (!found) out += detail::concat("  ", p.name, ": only ", here, '\n');
    }
    return out;
  }
};

} // namespace rectrain
