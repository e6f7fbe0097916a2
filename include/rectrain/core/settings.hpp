#pragma once
// Settings: a trainer's settings declared once, as a table of named fields
// bound to the variables of a plain struct. The table writes them as
// key=value lines (saved beside a model, so the model can be rebuilt from
// them), reads such text back, sets one from text (a command-line flag)
// and checks every range, with errors that name the flag:
//
//   struct MyConfig {
//     double lr = 1e-3;
//     int64_t epochs = 5;
//     rectrain::Settings settings() {
//       rectrain::Settings s;
//       s.add("lr", lr, "learning rate").above(0);
//       s.add("epochs", epochs, "epochs to train").at_least(1);
//       return s;
//     }
//   };
//   config.settings().validate();                   // "--lr must be a finite number > 0, got nan"
//   const std::string text = config.settings().to_text();  // "lr=0.001\nepochs=5\n"
//
// A field's flag is "--" + its key with '-' for '_' ("--no-" before it for
// a bool that is on by default: the flag turns it off).

#include <rectrain/core/error.hpp>
#include <rectrain/core/parse.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace rectrain {

/// One setting: its key, help text, the variable it is bound to, and its
/// allowed values.
class SettingField {
 public:
  using Target = std::variant<int64_t*, double*, bool*, std::string*, std::vector<int64_t>*>;

  SettingField(std::string key, Target target, std::string help)
      : key_(std::move(key)), help_(std::move(help)), target_(target) {
    // A bool that starts true is turned off by its flag.
    if (auto* const* b = std::get_if<bool*>(&target_)) negated_ = **b;
  }

  /// Lower and upper bounds, inclusive or not; for numbers.
  SettingField& at_least(double v) { return bound(lower_, v, false); }
  SettingField& above(double v) { return bound(lower_, v, true); }
  SettingField& at_most(double v) { return bound(upper_, v, false); }
  SettingField& below(double v) { return bound(upper_, v, true); }
  /// The only values a string setting takes.
  SettingField& one_of(std::vector<std::string> choices) {
    choices_ = std::move(choices);
    return *this;
  }
  /// The value (as text) of a configuration written before this setting
  /// existed: the one that gives the behaviour of then. Without it, a
  /// configuration lacking the key is refused.
  SettingField& absent(std::string text) {
    absent_ = std::move(text);
    return *this;
  }
  const std::optional<std::string>& absent_text() const { return absent_; }

  /// Said in range errors after the range: "0: from the data size".
  SettingField& note(std::string text) {
    note_ = std::move(text);
    return *this;
  }

  const std::string& key() const { return key_; }
  const std::string& help() const { return help_; }
  const Target& target() const { return target_; }
  const std::vector<std::string>& choices() const { return choices_; }
  bool is_flag() const { return std::holds_alternative<bool*>(target_); }
  /// The command-line name: "--group-size", or "--no-als" for a bool on by default.
  std::string flag() const {
    std::string name = key_;
    std::replace(name.begin(), name.end(), '_', '-');
    return (negated_ ? "--no-" : "--") + name;
  }
  /// What the flag sets a bool to when given.
  bool flag_value() const { return !negated_; }

  /// What the value is, for a command line's help: INT, FLOAT, TEXT,
  /// INT,... (a width list) or FLAG.
  const char* kind() const {
    static const char* const kinds[] = {"INT", "FLOAT", "FLAG", "TEXT", "INT,..."};
    return kinds[target_.index()];
  }

  /// The value as to_text writes it: integers, doubles with `digits`
  /// significant digits (17: read back exactly), bools as 1 or 0, width
  /// lists comma-separated.
  std::string text(int digits = 17) const {
    std::ostringstream out;
    out.precision(digits);
    std::visit(
        [&out](auto* v) {
          using T = std::decay_t<decltype(*v)>;
          if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
            for (size_t i = 0; i < v->size(); ++i) out << (i ? "," : "") << (*v)[i];
          } else {
            out << *v;
          }
        },
        target_);
    return out.str();
  }

  /// Sets the value from `text` (text() reads back); `what` names it in errors.
  void set(const std::string& text, const std::string& what) {
    std::visit(
        [&](auto* v) {
          using T = std::decay_t<decltype(*v)>;
          if constexpr (std::is_same_v<T, std::string>) {
            *v = text;
          } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
            *v = parse_width_list(text, what);
          } else {
            using Number = std::conditional_t<std::is_same_v<T, double>, double, long long>;
            const auto n = detail::whole_number<Number>(text);
            if (!n) throw Error(what + ": '" + text + "' is not a number");
            if constexpr (std::is_same_v<T, bool>) {
              if (*n != 0 && *n != 1) throw Error(what + ": '" + text + "' is not 0 or 1");
              *v = *n != 0;
            } else {
              *v = static_cast<T>(*n);
            }
          }
        },
        target_);
  }

  /// Throws, naming the flag, unless the value is within its range or
  /// choices.
  void validate() const {
    if (const auto* const* s = std::get_if<std::string*>(&target_)) {
      if (!choices_.empty() && std::find(choices_.begin(), choices_.end(), **s) == choices_.end())
        throw Error(flag() + " must be " + or_list(choices_) + "; got '" + **s + "'");
      return;
    }
    if (!lower_ && !upper_) return;
    double v = 0;
    bool integer = true;
    if (const auto* const* d = std::get_if<double*>(&target_)) {
      v = **d;
      integer = false;
    } else if (const auto* const* i = std::get_if<int64_t*>(&target_)) {
      v = static_cast<double>(**i);
    } else if (const auto* const* widths = std::get_if<std::vector<int64_t>*>(&target_)) {
      for (const auto w : **widths) check_range(static_cast<double>(w), true, " (every width)");
      return;
    } else {
      return;
    }
    check_range(v, integer, "");
  }

 private:
  struct Bound {
    double value;
    bool open;
  };

  SettingField& bound(std::optional<Bound>& b, double v, bool open) {
    b = Bound{v, open};
    return *this;
  }

  static std::string number_text(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  }

  static std::string or_list(const std::vector<std::string>& words) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i)
      out += (i == 0 ? "" : (i + 1 == words.size() ? " or " : ", ")) + words[i];
    return out;
  }

  void check_range(double v, bool integer, const char* which) const {
    const bool ok = std::isfinite(v) && (!lower_ || (lower_->open ? v > lower_->value : v >= lower_->value)) &&
                    (!upper_ || (upper_->open ? v < upper_->value : v <= upper_->value));
    if (ok) return;
    std::string range;
    if (lower_ && upper_) {
      range = "in " + std::string(lower_->open ? "(" : "[") + number_text(lower_->value) + ", " +
              number_text(upper_->value) + (upper_->open ? ")" : "]");
    } else {
      const auto& b = lower_ ? *lower_ : *upper_;
      const char* op = lower_ ? (b.open ? "> " : ">= ") : (b.open ? "< " : "<= ");
      range = std::string(integer ? "" : "a finite number ") + op + number_text(b.value);
    }
    throw Error(flag() + which + " must be " + range + (note_.empty() ? "" : " (" + note_ + ")") + ", got " +
                (integer ? std::to_string(static_cast<long long>(v)) : number_text(v)));
  }

  std::string key_, help_, note_;
  std::optional<std::string> absent_;
  Target target_;
  bool negated_ = false;
  std::optional<Bound> lower_, upper_;
  std::vector<std::string> choices_;
};

/// The table: fields in the order they were added (and are written).
class Settings {
 public:
  /// Binds `value` under `key` (letters, digits, '_'); returns the field
  /// for its range.
  template <typename T>
  SettingField& add(const std::string& key, T& value, const std::string& help) {
    if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
      throw Error("Settings::add: key '" + key + "' must be lower-case letters, digits and '_'");
    if (find(key)) throw Error("Settings::add: key '" + key + "' is added twice");
    fields_.emplace_back(key, SettingField::Target(&value), help);
    return fields_.back();
  }

  std::vector<SettingField>& fields() { return fields_; }
  const std::vector<SettingField>& fields() const { return fields_; }

  SettingField* find(const std::string& key) {
    for (auto& f : fields_)
      if (f.key() == key) return &f;
    return nullptr;
  }

  /// One key=value line per field.
  std::string to_text() const {
    std::string out;
    for (const auto& f : fields_) out += f.key() + "=" + f.text() + "\n";
    return out;
  }

  /// Sets every field from to_text()'s lines; `where` (a file) names the
  /// text in errors. A key missing, unknown or given twice is an error:
  /// the text belongs to other settings.
  void from_text(const std::string& text, const std::string& where) {
    std::map<std::string, std::string> values;
    for (const auto& line : split_list(text, '\n')) {
      const auto eq = line.find('=');
      if (eq == std::string::npos) throw Error(where + ": bad configuration line '" + line + "'");
      const std::string key = line.substr(0, eq);
      if (!find(key)) throw Error(where + ": configuration has an unknown setting '" + key + "'");
      if (!values.emplace(key, line.substr(eq + 1)).second)
        throw Error(where + ": configuration gives '" + key + "' twice");
    }
    for (auto& f : fields_) {
      const auto it = values.find(f.key());
      if (it == values.end() && !f.absent_text()) throw Error(where + ": configuration lacks '" + f.key() + "'");
      f.set(it != values.end() ? it->second : *f.absent_text(), where + ": configuration value " + f.key());
    }
  }

  /// Every field's range check (SettingField::validate).
  void validate() const {
    for (const auto& f : fields_) f.validate();
  }

 private:
  std::vector<SettingField> fields_;
};

} // namespace rectrain
