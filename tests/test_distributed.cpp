// Data-parallel training on c10d: ShardedSampler's shares, and DataParallel
// with two ranks on 127.0.0.1 (each a process: this test binary run again
// on a hidden worker test case, with RANK/WORLD_SIZE/MASTER_* set, as
// torchrun would). The two-rank tests skip with a message when this build
// has no Gloo (libgloo-dev not installed).

#include "helpers.hpp"
#include "vk_in_process.hpp"

#include <rectrain/data/batch_pipeline.hpp>
#include <rectrain/dist/data_parallel.hpp>
#include <rectrain/dist/local_launcher.hpp>
#include <rectrain/dist/sharded_als.hpp>
#include <rectrain/train/sparse_adam.hpp>

#include <signal.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <map>
#include <set>
#include <thread>

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// Users with 3..40 rows each, items and 0/1/2 targets; the same every call.
struct ToyData {
  int64_t users = 0, items = 0;
  torch::Tensor user, item, target;
};

ToyData toy_data(int64_t users = 60, uint64_t seed = 5) {
  auto gen = at::detail::createCPUGenerator(seed);
  ToyData d;
  d.users = users;
  d.items = 500;
  std::vector<torch::Tensor> user_rows;
  const auto lengths = torch::randint(3, 41, {users}, gen, torch::kInt64);
  for (int64_t u = 0; u < users; ++u) user_rows.push_back(torch::full({lengths[u].item<int64_t>()}, u, torch::kInt64));
  d.user = torch::cat(user_rows);
  d.item = torch::randint(0, d.items, {d.user.size(0)}, gen, torch::kInt64);
  d.target = torch::randint(0, 3, {d.user.size(0)}, gen, torch::kInt64);
  return d;
}

BatchSpec toy_spec(const ToyData& d) {
  BatchSpec spec;
  spec.feature("user", d.user).feature("item", d.item).label("target", d.target, {}, torch::kFloat32);
  return spec;
}

/// A sparse id table (SparseAdam), a dense one (Adam), a layer and a
/// learned loss weight: the loss is the mean over a batch's rows, every
/// group full, so the mean of two ranks' means weighted by their groups is
/// the mean over the union.
struct ToyModelImpl : torch::nn::Module {
  explicit ToyModelImpl(const ToyData& d)
      : user(register_module("user", CategoricalFeature(CategoricalFeatureOptions(d.users, 8).sparse(true).init_std(0.3)))),
        item(register_module("item", CategoricalFeature(CategoricalFeatureOptions(d.items, 8).init_std(0.3)))),
        mix(register_module("mix", torch::nn::Linear(8, 1))),
        log_weight(register_parameter("log_weight", torch::zeros({1}))),
        score_mean(register_buffer("score_mean", torch::zeros({1}))) {}
  torch::OrderedDict<std::string, torch::Tensor> forward(const Batch& b) {
    torch::OrderedDict<std::string, torch::Tensor> out;
    out.insert("score", mix(user(b.feature("user")) * item(b.feature("item"))).squeeze(-1));
    if (is_training()) {  // a running statistic, as BatchNorm keeps: each rank sees other rows
      torch::NoGradGuard no_grad;
      score_mean.mul_(0.9).add_(0.1 * out["score"].mean());
    }
    return out;
  }
  LossTerms loss_terms(const torch::OrderedDict<std::string, torch::Tensor>& p, const Batch& b) {
    LossTerms t;
    const auto mse = (p["score"] - b.label("target")).pow(2).mean();
    t.heads.insert("mse", mse);
    t.total = torch::exp(-log_weight).squeeze() * mse + 0.5 * log_weight.squeeze();
    return t;
  }
  CategoricalFeature user, item;
  torch::nn::Linear mix;
  torch::Tensor log_weight, score_mean;
};
TORCH_MODULE(ToyModel);

struct ToyTraining {
  ToyTraining(const ToyData& d, int64_t groups_per_step, uint64_t init_seed)
      : model((torch::manual_seed(init_seed), ToyModel(d))),
        tables({model->user->weight}, torch::optim::AdamOptions(0.05)),
        dense({model->item->weight, model->mix->weight, model->mix->bias, model->log_weight},
              torch::optim::AdamOptions(0.05)),
        sampler(d.user, d.target, GroupSamplerOptions(3).batch_size(groups_per_step).drop_uniform(false).seed(11)) {}
  ToyModel model;
  SparseAdam tables;
  torch::optim::Adam dense;
  GroupSampler sampler;
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}

/// Starts `world` ranks of this test binary on the hidden test case
/// `test_name`, with torchrun's variables and `extra` (NAME=value for every
/// rank, "R<r>:NAME=value" for rank r only); each rank's output goes to
/// rank<r>.log in `dir`.
std::unique_ptr<LocalLauncher> start_ranks(const std::string& test_name, int world, const TempDir& dir,
                                           const std::vector<std::string>& extra, double grace_seconds = 60) {
  const std::string path = dir.path().string();
  auto launcher = std::make_unique<LocalLauncher>(
      LocalLaunchOptions(world)
          .grace_seconds(grace_seconds)
          .environment([extra, path](int64_t rank) {
            std::vector<std::string> env{"OMP_NUM_THREADS=1", "RECTRAIN_TEST_DIR=" + path};
            for (const auto& x : extra) {
              if (x.size() > 3 && x[0] == 'R' && x[2] == ':') {
                if (x[1] - '0' == rank) env.push_back(x.substr(3));
              } else {
                env.push_back(x);
              }
            }
            return env;
          })
          .output([path](int64_t rank) { return path + "/rank" + std::to_string(rank) + ".log"; }));
  launcher->start({"/proc/self/exe", test_name});
  return launcher;
}

/// Rank r's output, every run of white space as one space (Catch wraps the
/// messages it prints).
std::string rank_log(const TempDir& dir, int rank) {
  std::string out;
  for (const char c : read_file(dir.file("rank" + std::to_string(rank) + ".log"))) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (!space) out += c;
    else if (!out.empty() && out.back() != ' ') out += ' ';
  }
  return out;
}

bool have_gloo() {
  if (distributed_backend_available(DistributedBackend::Gloo)) return true;
  static bool said = false;
  if (!said) WARN("two-rank tests skipped: this build has no Gloo backend (Debian: apt install libgloo-dev)");
  said = true;
  return false;
}

void save_parameters(torch::nn::Module& m, const std::string& path) {
  torch::serialize::OutputArchive archive;
  for (const auto& p : m.named_parameters()) archive.write(p.key(), p.value().detach());
  for (const auto& b : m.named_buffers()) archive.write(b.key(), b.value(), /*is_buffer=*/true);
  archive.save_to(path);
}

/// The buffer `name` saved by save_parameters.
torch::Tensor saved_buffer(const std::string& path, const std::string& name) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  torch::Tensor t;
  archive.read(name, t, /*is_buffer=*/true);
  return t;
}

/// The largest ||a - b|| / ||b|| (2-norms) over `m`'s parameters (b)
/// against those saved in `path` (a).
double largest_relative_difference(torch::nn::Module& m, const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  double worst = 0;
  for (const auto& p : m.named_parameters()) {
    torch::Tensor other;
    archive.read(p.key(), other);
    const auto ref = p.value().detach();
    worst = std::max(worst, ((other - ref).norm() / ref.norm()).item<double>());
  }
  return worst;
}

/// Two ranks of the toy model's worker with `env`; each rank's parameters
/// must be `one`'s (one process trained on the union of their batches).
void train_two_ranks_like(torch::nn::Module& one, const TempDir& dir, const std::vector<std::string>& env) {
  auto launcher = start_ranks("dist worker: train the toy model", 2, dir, env);
  const auto& ranks = launcher->wait(180);
  for (const auto& r : ranks) {
    INFO(rank_log(dir, static_cast<int>(r.rank)));
    REQUIRE(r.succeeded());
  }
  for (int r = 0; r < 2; ++r) {
    const double diff = largest_relative_difference(one, dir.file("params" + std::to_string(r) + ".pt"));
    INFO("rank " << r << ": largest relative difference (2-norm) " << diff);
    CHECK(diff < 1e-5);
  }
  // The running statistic is averaged every step: the same on both ranks,
  // though each saw other rows.
  const auto mean0 = saved_buffer(dir.file("params0.pt"), "score_mean");
  CHECK(torch::equal(mean0, saved_buffer(dir.file("params1.pt"), "score_mean")));
  CHECK(mean0.abs().item<float>() > 0);
}

/// A random user x item matrix with counts, some users and items empty.
CsrMatrix toy_matrix() {
  auto gen = at::detail::createCPUGenerator(8);
  const auto row = torch::randint(0, 301, {6000}, gen, torch::kInt64);
  const auto col = torch::randint(0, 203, {6000}, gen, torch::kInt64);
  return build_csr(row, col, 305, 207, torch::ones({6000}));
}

ImplicitAlsOptions toy_als_options(double alpha) {
  return ImplicitAlsOptions(16).iterations(4).regularization(0.1).alpha(alpha).seed(3);
}

} // namespace

TEST_CASE("ShardedSampler: the ranks share every group of an epoch once, in global batches", "[dist][sampler]") {
  const auto d = toy_data();
  for (const int64_t world : {1, 2, 3}) {
    for (const int64_t per_rank : {1, 4, 7}) {
      GroupSampler whole(d.user, d.target, GroupSamplerOptions(3).batch_size(per_rank * world).drop_uniform(false).seed(4));
      std::vector<std::unique_ptr<GroupSampler>> inner;
      std::vector<std::unique_ptr<ShardedSampler>> shards;
      for (int64_t r = 0; r < world; ++r) {
        inner.push_back(std::make_unique<GroupSampler>(
            d.user, d.target, GroupSamplerOptions(3).batch_size(per_rank).drop_uniform(false).seed(4)));
        shards.push_back(std::make_unique<ShardedSampler>(*inner.back(), r, world));
      }
      for (const int64_t epoch : {0, 3}) {
        whole.set_epoch(epoch);
        std::vector<torch::Tensor> expected;
        while (auto b = whole.next_batch()) expected.push_back(*b);
        const auto all_expected = torch::cat(expected);
        for (auto& s : shards) s->set_epoch(epoch);
        const int64_t steps = shards[0]->num_batches();
        for (auto& s : shards) CHECK(s->num_batches() == steps);  // same count on every rank
        std::vector<torch::Tensor> served;
        for (int64_t step = 0; step < steps; ++step) {
          double share = 0;
          for (int64_t r = 0; r < world; ++r) {
            auto b = shards[static_cast<size_t>(r)]->next_batch();
            REQUIRE(b);
            CHECK(b->size(0) >= 1);  // no rank ever gets an empty batch
            share += shards[static_cast<size_t>(r)]->share_of_batch(step);
            CHECK(shards[static_cast<size_t>(r)]->share_of_batch(step) ==
                  Approx(static_cast<double>(b->size(0)) / static_cast<double>(shards[0]->step(step).count)));
            served.push_back(*b);
          }
          CHECK(share == Approx(1.0));
        }
        for (auto& s : shards) CHECK_FALSE(s->next_batch());
        // Rank by rank within each step, in step order: the one-process order.
        CHECK(torch::equal(torch::cat(served), all_expected));
      }
    }
  }
  // A tail shorter than the ranks joins the step before it.
  {
    GroupSampler inner(d.user, d.target, GroupSamplerOptions(3).batch_size(1).drop_uniform(false).seed(4));
    ShardedSampler s(inner, 0, 2);
    s.set_epoch(0);
    const int64_t groups = s.num_groups();
    CHECK(s.num_batches() == groups / 2);
    CHECK(s.step(s.num_batches() - 1).count == (groups % 2 ? 3 : 2));
  }
  GroupSampler tiny(torch::zeros({6}, torch::kInt64), torch::zeros({6}, torch::kInt64),
                    GroupSamplerOptions(3).drop_uniform(false));
  ShardedSampler three(tiny, 0, 3);
  CHECK_THROWS_WITH(three.set_epoch(0), Catch::Contains("fewer than the 3 ranks"));
  CHECK_THROWS_WITH(ShardedSampler(tiny, 3, 3), Catch::Contains("rank must be in 0..world_size-1"));
}

TEST_CASE("ShardedSampler saves its place and resumes on the same batches", "[dist][sampler]") {
  const auto d = toy_data();
  GroupSampler a_inner(d.user, d.target, GroupSamplerOptions(3).batch_size(2).drop_uniform(false).seed(4));
  ShardedSampler a(a_inner, 1, 2);
  a.set_epoch(2);
  a.next_batch();
  a.next_batch();
  torch::serialize::OutputArchive out;
  a.save(out);
  std::stringstream bytes;
  out.save_to(bytes);
  GroupSampler b_inner(d.user, d.target, GroupSamplerOptions(3).batch_size(2).drop_uniform(false).seed(4));
  ShardedSampler b(b_inner, 1, 2);
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  b.load(in);
  CHECK(b.epoch() == 2);
  for (;;) {
    auto x = a.next_batch(), y = b.next_batch();
    REQUIRE(x.has_value() == y.has_value());
    if (!x) break;
    CHECK(torch::equal(*x, *y));
  }
  GroupSampler c_inner(d.user, d.target, GroupSamplerOptions(3).batch_size(2).drop_uniform(false).seed(4));
  ShardedSampler c(c_inner, 0, 3);
  torch::serialize::InputArchive again;
  bytes.seekg(0);
  again.load_from(bytes);
  CHECK_THROWS_WITH(c.load(again), Catch::Contains("resume only with as many"));
}

TEST_CASE("DistributedOptions from torchrun's environment variables", "[dist]") {
  const auto set = [](const char* name, const char* value) { ::setenv(name, value, 1); };
  set("RANK", "1");
  set("WORLD_SIZE", "4");
  set("LOCAL_RANK", "1");
  set("MASTER_ADDR", "10.1.2.3");
  set("MASTER_PORT", "29999");
  set("RECTRAIN_DIST_TIMEOUT", "7.5");
  const auto o = DistributedOptions::from_environment();
  CHECK(o.rank() == 1);
  CHECK(o.world_size() == 4);
  CHECK(o.local_rank() == 1);
  CHECK(o.master_addr() == "10.1.2.3");
  CHECK(o.master_port() == 29999);
  CHECK(o.timeout_seconds() == 7.5);
  set("RANK", "4");
  CHECK_THROWS_WITH(DistributedOptions::from_environment(), Catch::Contains("rank must be in 0..3"));
  set("RANK", "x1");
  CHECK_THROWS_WITH(DistributedOptions::from_environment(), Catch::Contains("RANK must be an integer >= 0, got 'x1'"));
  set("RANK", "0");
  set("MASTER_PORT", "70000");
  CHECK_THROWS_WITH(DistributedOptions::from_environment(), Catch::Contains("master_port must be in 1..65535"));
  set("MASTER_PORT", "29999");
  set("RECTRAIN_DIST_TIMEOUT", "0");
  CHECK_THROWS_WITH(DistributedOptions::from_environment(), Catch::Contains("RECTRAIN_DIST_TIMEOUT"));
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RECTRAIN_DIST_TIMEOUT"})
    ::unsetenv(name);
  const auto plain = DistributedOptions::from_environment();
  CHECK(plain.world_size() == 1);
  CHECK(plain.rank() == 0);
  if (!distributed_backend_available(DistributedBackend::Gloo))
    CHECK_THROWS_WITH(ProcessGroup::create(plain), Catch::Contains("libgloo-dev"));
  CHECK_THROWS_WITH(ProcessGroup::create(DistributedOptions().backend(DistributedBackend::Nccl)),
                    Catch::Contains("NCCL backend needs a CUDA device"));
}

// The worker: one rank of a two-rank run (started by the tests below, not
// run on its own: the [.] tag hides it).
TEST_CASE("dist worker: train the toy model", "[.][dist-worker]") {
  torch::set_num_threads(1);
  const std::string dir = env_or("RECTRAIN_TEST_DIR", ".");
  auto options = DistributedOptions::from_environment();
  // TOY_DEVICE=cuda: the model on the GPU; TOY_BACKEND=gloo (Gloo moves
  // CUDA tensors through the host, so two ranks can share one GPU) or nccl
  // (a GPU per rank).
  const torch::Device device = env_or("TOY_DEVICE", "cpu") == "cuda"
                                   ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                                     env_or("TOY_BACKEND", "gloo") == "nccl" ? options.local_rank() : 0))
                                   : torch::Device(torch::kCPU);
  options.backend(env_or("TOY_BACKEND", "gloo") == "nccl" ? DistributedBackend::Nccl : DistributedBackend::Gloo);
  auto group = ProcessGroup::create(options, device);
  const auto d = toy_data(std::stoll(env_or("TOY_USERS", "60")));
  // Each rank starts from other weights: the broadcast must make them equal.
  ToyTraining t(d, 4, 100 + static_cast<uint64_t>(options.rank()));
  t.model->to(device);
  ShardedSampler sharded(t.sampler, group->rank(), group->world_size());
  const auto exchange = env_or("TOY_EXCHANGE", "auto");
  DataParallel parallel(*t.model, group,
                        DataParallelOptions()
                            .overlap(env_or("TOY_OVERLAP", "1") == "1")
                            .bucket_mb(0.001)  // several buckets even for this model
                            .sparse_exchange(exchange == "gather"  ? SparseExchange::Gather
                                             : exchange == "dense" ? SparseExchange::Dense
                                                                   : SparseExchange::Auto));
  BatchPipeline pipeline(toy_spec(d), sharded, BatchPipelineOptions().workers(0).device(device));
  TrainEpochOptions epoch_options;
  const int64_t die_at = std::stoll(env_or("TOY_DIE_AT", "-1"));
  const int64_t hang_at = std::stoll(env_or("TOY_HANG_AT", "-1"));
  epoch_options.after_backward([&](int64_t batch) {
    if (batch == die_at) ::raise(SIGKILL);
    // Hangs past the other rank's timeout and its wait for an answer
    // (4 + 4 s), then goes on and fails on its own.
    if (batch == hang_at) std::this_thread::sleep_for(std::chrono::seconds(12));
  });
  epoch_options = parallel.attach(epoch_options, sharded);
  const int64_t epochs = std::stoll(env_or("TOY_EPOCHS", "2"));
  for (int64_t e = 0; e < epochs; ++e) train_epoch(t.model, {&t.tables, &t.dense}, pipeline, e, epoch_options);
  t.model->to(torch::kCPU);
  save_parameters(*t.model, dir + "/params" + std::to_string(options.rank()) + ".pt");
  const auto& s = parallel.stats();
  std::ofstream(dir + "/stats" + std::to_string(options.rank()) + ".txt")
      << s.steps << " " << s.sparse_gathered << " " << s.sparse_densified << " " << s.dense_bytes << "\n";
}

TEST_CASE("DataParallel: two ranks train as one process on the union of their batches", "[dist]") {
  if (!have_gloo()) return;
  const auto d = toy_data();
  // One process, 2 x 4 groups a step: the union of the ranks' batches.
  torch::set_num_threads(1);
  ToyTraining one(d, 8, 100);
  BatchPipeline pipeline(toy_spec(d), one.sampler, BatchPipelineOptions().workers(0));
  for (int64_t e = 0; e < 2; ++e) train_epoch(one.model, {&one.tables, &one.dense}, pipeline, e);
  torch::set_num_threads(2);
  REQUIRE(one.sampler.num_groups() % 8 != 0);  // the last step is uneven between the ranks

  for (const auto& [overlap, exchange] : std::vector<std::pair<std::string, std::string>>{
           {"1", "gather"}, {"0", "dense"}, {"1", "auto"}}) {
    INFO("overlap " << overlap << ", sparse exchange " << exchange);
    TempDir dir;
    train_two_ranks_like(*one.model, dir, {"TOY_OVERLAP=" + overlap, "TOY_EXCHANGE=" + exchange});
    std::istringstream stats(read_file(dir.file("stats0.txt")));
    int64_t steps = 0, gathered = 0, densified = 0;
    double dense_bytes = 0;
    stats >> steps >> gathered >> densified >> dense_bytes;
    CHECK(gathered + densified == steps);  // one sparse table, every step
    CHECK(dense_bytes > 0);
    if (exchange == "gather") CHECK(densified == 0);
    if (exchange == "dense") CHECK(gathered == 0);
  }
}

TEST_CASE("DataParallel: a rank that dies or hangs stops the other within the timeout, naming it", "[dist]") {
  if (!have_gloo()) return;
  for (const std::string fault : {"TOY_DIE_AT", "TOY_HANG_AT"}) {
    INFO(fault);
    TempDir dir;
    const auto start = std::chrono::steady_clock::now();
    // Rank 0 must stop by itself; a hung rank 1 is killed 10 s after.
    auto launcher = start_ranks("dist worker: train the toy model", 2, dir,
                                {"RECTRAIN_DIST_TIMEOUT=4", "R1:" + fault + "=3"}, 10);
    const auto& ranks = launcher->wait(60);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto log = rank_log(dir, 0);
    INFO(log);
    REQUIRE(ranks[0].finished);
    CHECK_FALSE(ranks[0].killed);
    CHECK_FALSE(ranks[0].succeeded());
    CHECK_FALSE(ranks[1].succeeded());
    CHECK_THAT(log, Catch::Contains("rank 0 of 2"));
    CHECK_THAT(log, Catch::Contains("rank 1 did not answer"));
    CHECK(seconds < 40);
  }
}

TEST_CASE("DataParallel refuses ranks whose models differ, naming the parameter", "[dist]") {
  if (!have_gloo()) return;
  TempDir dir;
  auto launcher = start_ranks("dist worker: train the toy model", 2, dir, {"R1:TOY_USERS=61"});
  const auto& ranks = launcher->wait(60);
  for (const auto& r : ranks) {
    const auto log = rank_log(dir, static_cast<int>(r.rank));
    INFO(log);
    CHECK_FALSE(r.killed);
    CHECK_FALSE(r.succeeded());
    CHECK_THAT(log, Catch::Contains("disagree on the model's parameters"));
  }
  CHECK_THAT(rank_log(dir, 0), Catch::Contains("user.weight"));
}

TEST_CASE("dist worker: sharded ALS", "[.][dist-worker]") {
  torch::set_num_threads(1);
  const std::string dir = env_or("RECTRAIN_TEST_DIR", ".");
  auto group = ProcessGroup::create(DistributedOptions::from_environment());
  for (const double alpha : {0.0, 2.0})
    for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
      const auto f = fit_implicit_als_sharded(toy_matrix(), *group, toy_als_options(alpha).dtype(dtype));
      torch::serialize::OutputArchive archive;
      archive.write("user", f.user);
      archive.write("item", f.item);
      archive.save_to(dir + "/als" + std::to_string(group->rank()) + "_" + std::to_string(static_cast<int>(alpha)) +
                      "_" + c10::toString(dtype) + ".pt");
    }
}

TEST_CASE("fit_implicit_als_sharded: two ranks give one process's factors", "[dist][als]") {
  if (!have_gloo()) return;
  TempDir dir;
  auto launcher = start_ranks("dist worker: sharded ALS", 2, dir, {});
  const auto& ranks = launcher->wait(120);
  for (const auto& r : ranks) {
    INFO(rank_log(dir, static_cast<int>(r.rank)));
    REQUIRE(r.succeeded());
  }
  // The shared solve (alpha 0) and CG per row (alpha 2). In float64 the
  // factors agree to rounding; in float32 this problem's factors move by
  // about 5e-6 (shared) and 5e-4 (CG) between float32 and float64 in one
  // process, and the Gram matrix summed in another order moves them as
  // much.
  for (const double alpha : {0.0, 2.0})
    for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
      INFO("alpha " << alpha << ", " << dtype);
      torch::set_num_threads(1);
      const auto one = fit_implicit_als(toy_matrix(), toy_als_options(alpha).dtype(dtype));
      torch::set_num_threads(2);
      const double tolerance = dtype == torch::kFloat64 ? 1e-9 : alpha == 0 ? 1e-4 : 3e-3;
      for (int r = 0; r < 2; ++r) {
        torch::serialize::InputArchive archive;
        archive.load_from(dir.file("als" + std::to_string(r) + "_" + std::to_string(static_cast<int>(alpha)) + "_" +
                                   c10::toString(dtype) + ".pt"));
        torch::Tensor user, item;
        archive.read("user", user);
        archive.read("item", item);
        const double du = ((user - one.user).norm() / one.user.norm()).item<double>();
        const double di = ((item - one.item).norm() / one.item.norm()).item<double>();
        INFO("rank " << r << ": relative difference users " << du << ", items " << di);
        CHECK(du < tolerance);
        CHECK(di < tolerance);
      }
    }
}

TEST_CASE("rectrain-vk train --nproc 2: outputs from rank 0, a killed rank stops the other, --resume ends on the "
          "same bytes", "[dist][cli]") {
  if (!have_gloo()) return;
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE_THAT(vk_out("synth --scale 0.002 --seed 3 --out " + data), Catch::Contains("synth:"));
  const std::string program = vk_program();
  const std::string vk = program.substr(0, program.find(" --threads")) + " --threads 1 train --nproc 2";
  const std::string flags = " --data " + data + " --frozen-epochs 1 --unfrozen-epochs 1 --hidden 32,16 --seeds 1,2";
  const auto full = run_command(vk + flags + " --out " + dir.file("full"));
  INFO(full);
  REQUIRE_THAT(full, Catch::Contains("train: done"));
  CHECK_THAT(full, Catch::Contains("train: 2 ranks (gloo") && Catch::Contains("16 per batch"));
  // Rank 1 prints nothing: every line once.
  CHECK(full.find("train: done") == full.rfind("train: done"));
  for (const char* file : {"predictions.csv", "metrics.jsonl", "model-seed1.pt", "model-seed2.pt", "checkpoint-seed2.pt"})
    CHECK(fs::exists(dir.file("full/") + file));

  // Rank 1 killed in its 80th step (epoch 1 of seed 1): rank 0 stops within
  // the timeout and names it; --resume continues from the checkpoint.
  const auto start = std::chrono::steady_clock::now();
  const auto cut = run_command("(RECTRAIN_DIST_TIMEOUT=5 RECTRAIN_CRASH_AT=epoch.step:80 RECTRAIN_CRASH_RANK=1 " + vk +
                               flags + " --out " + dir.file("cut") + ") 2>&1; echo exit $?");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(cut);
  CHECK_THAT(cut, Catch::Contains("rank 1 did not answer") && Catch::Contains("rank 1 was killed by signal 9") &&
                      Catch::Contains("exit 1"));
  CHECK(seconds < 60);
  CHECK_FALSE(fs::exists(dir.file("cut/predictions.csv")));
  const auto resumed = run_command(vk + flags + " --out " + dir.file("cut") + " --resume");
  INFO(resumed);
  CHECK_THAT(resumed, Catch::Contains("resumed from") && Catch::Contains("train: done"));
  CHECK(read_file(dir.file("cut/predictions.csv")) == read_file(dir.file("full/predictions.csv")));

  // Ranks started with other settings refuse, saying which.
  const std::string one_rank = program.substr(0, program.find(" --threads")) + " --threads 1 train --data " + data +
                               " --frozen-epochs 1 --unfrozen-epochs 1 --seeds 1,2 --out " + dir.file("differ");
  const auto differ = run_command("RECTRAIN_DIST_TIMEOUT=20 WORLD_SIZE=2 RANK=0 MASTER_PORT=" +
                                  std::to_string(free_local_port()) + " sh -c '" + one_rank + " --hidden 32,16 & RANK=1 " +
                                  one_rank + " --hidden 8; wait'");
  INFO(differ);
  CHECK_THAT(differ, Catch::Contains("the ranks disagree on the settings") && Catch::Contains("hidden=32,16") &&
                         Catch::Contains("hidden=8"));
}

TEST_CASE("DataParallel on CUDA: two ranks train as one process on the union of their batches", "[dist][cuda]") {
  if (!torch::cuda::is_available()) return;
  const auto d = toy_data();
  ToyTraining one(d, 8, 100);
  one.model->to(torch::kCUDA);
  BatchPipeline pipeline(toy_spec(d), one.sampler, BatchPipelineOptions().workers(0).device(torch::kCUDA));
  for (int64_t e = 0; e < 2; ++e) train_epoch(one.model, {&one.tables, &one.dense}, pipeline, e);
  one.model->to(torch::kCPU);
  // Gloo with CUDA tensors (one GPU shared); NCCL needs a GPU per rank.
  std::vector<std::string> backends;
  if (distributed_backend_available(DistributedBackend::Gloo)) backends.push_back("gloo");
  if (distributed_backend_available(DistributedBackend::Nccl) && torch::cuda::device_count() >= 2)
    backends.push_back("nccl");
  if (backends.empty()) WARN("two-rank CUDA test skipped: no Gloo, and no NCCL with two GPUs");
  for (const auto& backend : backends) {
    INFO("backend " << backend);
    TempDir dir;
    train_two_ranks_like(*one.model, dir, {"TOY_DEVICE=cuda", "TOY_BACKEND=" + backend});
  }
}
