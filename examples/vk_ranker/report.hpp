#pragma once
// What rectrain-vk shows while and after it trains: a progress line, a
// JSON-lines metrics log (one object per epoch) and a gnuplot learning curve.

#include <rectrain/rectrain.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

namespace vk {

/// One flat JSON object, built field by field.
class JsonLine {
 public:
  JsonLine& add(const std::string& key, double value) {
    std::ostringstream v;
    v.precision(10);
    if (std::isfinite(value))
      v << value;
    else
      v << "null";  // JSON has no NaN or infinity
    return raw(key, v.str());
  }
  JsonLine& add(const std::string& key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonLine& add(const std::string& key, const std::string& value) { return raw(key, quote(value)); }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonLine& raw(const std::string& key, const std::string& value) {
    body_ += (body_.empty() ? "" : ",") + quote(key) + ":" + value;
    return *this;
  }
  static std::string quote(const std::string& s) {
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
  std::string body_;
};

/// A progress line on stderr: rewritten in place on a terminal, one line
/// every `seconds` otherwise (logs stay readable).
class ProgressLine {
 public:
  explicit ProgressLine(double terminal_seconds = 1.0, double log_seconds = 30.0)
      : terminal_(::isatty(STDERR_FILENO) != 0), seconds_(terminal_ ? terminal_seconds : log_seconds) {}
  double seconds() const { return seconds_; }

  void show(uint64_t seed, const rectrain::EpochProgress& p, bool frozen) {
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

/// Writes `lines` (JSON objects) as `path`, atomically.
inline void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  rectrain::write_stream_atomically(path, [&](std::ostream& out) {
    for (const auto& l : lines) out << l << '\n';
  });
}

/// One point of the learning curve.
struct CurvePoint {
  uint64_t seed = 0;
  int64_t epoch = 0;
  double loss = 0;
  double valid_gauc = 0;
};

/// Plots training loss and validation GAUC per epoch, one line per seed,
/// into `png` with gnuplot. The data and script stay beside it (`.dat`,
/// `.gp`) so the plot can be redrawn. Returns false, saying why, when
/// gnuplot is missing or fails.
inline bool plot_learning_curve(const std::string& png, const std::vector<CurvePoint>& points) {
  const auto base = std::filesystem::path(png).replace_extension("");
  const std::string dat = base.string() + ".dat", gp = base.string() + ".gp";
  std::vector<uint64_t> seeds;
  for (const auto& p : points)
    if (std::find(seeds.begin(), seeds.end(), p.seed) == seeds.end()) seeds.push_back(p.seed);
  rectrain::write_stream_atomically(dat, [&](std::ostream& out) {
    out.precision(8);
    for (const auto seed : seeds) {  // one gnuplot data block per seed
      out << "# seed " << seed << "\n# epoch loss valid_gauc\n";
      for (const auto& p : points)
        if (p.seed == seed) out << p.epoch << ' ' << p.loss << ' ' << p.valid_gauc << '\n';
      out << "\n\n";
    }
  });
  const std::string temp_png = png + ".tmp.png";
  rectrain::write_stream_atomically(gp, [&](std::ostream& out) {
    out << "set terminal pngcairo size 1100,450 noenhanced\n"
        << "set output '" << temp_png << "'\n"
        << "set multiplot layout 1,2 title 'rectrain-vk learning curve'\n"
        << "set xlabel 'epoch'\nset grid\nset key bottom right\n"
        << "set title 'training loss (all heads, weighted)'\nset ylabel 'loss'\n"
        << "plot ";
    for (size_t i = 0; i < seeds.size(); ++i)
      out << (i ? ", " : "") << "'" << dat << "' index " << i << " using 1:2 with linespoints title 'seed "
          << seeds[i] << "'";
    out << "\nset title 'validation GAUC'\nset ylabel 'GAUC'\nplot ";
    for (size_t i = 0; i < seeds.size(); ++i)
      out << (i ? ", " : "") << "'" << dat << "' index " << i << " using 1:3 with linespoints title 'seed "
          << seeds[i] << "'";
    out << "\nunset multiplot\n";
  });
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::printf("plot: gnuplot not found (apt install gnuplot-nox); wrote %s and %s\n", dat.c_str(), gp.c_str());
    return false;
  }
  const std::string command = "gnuplot '" + gp + "' 2>&1";
  if (std::system(command.c_str()) != 0 || !std::filesystem::exists(temp_png)) {
    std::printf("plot: gnuplot failed on %s\n", gp.c_str());
    std::filesystem::remove(temp_png);
    return false;
  }
  std::filesystem::rename(temp_png, png);
  return true;
}

} // namespace vk
