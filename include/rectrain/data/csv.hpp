#pragma once
// A parallel, validating CSV reader for the numeric files of the dataset
// layout. The file is memory-mapped and cut into chunks at line boundaries;
// one pass counts lines per chunk (so every row knows its line number and
// output slot), a second parses the chunks in parallel straight into the
// output tensors. Errors name file, line and column; when several chunks
// fail, the earliest line is reported, so errors do not depend on threads.

#include <rectrain/core/error.hpp>
#include <rectrain/core/file_format.hpp>
#include <rectrain/core/mapped_file.hpp>
#include <rectrain/data/table.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>


namespace rectrain {

/// How a CSV field is validated and stored.
enum class CsvType : uint8_t {
  Id,                 ///< non-negative integer below 2^63, stored as int64
  Integer,            ///< integer in [min_value, max_value], stored as int64
  Number,             ///< finite number, stored as float32
  NonNegativeNumber,  ///< finite number >= 0, stored as float32
  Flag,               ///< 0 or 1, stored as uint8
};

/// A column the reader looks for in the header.
struct CsvField {
  std::string name;
  CsvType type = CsvType::Number;
  bool required = true;
  int64_t min_value = std::numeric_limits<int64_t>::min();  ///< for Integer
  int64_t max_value = std::numeric_limits<int64_t>::max();  ///< for Integer
};

/// What to do with header columns no CsvField names.
enum class ExtraColumns : uint8_t {
  Ignore,        ///< skip them, with one warning naming them
  KeepAsNumber,  ///< parse them as finite numbers (float32 columns)
};

struct CsvOptions {
  TORCH_ARG(ExtraColumns, extra_columns) = ExtraColumns::Ignore;
  /// Target bytes per parallel chunk; chunks are cut at line boundaries.
  TORCH_ARG(int64_t, chunk_bytes) = int64_t{1} << 20;
};

namespace detail {

/// Counts '\n' bytes eight at a time (exact zero-byte test, no false hits).
inline int64_t count_newlines(const char* p, const char* end) noexcept {
  constexpr uint64_t ones = 0x0101010101010101ULL, nl = ones * '\n',
                     low7 = ones * 0x7f, high = ones * 0x80;
  int64_t count = 0;
  for (; p + 8 <= end; p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    const uint64_t x = word ^ nl;
    // One 0x80 per '\n' byte; summed by a multiply (no popcount
    // instruction needed on baseline x86-64).
    count += static_cast<int64_t>((((~(((x & low7) + low7) | x) & high) >> 7) * ones) >> 56);
  }
  for (; p < end; ++p) count += (*p == '\n');
  return count;
}

enum class CsvFault : uint8_t {
  None, EmptyLine, TooFewFields, TooManyFields, NotInteger, NegativeId, IdTooLarge,
  OutOfRange, NotNumber, NotFinite, Negative, NotFlag,
};

struct CsvFailure {
  int64_t row = std::numeric_limits<int64_t>::max();
  int64_t column = 0;  // 0-based header index
  CsvFault fault = CsvFault::None;
  std::string text;
  int64_t fields_found = 0;
};

// A column's parse action, resolved once from the header.
struct CsvSink {
  CsvType type = CsvType::Number;
  bool skip = true;
  void* data = nullptr;
  int64_t min_value = 0, max_value = 0;
};

inline bool is_field_end(char c) noexcept { return c == ',' || c == '\n' || c == '\r'; }

// Parses an integer starting at p; leaves p on the first byte after it.
inline CsvFault parse_integer(const char*& p, const char* end, int64_t& out) noexcept {
  bool negative = false;
  if (p < end && *p == '-') {
    negative = true;
    ++p;
  }
  const char* digits = p;
  uint64_t value = 0;
  while (p < end && static_cast<unsigned>(*p - '0') < 10u) {
    value = value * 10 + static_cast<unsigned>(*p - '0');
    ++p;
  }
  const auto count = p - digits;
  if (count == 0 || (p < end && !is_field_end(*p))) return CsvFault::NotInteger;
  if (count > 19 || value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return CsvFault::IdTooLarge;
  out = negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  return CsvFault::None;
}

inline CsvFault parse_field(const CsvSink& sink, int64_t row, const char*& p,
                            const char* end) noexcept {
  switch (sink.type) {
    case CsvType::Id:
    case CsvType::Integer: {
      int64_t value = 0;
      const bool negative = p < end && *p == '-';
      const CsvFault fault = parse_integer(p, end, value);
      if (fault != CsvFault::None) return fault;
      if (sink.type == CsvType::Id) {
        if (negative) return CsvFault::NegativeId;
      } else if (value < sink.min_value || value > sink.max_value) {
        return CsvFault::OutOfRange;
      }
      static_cast<int64_t*>(sink.data)[row] = value;
      return CsvFault::None;
    }
    case CsvType::Flag: {
      // The fast path is one byte; "1.0" and the like go through from_chars.
      if (p + 1 <= end && (*p == '0' || *p == '1') && (p + 1 == end || is_field_end(p[1]))) {
        static_cast<uint8_t*>(sink.data)[row] = static_cast<uint8_t>(*p - '0');
        ++p;
        return CsvFault::None;
      }
      double value = 0;
      const auto result = std::from_chars(p, end, value);
      if (result.ec != std::errc() || (result.ptr < end && !is_field_end(*result.ptr)) ||
          (value != 0.0 && value != 1.0))
        return CsvFault::NotFlag;
      p = result.ptr;
      static_cast<uint8_t*>(sink.data)[row] = static_cast<uint8_t>(value);
      return CsvFault::None;
    }
    case CsvType::Number:
    case CsvType::NonNegativeNumber: {
      float value = 0;
      const auto result = std::from_chars(p, end, value);
      if (result.ec == std::errc::result_out_of_range) return CsvFault::NotFinite;
      if (result.ec != std::errc() || (result.ptr < end && !is_field_end(*result.ptr)))
        return CsvFault::NotNumber;
      if (!std::isfinite(value)) return CsvFault::NotFinite;
      if (sink.type == CsvType::NonNegativeNumber && value < 0) return CsvFault::Negative;
      p = result.ptr;
      static_cast<float*>(sink.data)[row] = value;
      return CsvFault::None;
    }
  }
  return CsvFault::NotNumber;
}

inline const char* line_end(const char* p, const char* end) noexcept {
  const void* nl = std::memchr(p, '\n', static_cast<size_t>(end - p));
  return nl ? static_cast<const char*>(nl) : end;
}

// Parses rows [p, end) of one chunk; the first failure stops the chunk.
inline void parse_chunk(const std::vector<CsvSink>& sinks, const char* p, const char* end,
                        int64_t row, CsvFailure& failure) {
  const int64_t columns = static_cast<int64_t>(sinks.size());
  while (p < end) {
    const char* line_start = p;
    if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n') ||
        (*p == '\r' && p + 1 == end)) {
      failure = {row, 0, CsvFault::EmptyLine, "", 0};
      return;
    }
    // A line split wrongly keeps its text, for the delimiter hint.
    auto whole_line = [&] {
      const char* stop = line_end(line_start, end);
      return std::string(line_start, static_cast<size_t>(std::min<std::ptrdiff_t>(stop - line_start, 400)));
    };
    for (int64_t c = 0; c < columns; ++c) {
      const CsvSink& sink = sinks[static_cast<size_t>(c)];
      const char* field = p;
      CsvFault fault = CsvFault::None;
      if (sink.skip) {
        while (p < end && !is_field_end(*p)) ++p;
      } else {
        fault = parse_field(sink, row, p, end);
      }
      if (fault != CsvFault::None) {
        const char* stop = field;
        while (stop < end && !is_field_end(*stop) && stop - field < 40) ++stop;
        failure = {row, c, fault, std::string(field, stop), 0};
        return;
      }
      // p is on a delimiter, '\r', or the end of the file.
      const bool last = c + 1 == columns;
      const char delimiter = p < end ? *p : '\n';
      if (delimiter == ',') {
        if (last) {
          const char* stop = line_end(line_start, end);
          failure = {row, 0, CsvFault::TooManyFields, whole_line(),
                     1 + std::count(line_start, stop, ',')};
          return;
        }
        ++p;
      } else {
        if (delimiter == '\r') {
          if (p + 1 < end && p[1] != '\n') {
            failure = {row, c, CsvFault::NotNumber, "\\r", 0};
            return;
          }
          ++p;
        }
        if (!last) {
          failure = {row, 0, CsvFault::TooFewFields, whole_line(), c + 1};
          return;
        }
        if (p < end) ++p;  // the '\n'
      }
    }
    ++row;
  }
}

inline std::string describe(const CsvFailure& f, CsvType type, const CsvSink& sink,
                            int64_t expected_fields) {
  const std::string got = concat("'", f.text, "'");
  switch (f.fault) {
    case CsvFault::EmptyLine: return concat("empty line (expected ", expected_fields, " fields)");
    case CsvFault::TooFewFields:
    case CsvFault::TooManyFields:
      return concat("wrong field count: expected ", expected_fields, ", found ", f.fields_found,
                    delimiter_hint(f.text));
    case CsvFault::NotInteger:
      return (type == CsvType::Id ? concat("expected a non-negative integer id, got ", got)
                                  : concat("expected an integer, got ", got)) +
             delimiter_hint(f.text, "field");
    case CsvFault::NegativeId: return concat("negative id ", got, " (ids must be >= 0)");
    case CsvFault::IdTooLarge: return concat("integer ", got, " does not fit below 2^63");
    case CsvFault::OutOfRange:
      return concat("value ", got, " outside [", sink.min_value, ", ", sink.max_value, "]");
    case CsvFault::NotNumber: return concat("expected a number, got ", got, delimiter_hint(f.text, "field"));
    case CsvFault::NotFinite: return concat("NaN or infinite number ", got, " is not allowed");
    case CsvFault::Negative: return concat("expected a non-negative number, got ", got);
    case CsvFault::NotFlag: return concat("expected a flag 0 or 1, got ", got, delimiter_hint(f.text, "field"));
    case CsvFault::None: break;
  }
  return "unknown error";
}

inline std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return c != ' ' && c != '\t'; };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

} // namespace detail

/// A mapped CSV file with a parsed header; `read` parses the rows.
class CsvFile {
 public:
  explicit CsvFile(const std::string& path) : file_(path) {
    try {
      parse_header(path);
    } catch (const InputError&) {
      if (file_.changed()) throw file_.changed_error();
      throw;
    }
  }

  const std::string& path() const noexcept { return file_.path(); }
  const std::vector<std::string>& header() const noexcept { return header_; }
  /// Bytes of the whole file.
  int64_t size_bytes() const noexcept { return static_cast<int64_t>(file_.size()); }

  /// 0-based position of `name` in the header, or -1.
  int64_t column_index(const std::string& name) const noexcept {
    for (size_t i = 0; i < header_.size(); ++i)
      if (header_[i] == name) return static_cast<int64_t>(i);
    return -1;
  }

  /// Parses every row. The result has one column per `fields` entry found
  /// in the header (a missing required one throws), plus the extra columns
  /// when options.extra_columns() is KeepAsNumber, in header order.
  Table read(const std::vector<CsvField>& fields, const CsvOptions& options = {}) const {
    const int64_t columns = static_cast<int64_t>(header_.size());
    std::vector<detail::CsvSink> sinks(static_cast<size_t>(columns));
    std::vector<int64_t> field_of(static_cast<size_t>(columns), -1);
    for (size_t f = 0; f < fields.size(); ++f) {
      const int64_t c = column_index(fields[f].name);
      if (c < 0) {
        if (fields[f].required)
          throw InputError(path(), 1, 0, fields[f].name,
                           detail::concat("missing required column (header has: ",
                                          header_list(), ")", detail::delimiter_hint(header_line_)));
        continue;
      }
      field_of[static_cast<size_t>(c)] = static_cast<int64_t>(f);
    }
    std::vector<std::string> extras;
    for (int64_t c = 0; c < columns; ++c) {
      auto& sink = sinks[static_cast<size_t>(c)];
      const int64_t f = field_of[static_cast<size_t>(c)];
      if (f >= 0) {
        sink.skip = false;
        sink.type = fields[static_cast<size_t>(f)].type;
        sink.min_value = fields[static_cast<size_t>(f)].min_value;
        sink.max_value = fields[static_cast<size_t>(f)].max_value;
      } else {
        extras.push_back(header_[static_cast<size_t>(c)]);
        sink.skip = options.extra_columns() == ExtraColumns::Ignore;
        sink.type = CsvType::Number;
      }
    }
    if (!extras.empty() && options.extra_columns() == ExtraColumns::Ignore)
      warn(detail::concat(path(), ": ignoring unknown column(s): ", detail::join_names(extras)));

    // Pass 1: chunks cut after a '\n', rows counted per chunk.
    const char* end = file_.data() + file_.size();
    const int64_t body_bytes = end - body_;
    const int64_t chunk_count = std::max<int64_t>(
        1, std::min<int64_t>(body_bytes / std::max<int64_t>(1, options.chunk_bytes()) + 1,
                             int64_t{1} << 16));
    std::vector<const char*> bounds(static_cast<size_t>(chunk_count + 1));
    bounds[0] = body_;
    bounds[static_cast<size_t>(chunk_count)] = end;
    for (int64_t k = 1; k < chunk_count; ++k) {
      const char* guess = body_ + body_bytes * k / chunk_count;
      guess = std::max(guess, bounds[static_cast<size_t>(k - 1)]);
      const char* nl = detail::line_end(guess, end);
      bounds[static_cast<size_t>(k)] = nl < end ? nl + 1 : end;
    }
    std::vector<int64_t> first_row(static_cast<size_t>(chunk_count + 1), 0);
    at::parallel_for(0, chunk_count, 1, [&](int64_t begin, int64_t stop) {
      for (int64_t k = begin; k < stop; ++k) {
        const char* b = bounds[static_cast<size_t>(k)];
        const char* e = bounds[static_cast<size_t>(k + 1)];
        int64_t rows = detail::count_newlines(b, e);
        if (e == end && e > b && e[-1] != '\n') ++rows;  // last line without '\n'
        first_row[static_cast<size_t>(k + 1)] = rows;
      }
    });
    for (int64_t k = 0; k < chunk_count; ++k)
      first_row[static_cast<size_t>(k + 1)] += first_row[static_cast<size_t>(k)];
    const int64_t rows = first_row[static_cast<size_t>(chunk_count)];

    Table table;
    std::vector<torch::Tensor> outputs(static_cast<size_t>(columns));
    for (int64_t c = 0; c < columns; ++c) {
      auto& sink = sinks[static_cast<size_t>(c)];
      if (sink.skip) continue;
      const auto dtype = sink.type == CsvType::Flag ? torch::kUInt8
                         : (sink.type == CsvType::Id || sink.type == CsvType::Integer)
                             ? torch::kInt64
                             : torch::kFloat32;
      outputs[static_cast<size_t>(c)] = torch::empty({rows}, dtype);
      sink.data = outputs[static_cast<size_t>(c)].data_ptr();
    }

    // Pass 2: parse chunks in parallel into their row slots.
    std::vector<detail::CsvFailure> failures(static_cast<size_t>(chunk_count));
    at::parallel_for(0, chunk_count, 1, [&](int64_t begin, int64_t stop) {
      for (int64_t k = begin; k < stop; ++k)
        detail::parse_chunk(sinks, bounds[static_cast<size_t>(k)],
                            bounds[static_cast<size_t>(k + 1)],
                            first_row[static_cast<size_t>(k)], failures[static_cast<size_t>(k)]);
    });
    // A file that changed while it was parsed (pages past a new end read as
    // zeros) makes any error, or the data, meaningless: say that instead.
    if (file_.changed()) throw file_.changed_error();
    for (const auto& f : failures) {
      if (f.fault == detail::CsvFault::None) continue;
      const bool whole_line = f.fault == detail::CsvFault::EmptyLine ||
                              f.fault == detail::CsvFault::TooFewFields ||
                              f.fault == detail::CsvFault::TooManyFields;
      const auto& sink = sinks[static_cast<size_t>(f.column)];
      throw InputError(path(), f.row + 2, whole_line ? 0 : f.column + 1,
                       whole_line ? "" : header_[static_cast<size_t>(f.column)],
                       detail::describe(f, sink.type, sink, columns));
    }
    for (int64_t c = 0; c < columns; ++c)
      if (outputs[static_cast<size_t>(c)].defined())
        table.add(header_[static_cast<size_t>(c)], outputs[static_cast<size_t>(c)]);
    return table;
  }

 private:
  std::string header_list() const {
    std::string out;
    for (const auto& h : header_) out += (out.empty() ? "" : ",") + h;
    return out;
  }

  void parse_header(const std::string& path) {
    const char* data = file_.data();
    const char* end = data + file_.size();
    const char* p = data;
    if (file_.size() >= 3 && std::memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;  // UTF-8 BOM
    if (p == end) throw InputError(path, 1, 0, "", "empty file, expected a header line");
    const std::string foreign = detail::describe_foreign_format(p, static_cast<size_t>(end - p));
    if (!foreign.empty()) throw InputError(path, 0, 0, "", "not a CSV text file: " + foreign);
    if (std::memchr(p, '\0', static_cast<size_t>(std::min<std::ptrdiff_t>(end - p, 4096))))
      throw InputError(path, 0, 0, "", "not a CSV text file: its first bytes hold NUL bytes (a binary file?)");
    const char* header_end = detail::line_end(p, end);
    body_ = header_end < end ? header_end + 1 : end;
    std::string line(p, header_end);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    header_line_ = line;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      header_.push_back(detail::trim(line.substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    for (size_t i = 0; i < header_.size(); ++i) {
      if (header_[i].empty())
        throw InputError(path, 1, static_cast<int64_t>(i + 1), "", "empty column name in header");
      for (size_t j = 0; j < i; ++j)
        if (header_[j] == header_[i])
          throw InputError(path, 1, static_cast<int64_t>(i + 1), header_[i],
                           detail::concat("duplicate column name (also column ", j + 1, ")"));
    }
  }

  detail::MappedFile file_;
  const char* body_ = nullptr;
  std::string header_line_;
  std::vector<std::string> header_;
};

/// Reads a CSV file in one call; see CsvFile::read.
inline Table read_csv(const std::string& path, const std::vector<CsvField>& fields,
                      const CsvOptions& options = {}) {
  return CsvFile(path).read(fields, options);
}

} // namespace rectrain
