#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/als/confidence_pass.hpp>
#include <rectrain/als/implicit_als.hpp>
#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/nn/dropout.hpp>
#include <rectrain/nn/fused_block.hpp>
#include <rectrain/nn/most_similar.hpp>
#include <rectrain/train/sparse_adam.hpp>

#include <cstdlib>
#include <string>
#include <vector>

using namespace rectrain;

namespace {

const std::vector<CpuIsa> kAllLevels{CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512};

/// f() at every level this CPU runs, each result beside the generic one;
/// levels it lacks are reported as skipped (once a run).
template <typename F>
void at_every_level(F&& f) {
  static bool reported[3] = {};
  for (const CpuIsa isa : kAllLevels) {
    if (!cpu_supports(isa)) {
      if (!reported[static_cast<int>(isa)]) WARN("CPU ISA " << cpu_isa_name(isa) << " skipped: this CPU does not run it");
      reported[static_cast<int>(isa)] = true;
      continue;
    }
    CpuIsaGuard guard(isa);
    INFO("CPU ISA " << cpu_isa_name(isa));
    f(isa);
  }
}

/// Sets or clears an environment variable for a scope.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~EnvGuard() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

} // namespace

TEST_CASE("CPU ISA: detection, names, the override and its refusals", "[cpu_isa]") {
  INFO("this CPU: widest level " << cpu_isa_name(best_cpu_isa()) << ", native bf16 " << cpu_has_native_bf16());
  CHECK(cpu_supports(CpuIsa::Generic));
  CHECK(cpu_supports(best_cpu_isa()));
  for (const CpuIsa isa : kAllLevels) CHECK(parse_cpu_isa(cpu_isa_name(isa)) == isa);
  CHECK_THROWS_WITH(parse_cpu_isa("sse9", "RECTRAIN_CPU_ISA"),
                    Catch::Contains("RECTRAIN_CPU_ISA: \"sse9\" is not a level; use generic, avx2 or avx512"));
  // Native bf16 comes with AVX-512 here (AVX512-BF16) or with AMX.
  if (cpu_features().avx512_bf16) CHECK(cpu_features().avx512);
  CHECK(cpu_has_native_bf16() == (cpu_features().avx512_bf16 || cpu_features().amx_bf16));

  SECTION("set_cpu_isa and CpuIsaGuard change the level and restore it") {
    const CpuIsa before = cpu_isa();
    {
      CpuIsaGuard guard(CpuIsa::Generic);
      CHECK(cpu_isa() == CpuIsa::Generic);
    }
    CHECK(cpu_isa() == before);
  }

  SECTION("a level the CPU lacks is refused, naming the widest it has") {
    bool any = false;
    for (const CpuIsa isa : kAllLevels) {
      if (cpu_supports(isa)) continue;
      any = true;
      const CpuIsa before = cpu_isa();
      CHECK_THROWS_WITH(set_cpu_isa(isa), Catch::Contains(std::string("CPU ISA ") + cpu_isa_name(isa)) &&
                                              Catch::Contains(std::string("the widest here is ") +
                                                              cpu_isa_name(best_cpu_isa())));
      CHECK(cpu_isa() == before);
      EnvGuard env("RECTRAIN_CPU_ISA", cpu_isa_name(isa));
      CHECK_THROWS_WITH(rectrain::detail::initial_cpu_isa(),
                        Catch::Contains(std::string("RECTRAIN_CPU_ISA=") + cpu_isa_name(isa) + ": this CPU"));
    }
    if (!any) WARN("this CPU runs every level: no refusal to check");
  }

  SECTION("RECTRAIN_CPU_ISA picks the first level; unset, the CPU's widest") {
    {
      EnvGuard env("RECTRAIN_CPU_ISA", nullptr);
      CHECK(rectrain::detail::initial_cpu_isa() == best_cpu_isa());
    }
    for (const CpuIsa isa : kAllLevels) {
      if (!cpu_supports(isa)) continue;
      EnvGuard env("RECTRAIN_CPU_ISA", cpu_isa_name(isa));
      CHECK(rectrain::detail::initial_cpu_isa() == isa);
    }
    EnvGuard env("RECTRAIN_CPU_ISA", "AVX2");
    CHECK_THROWS_WITH(rectrain::detail::initial_cpu_isa(), Catch::Contains("\"AVX2\" is not a level"));
  }
}

TEST_CASE("CPU ISA: the ALS confidence pass agrees with a double-precision sum at every level", "[cpu_isa][als]") {
  torch::manual_seed(21);
  for (const int64_t f : {4, 8, 12, 16, 24, 40, 64, 128, 136, 256}) {
    for (const int64_t len : {1, 3, 4, 7, 64, 65, 130}) {
      const auto rows = torch::randn({len, f});
      const auto v = torch::randn({f});
      const auto c = torch::rand({len}) * 20 + 1;
      const auto acc0 = torch::randn({f});
      for (const bool residual : {true, false}) {
        // The exact value, in double.
        const auto t = torch::mv(rows.to(torch::kFloat64), v.to(torch::kFloat64));
        const auto c64 = c.to(torch::kFloat64);
        const auto s = residual ? c64 - (c64 - 1) * t : (c64 - 1) * t;
        const auto expected = acc0.to(torch::kFloat64) + torch::mv(rows.to(torch::kFloat64).t(), s);
        const double scale = expected.abs().max().item<double>() + 1;
        at_every_level([&](CpuIsa isa) {
          const auto kernel = rectrain::detail::confidence_pass_for<float>(f, isa);
          REQUIRE(kernel != nullptr);  // f is a multiple of 4: at least the generic path
          // The level it runs on: the widest up to isa whose vectors divide f.
          const int level = rectrain::detail::confidence_pass_level<float>(f, isa);
          CHECK(level <= static_cast<int>(isa));
          CHECK(f % (cpu_isa_vector_bytes(static_cast<CpuIsa>(level)) / 4) == 0);
          auto acc = acc0.clone();
          kernel(rows.data_ptr<float>(), len, f, c.data_ptr<float>(), residual, v.data_ptr<float>(),
                 acc.data_ptr<float>());
          const double error = (acc.to(torch::kFloat64) - expected).abs().max().item<double>();
          INFO("f " << f << ", len " << len << ", residual " << residual << ", error " << error);
          CHECK(error < 1e-5 * scale * std::sqrt(static_cast<double>(len)));
        });
      }
    }
  }
  // No vectors fit a row of 6 floats: the solver's Eigen path.
  CHECK(rectrain::detail::confidence_pass_for<float>(6, CpuIsa::Generic) == nullptr);
  CHECK(rectrain::detail::confidence_pass_level<double>(6, best_cpu_isa()) == 0);  // two doubles a vector
}

TEST_CASE("CPU ISA: implicit ALS reaches the same factors at every level", "[cpu_isa][als]") {
  torch::manual_seed(22);
  const int64_t users = 300, items = 120;
  const auto nz = torch::rand({users, items}) < 0.08;
  const auto pairs = nz.nonzero();
  const auto m = build_csr(pairs.select(1, 0).contiguous(), pairs.select(1, 1).contiguous(), users, items);
  const auto options = ImplicitAlsOptions(32).alpha(9).iterations(3).regularization(0.05).threads(2);
  AlsFactors generic;
  {
    CpuIsaGuard guard(CpuIsa::Generic);
    generic = fit_implicit_als(m, options);
  }
  const double generic_loss = implicit_als_objective(m, generic.user, generic.item, options);
  const double scale = std::max(generic.user.abs().max().item<double>(), generic.item.abs().max().item<double>());
  at_every_level([&](CpuIsa) {
    const AlsFactors fit = fit_implicit_als(m, options);
    // Rounding differs (FMA, other sums), and three iterations of 3-step CG
    // carry it on: a stated tolerance, relative to the factors' size.
    const double du = (fit.user - generic.user).abs().max().item<double>() / scale;
    const double di = (fit.item - generic.item).abs().max().item<double>() / scale;
    INFO("largest difference from the generic path, relative to the largest factor: users " << du << ", items "
                                                                                             << di);
    CHECK(du < 2e-3);
    CHECK(di < 2e-3);
    CHECK(implicit_als_objective(m, fit.user, fit.item, options) == Approx(generic_loss).epsilon(1e-5));
  });
}

TEST_CASE("CPU ISA: the dropout mask is the same bits at every level", "[cpu_isa][nn]") {
  const auto generic = [] {
    CpuIsaGuard guard(CpuIsa::Generic);
    return rectrain::detail::hashed_keep_mask<float>({1000, 37}, 0.7, 12345);
  }();
  // Each element against the scalar hash the mask is defined by.
  const float* g = generic.data_ptr<float>();
  const uint32_t threshold = rectrain::detail::keep_threshold(0.7);
  int64_t wrong = 0;
  for (int64_t i = 0; i < generic.numel(); ++i)
    wrong += (g[i] != 0) != (rectrain::detail::dropout_hash(12345, i) < threshold);
  CHECK(wrong == 0);
  at_every_level([&](CpuIsa) {
    CHECK(torch::equal(rectrain::detail::hashed_keep_mask<float>({1000, 37}, 0.7, 12345), generic));
    CHECK(torch::equal(rectrain::detail::hashed_keep_mask<double>({333}, 0.5, 7), [] {
      CpuIsaGuard guard(CpuIsa::Generic);
      return rectrain::detail::hashed_keep_mask<double>({333}, 0.5, 7);
    }()));
  });
}

TEST_CASE("CPU ISA: the history's most-similar search finds the largest dot product at every level", "[cpu_isa][nn]") {
  for (const int64_t dim : {int64_t{3}, int64_t{37}, int64_t{256}}) {
    INFO("dim " << dim);
    torch::manual_seed(dim);
    const int64_t items = 40, rows = 9, lists = 3, window = 5;
    const auto table = torch::randn({items, dim});
    const auto query = torch::randn({rows, dim});
    const auto ids = torch::randint(0, items, {rows, lists, window});
    const auto valid = torch::rand({rows, lists, window}) < 0.7;
    valid[0][1].fill_(false);  // an empty list
    // By brute force in double: the winner, and its margin over the runner-up.
    const auto t = table.to(torch::kFloat64), q = query.to(torch::kFloat64);
    std::vector<int64_t> expected(static_cast<size_t>(rows * lists), -1);
    std::vector<double> best(expected.size()), margin(expected.size());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < lists; ++c) {
        double top = -1e300, second = -1e300;
        for (int64_t j = 0; j < window; ++j) {
          if (!valid[i][c][j].item<bool>()) continue;
          const int64_t id = ids[i][c][j].item<int64_t>();
          const double s = (t[id] * q[i]).sum().item<double>();
          if (s > top) {
            if (expected[static_cast<size_t>(i * lists + c)] != id) second = top;
            top = s;
            expected[static_cast<size_t>(i * lists + c)] = id;
          } else if (s > second && id != expected[static_cast<size_t>(i * lists + c)]) {
            second = s;
          }
        }
        best[static_cast<size_t>(i * lists + c)] = top;
        margin[static_cast<size_t>(i * lists + c)] = top - second;
      }
    at_every_level([&](CpuIsa) {  // the guard pins cpu_isa(), which picks the kernel
      const auto out = rectrain::detail::most_similar(table, query, ids, valid);
      for (size_t k = 0; k < expected.size(); ++k) {
        const int64_t got = out.view(-1)[static_cast<int64_t>(k)].item<int64_t>();
        if (expected[k] < 0) {
          CHECK(got == -1);
          continue;
        }
        REQUIRE(got >= 0);
        // The winner's product is the largest; the same item unless two are within rounding.
        const double s = (t[got] * q[static_cast<int64_t>(k) / lists]).sum().item<double>();
        CHECK(s == Approx(best[k]).margin(1e-4));
        if (margin[k] > 1e-3) CHECK(got == expected[k]);
      }
    });
  }
}

TEST_CASE("CPU ISA: the fused ReLU/LayerNorm/dropout block agrees at every level", "[cpu_isa][nn]") {
  torch::manual_seed(23);
  for (const int64_t d : {5, 48, 256}) {
    const int64_t n = 70;
    const auto x0 = torch::randn({n, d}), bias = torch::randn({d}), gamma = torch::randn({d}), beta = torch::randn({d});
    const auto g = torch::randn({n, d});
    auto run = [&] {
      auto x = x0.clone().requires_grad_(true);
      torch::manual_seed(24);
      const auto y = relu_layer_norm_dropout(x, bias, gamma, beta, 1e-5, 0.2, true);
      (y * g).sum().backward();
      return std::make_pair(y.detach(), x.grad());
    };
    const auto generic = [&] {
      CpuIsaGuard guard(CpuIsa::Generic);
      return run();
    }();
    at_every_level([&](CpuIsa) {
      const auto [y, dx] = run();
      INFO("d " << d << ", largest differences: output " << (y - generic.first).abs().max().item<double>()
                << ", gradient " << (dx - generic.second).abs().max().item<double>());
      CHECK(torch::equal(y == 0, generic.first == 0));  // the same mask
      CHECK(torch::allclose(y, generic.first, 1e-5, 1e-5));
      CHECK(torch::allclose(dx, generic.second, 1e-4, 1e-5));
    });
  }
}

TEST_CASE("CPU ISA: SparseAdam's fused pass agrees at every level", "[cpu_isa][train]") {
  torch::manual_seed(25);
  // With weight decay Adam's moments, without it the scaled ones.
  for (const auto& width_decay : {std::pair<int64_t, double>{3, 0.01}, {16, 0.01}, {37, 0.01}, {64, 0.01},
                                  {37, 0.0}, {64, 0.0}}) {
    // Named copies: Clang 14 cannot capture structured bindings in lambdas.
    const int64_t width = width_decay.first;
    const double decay = width_decay.second;
    const auto init = torch::randn({50, width});
    const auto ids = torch::tensor({0, 7, 7, 19, 49}, torch::kInt64);
    auto run = [&] {
      auto table = init.clone().requires_grad_(true);
      SparseAdam adam({table}, torch::optim::AdamOptions(0.05).weight_decay(decay));
      for (int step = 0; step < 3; ++step) {
        adam.zero_grad();
        torch::embedding(table, (ids + step) % 50, -1, false, true).pow(2).sum().backward();
        adam.step();
      }
      return table.detach().clone();
    };
    const auto generic = [&] {
      CpuIsaGuard guard(CpuIsa::Generic);
      return run();
    }();
    at_every_level([&](CpuIsa) {
      const auto table = run();
      INFO("width " << width << ", weight decay " << decay << ", largest difference "
                    << (table - generic).abs().max().item<double>());
      CHECK(torch::allclose(table, generic, 1e-6, 1e-6));
    });
  }
}
