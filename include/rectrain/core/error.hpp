#pragma once
// Exceptions thrown by rectrain. Bad input always says where it is: file,
// line and column for text files, tensor name and shape for tensors.

#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rectrain {

/// Base of every exception rectrain throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A problem at a position in an input file. `line` and `column` are
/// 1-based; `column` counts fields (CSV columns), 0 when the problem is the
/// whole line or file.
class InputError : public Error {
 public:
  InputError(std::string file, int64_t line, int64_t column,
             std::string column_name, const std::string& message)
      : Error(format(file, line, column, column_name, message)),
        file_(std::move(file)),
        line_(line),
        column_(column),
        column_name_(std::move(column_name)) {}

  const std::string& file() const noexcept { return file_; }
  int64_t line() const noexcept { return line_; }
  int64_t column() const noexcept { return column_; }
  const std::string& column_name() const noexcept { return column_name_; }

 private:
  static std::string format(const std::string& file, int64_t line,
                            int64_t column, const std::string& column_name,
                            const std::string& message) {
    std::ostringstream out;
    out << file;
    if (line > 0) out << ':' << line;
    if (column > 0) out << ':' << column;
    out << ": ";
    if (!column_name.empty()) out << "column '" << column_name << "': ";
    out << message;
    return out.str();
  }

  std::string file_;
  int64_t line_;
  int64_t column_;
  std::string column_name_;
};

/// A file whose bytes no longer match the checksums written into it:
/// damaged on disk or changed after it was written. `record()` names the
/// part of the file that failed (a zip record), when there is one.
class ChecksumError : public InputError {
 public:
  ChecksumError(std::string file, std::string record, const std::string& message)
      : InputError(std::move(file), 0, 0, "", "damaged: " + message), record_(std::move(record)) {}
  const std::string& record() const noexcept { return record_; }

 private:
  std::string record_;
};

/// A tensor argument of the wrong shape, type or content.
class TensorError : public Error {
 public:
  using Error::Error;
};

/// `parts` joined by `separator`.
inline std::string join(const std::vector<std::string>& parts, const std::string& separator = ",") {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

namespace detail {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

/// A tensor's shape for an error message ("[2, 3]"), or "undefined".
template <typename TensorType>
std::string shape_of(const TensorType& t) {
  return t.defined() ? concat(t.sizes()) : std::string("undefined");
}

/// "CPULongType [3, 4]" (type and shape), or "undefined".
template <typename TensorType>
std::string type_and_shape_of(const TensorType& t) {
  return t.defined() ? concat(t.toString(), " ", t.sizes()) : std::string("undefined");
}

/// Throws "<owner>: expected <name> [..., dim], got <shape>" unless `t`'s
/// last dimension is `dim`.
template <typename TensorType>
void check_last_dim(const char* owner, const char* name, const TensorType& t, int64_t dim) {
  if (!t.defined() || t.dim() == 0 || t.size(-1) != dim)
    throw TensorError(concat(owner, ": expected ", name, *name ? " " : "", "[..., ", dim, "], got ", shape_of(t)));
}

/// "a, b, c", or "none": the names an error message offers instead.
inline std::string join_names(const std::vector<std::string>& names) {
  return names.empty() ? "none" : join(names, ", ");
}

} // namespace detail

/// Where rectrain's warnings go (an input column it ignores, say). The
/// default prints "rectrain: warning: <message>" to stderr; a program can
/// route them to its own log instead, or pass nullptr for the default.
using WarningHandler = std::function<void(const std::string&)>;

namespace detail {
inline std::mutex& warning_mutex() {
  static std::mutex m;
  return m;
}
inline WarningHandler& warning_handler() {
  static WarningHandler handler;
  return handler;
}
} // namespace detail

inline void set_warning_handler(WarningHandler handler) {
  std::lock_guard<std::mutex> lock(detail::warning_mutex());
  detail::warning_handler() = std::move(handler);
}

/// Reports a warning through the handler set with set_warning_handler.
inline void warn(const std::string& message) {
  std::lock_guard<std::mutex> lock(detail::warning_mutex());
  if (detail::warning_handler())
    detail::warning_handler()(message);
  else
    std::fprintf(stderr, "rectrain: warning: %s\n", message.c_str());
}

} // namespace rectrain
