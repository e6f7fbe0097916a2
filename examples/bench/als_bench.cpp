// Implicit ALS speed and loss on a user_id,item_id CSV (one row per pair):
//   als_bench --input CSV --factors F --iterations N --threads T
//             [--confidence C] [--solver cg|cholesky] [--backend eigen|tensor]
// Every pair gets confidence C (default 1: the binary case), λ = 0.01.
// Prints per-iteration times, then
//   seconds_per_iteration <median over iterations after the first>
//   loss <objective after the last iteration / Σ c over all cells>
// Data: /usr/bin/python3 ../shared/bench/als_data.py s|m (writes /tmp/alsdata).

#include "machine.hpp"

#include <rectrain/als/implicit_als.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/data/csv.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string input, solver = "cg", backend = "eigen";
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
    else input.clear(), argc = 0;
  }
  if (input.empty() || (solver != "cg" && solver != "cholesky") || (backend != "eigen" && backend != "tensor") ||
      confidence <= 0 || iterations < 2) {
    std::fprintf(stderr,
                 "usage: als_bench --input CSV --factors F --iterations N (>= 2) --threads T [--confidence C]\n"
                 "                 [--solver cg|cholesky] [--backend eigen|tensor]\n");
    return 2;
  }
  torch::set_num_threads(static_cast<int>(threads));
  bench::print_machine("als_bench");
  try {
    double t0 = bench::now_seconds();
    const auto table = rectrain::read_csv(input, {{"user_id", rectrain::CsvType::Id}, {"item_id", rectrain::CsvType::Id}});
    const auto users = rectrain::IdMap::from_ids({table["user_id"]});
    const auto items = rectrain::IdMap::from_ids({table["item_id"]});
    const auto matrix = rectrain::build_csr(users.encode(table["user_id"]), items.encode(table["item_id"]),
                                            users.size(), items.size());
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
                             .threads(threads)
                             .on_iteration([](const rectrain::AlsIterationStats& s) {
                               std::printf("iteration %lld: %.3f s\n", static_cast<long long>(s.iteration), s.seconds);
                               std::fflush(stdout);
                             });
    std::printf("factors %lld, confidence %g (%s), solver %s, backend %s, %lld threads\n",
                static_cast<long long>(factors), confidence, confidence == 1 ? "binary: shared exact solve" : "weighted",
                solver.c_str(), backend.c_str(), static_cast<long long>(threads));
    t0 = bench::now_seconds();
    const auto fit = rectrain::fit_implicit_als(matrix, options);
    const double total = bench::now_seconds() - t0;
    std::vector<double> seconds;
    for (size_t i = 1; i < fit.history.size(); ++i) seconds.push_back(fit.history[i].seconds);
    std::sort(seconds.begin(), seconds.end());
    const double objective = rectrain::implicit_als_objective(matrix, fit.user, fit.item, options);
    const double cells = static_cast<double>(matrix.rows) * static_cast<double>(matrix.cols);
    const double total_confidence = cells - static_cast<double>(matrix.nnz()) + confidence * matrix.nnz();
    std::printf("fit total %.2f s (setup included)\n", total);
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
