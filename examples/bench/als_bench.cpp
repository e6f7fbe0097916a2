// Implicit ALS speed and loss on a user_id,item_id CSV (one row per pair):
//   als_bench --input CSV --factors F --iterations N --threads T
//             [--confidence C] [--solver cg|cholesky|reference] [--backend eigen|tensor]
//             [--device cpu|cuda]
// Every pair gets confidence C (default 1: the binary case), λ = 0.01.
// --solver reference runs a plain port of implicit's CPU conjugate-gradient
// loop instead (per-nonzero dot and axpy, YᵀY + λI applied per row, CG even
// when every confidence is 1), from the same initial factors: the loss
// implicit's algorithm reaches, measured here.
// Prints per-iteration times, then
//   seconds_per_iteration <median over iterations after the first>
//   loss <objective after the last iteration / Σ c over all cells>
// Data: /usr/bin/python3 ../shared/bench/als_data.py s|m (writes /tmp/alsdata).

#include "machine.hpp"
#include "programs.hpp"

#include <rectrain/als/confidence_pass.hpp>
#include <rectrain/als/implicit_als.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/data/csv.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

// Resident set size figures of this process from /proc (GiB; -1 elsewhere).
double status_gib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / (1024.0 * 1024.0);
  return -1;
}

// Restarts the peak-RSS counter (VmHWM), so the fit's peak is its own.
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

rectrain::CsrMatrix read_pairs(const std::string& input) {
  const auto table = rectrain::read_csv(input, {{"user_id", rectrain::CsvType::Id}, {"item_id", rectrain::CsvType::Id}});
  const auto users = rectrain::IdMap::from_ids({table["user_id"]});
  const auto items = rectrain::IdMap::from_ids({table["item_id"]});
  return rectrain::build_csr(users.encode(table["user_id"]), items.encode(table["item_id"]), users.size(),
                             items.size());
}

// implicit's least_squares_cg, one half-step: rows of `m` solved against
// the fixed factors y, warm-started from x.
void reference_cg_half_step(const rectrain::CsrMatrix& m, float confidence, torch::Tensor& x, const torch::Tensor& y,
                            double regularization, int64_t steps) {
  using Vector = Eigen::VectorXf;
  const int64_t f = y.size(1);
  const auto gram = (torch::mm(y.t(), y) + regularization * torch::eye(f)).contiguous();
  const Eigen::Map<const Eigen::MatrixXf> yty(gram.data_ptr<float>(), f, f);
  const int64_t* ptr = m.indptr.data_ptr<int64_t>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const float* yp = y.data_ptr<float>();
  float* xp = x.data_ptr<float>();
  at::parallel_for(0, m.rows, 256, [&](int64_t begin, int64_t end) {
    Vector r(f), p(f), ap(f);
    for (int64_t u = begin; u < end; ++u) {
      Eigen::Map<Vector> xu(xp + u * f, f);
      r.noalias() = -(yty * xu);
      for (int64_t k = ptr[u]; k < ptr[u + 1]; ++k) {
        const Eigen::Map<const Vector> yi(yp + int64_t{idx[k]} * f, f);
        r += (confidence - (confidence - 1) * yi.dot(xu)) * yi;
      }
      p = r;
      float rs = r.squaredNorm();
      if (rs < 1e-20f) continue;
      for (int64_t step = 0; step < steps; ++step) {
        ap.noalias() = yty * p;
        for (int64_t k = ptr[u]; k < ptr[u + 1]; ++k) {
          const Eigen::Map<const Vector> yi(yp + int64_t{idx[k]} * f, f);
          ap += ((confidence - 1) * yi.dot(p)) * yi;
        }
        const float alpha = rs / p.dot(ap);
        xu += alpha * p;
        r -= alpha * ap;
        const float rs_new = r.squaredNorm();
        if (rs_new < 1e-20f) break;
        p = r + (rs_new / rs) * p;
        rs = rs_new;
      }
    }
  });
}

rectrain::AlsFactors reference_fit(const rectrain::CsrMatrix& m, float confidence, const rectrain::ImplicitAlsOptions& o) {
  rectrain::AlsFactors out;
  out.user = rectrain::initial_als_factors(m.rows, 0, o).to(torch::kFloat32);
  out.item = rectrain::initial_als_factors(m.cols, 1, o).to(torch::kFloat32);
  const auto transposed = m.transpose();
  for (int64_t it = 1; it <= o.iterations(); ++it) {
    const double t0 = bench::now_seconds();
    reference_cg_half_step(m, confidence, out.user, out.item, o.regularization(), o.cg_steps());
    reference_cg_half_step(transposed, confidence, out.item, out.user, o.regularization(), o.cg_steps());
    rectrain::AlsIterationStats stats;
    stats.iteration = it;
    stats.seconds = bench::now_seconds() - t0;
    out.history.push_back(stats);
    o.on_iteration()(stats);
  }
  return out;
}

} // namespace

int als_bench_main(int argc, char** argv) {
  std::string input, solver = "cg", backend = "eigen", device = "cpu";
  int64_t factors = 64, iterations = 6, threads = static_cast<int64_t>(std::thread::hardware_concurrency());
  double confidence = 1.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--input") input = value;
    else if (flag == "--factors") factors = std::stoll(value);
    else if (flag == "--iterations") iterations = std::stoll(value);
    else if (flag == "--threads") threads = std::stoll(value);
    else if (flag == "--confidence") confidence = std::stod(value);
    else if (flag == "--solver") solver = value;
    else if (flag == "--backend") backend = value;
    else if (flag == "--device") device = value;
    else input.clear(), argc = 0;
  }
  if (input.empty() || (solver != "cg" && solver != "cholesky" && solver != "reference") || (backend != "eigen" && backend != "tensor") ||
      (device != "cpu" && device != "cuda") || (device == "cuda" && (backend != "tensor" || solver == "reference")) ||
      confidence <= 0 || iterations < 2) {
    std::fprintf(stderr,
                 "usage: als_bench --input CSV --factors F --iterations N (>= 2) --threads T [--confidence C]\n"
                 "                 [--solver cg|cholesky|reference] [--backend eigen|tensor] [--device cpu|cuda]\n"
                 "(cuda: --backend tensor)\n");
    return 2;
  }
  torch::set_num_threads(static_cast<int>(threads));
  bench::print_machine("als_bench");
  try {
    double t0 = bench::now_seconds();
    const auto matrix = read_pairs(input);
    std::printf("read %s: %lld users x %lld items, %lld nonzeros in %.2f s\n", input.c_str(),
                static_cast<long long>(matrix.rows), static_cast<long long>(matrix.cols),
                static_cast<long long>(matrix.nnz()), bench::now_seconds() - t0);
    // Pairs are distinct, so every stored count is 1 and c = 1 + alpha.
    const auto options = rectrain::ImplicitAlsOptions(factors)
                             .regularization(0.01)
                             .alpha(confidence - 1)
                             .iterations(iterations)
                             .solver(solver == "cg" ? rectrain::AlsSolver::ConjugateGradient
                                                    : rectrain::AlsSolver::Cholesky)
                             .backend(backend == "eigen" ? rectrain::AlsBackend::Eigen : rectrain::AlsBackend::TensorOps)
                             .device(torch::Device(device))
                             .threads(threads)
                             .on_iteration([](const rectrain::AlsIterationStats& s) {
                               std::printf("iteration %lld: %.3f s\n", static_cast<long long>(s.iteration), s.seconds);
                               std::fflush(stdout);
                             });
    if (device == "cuda" && !torch::cuda::is_available()) throw std::runtime_error("--device cuda: no CUDA device");
    std::printf("device %s\n", device.c_str());
    std::printf("factors %lld, confidence %g (%s), solver %s, backend %s, %lld threads\n",
                static_cast<long long>(factors), confidence, solver == "reference" ? "reference CG" : confidence == 1 ? "binary: shared exact solve" : "weighted",
                solver.c_str(), backend.c_str(), static_cast<long long>(threads));
    if (solver == "cg" && confidence != 1) {
      const auto kernel = rectrain::als_confidence_pass_kernel(factors);
      std::printf("CG pass kernel: %s\n", kernel == "none" ? "none (f is not a multiple of 4: Eigen GEMVs)" : kernel.c_str());
    }
    const double rss_before = status_gib("VmRSS");
    reset_peak_rss();
    t0 = bench::now_seconds();
    const auto fit = solver == "reference" ? reference_fit(matrix, static_cast<float>(confidence), options)
                                           : rectrain::fit_implicit_als(matrix, options);
    const double total = bench::now_seconds() - t0;
    const double peak = status_gib("VmHWM");
    std::vector<double> seconds;
    for (size_t i = 1; i < fit.history.size(); ++i) seconds.push_back(fit.history[i].seconds);
    std::sort(seconds.begin(), seconds.end());
    const double objective = rectrain::implicit_als_objective(matrix, fit.user, fit.item, options);
    const double cells = static_cast<double>(matrix.rows) * static_cast<double>(matrix.cols);
    const double total_confidence = cells - static_cast<double>(matrix.nnz()) + confidence * matrix.nnz();
    std::printf("fit total %.2f s (setup included)\n", total);
    std::printf("memory: %.2f GiB resident before the fit (the matrix), peak %.2f GiB during it\n", rss_before,
                peak);
    const size_t mid = seconds.size() / 2;
    const double median = seconds.size() % 2 ? seconds[mid] : 0.5 * (seconds[mid - 1] + seconds[mid]);
    std::printf("seconds_per_iteration %.4f\n", median);
    std::printf("loss %.8f\n", objective / total_confidence);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "als_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
