#pragma once
// The learning curve of a run: training loss and validation GAUC per
// epoch, one line per seed, drawn by gnuplot into a PNG. The data and the
// script stay beside it (.dat, .gp), so the plot can be redrawn.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/train/epoch_record.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace rectrain {

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
  write_stream_atomically(dat, [&](std::ostream& out) {
    out.precision(8);
    for (const auto seed : seeds) {  // one gnuplot data block per seed
      out << "# seed " << seed << "\n# epoch loss valid_gauc\n";
      for (const auto& p : points)
        if (p.seed == seed) out << p.epoch << ' ' << p.loss << ' ' << p.valid_gauc << '\n';
      out << "\n\n";
    }
  });
  const std::string temp_png = png + ".tmp.png";
  write_stream_atomically(gp, [&](std::ostream& out) {
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

/// The curve of `records` (loss and validation GAUC per seed and epoch).
inline bool plot_learning_curve(const std::string& png, const std::vector<EpochRecord>& records) {
  std::vector<CurvePoint> points;
  for (const auto& r : records) points.push_back({r.seed, r.stats.epoch, r.stats.loss, r.validation.value});
  return plot_learning_curve(png, points);
}

} // namespace rectrain
