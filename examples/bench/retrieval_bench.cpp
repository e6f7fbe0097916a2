// Retrieval training and evaluation throughput.
//  1. Training samples/s per negative sampler on synthetic positives
//     (default 10M interactions: 100k users x 300k items), MF f = 64 with
//     sparse tables (SparseAdam on the rows a batch used), batch 1024;
//     `--steps` steps after as many warm-up steps; with the sampler's own share.
//  2. Full-catalogue evaluation seconds (top-20 of every user, training
//     items excluded, P/R/NDCG/HitRate at 10 and 20) for 100k users x 300k
//     items at f = 64.
//   retrieval_bench [--interactions N] [--users U] [--items I] [--dim F] [--steps S]
//                   [--samplers list] [--eval-users U] [--device cpu|cuda] [--threads T]

#include "machine.hpp"
#include "programs.hpp"

#include <rectrain/core/device.hpp>
#include <rectrain/nn/id_tables.hpp>
#include <rectrain/retrieval/interactions.hpp>
#include <rectrain/retrieval/retrieval_metrics.hpp>
#include <rectrain/retrieval/retrieval_trainer.hpp>
#include <rectrain/retrieval/synthetic_interactions.hpp>
#include <rectrain/train/table_optimizers.hpp>

#include <sstream>

int retrieval_bench_main(int argc, char** argv) {
  int64_t interactions = 10'000'000, users = 100'000, items = 300'000, dim = 64, steps = 30, eval_users = 100'000;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string samplers = "uniform,popularity,in-batch,dynamic,augmented", device_name = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--interactions") interactions = std::stoll(value);
    else if (flag == "--users") users = std::stoll(value);
    else if (flag == "--items") items = std::stoll(value);
    else if (flag == "--dim") dim = std::stoll(value);
    else if (flag == "--steps") steps = std::stoll(value);
    else if (flag == "--eval-users") eval_users = std::stoll(value);
    else if (flag == "--samplers") samplers = value;
    else if (flag == "--device") device_name = value;
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::fprintf(stderr, "retrieval_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  using namespace rectrain;
  torch::set_num_threads(threads);
  const auto device = parse_device(device_name, "--device");
  bench::print_machine("retrieval_bench");

  double t0 = bench::now_seconds();
  const auto log = synthetic_interactions(SyntheticInteractionsOptions(users, items)
                                              .per_user(static_cast<double>(interactions) / static_cast<double>(users))
                                              .clusters(200)
                                              .seed(1));
  const auto catalogue = Catalogue::of({&log});
  const auto split = split_per_user(positives_matrix(log, catalogue), 0.2, 1);
  std::printf("# data: %lld interactions drawn, %lld users x %lld items, %lld train / %lld test positives (%.1f s)\n",
              static_cast<long long>(log.size()), static_cast<long long>(catalogue.num_users()),
              static_cast<long long>(catalogue.num_items()), static_cast<long long>(split.train.nnz()),
              static_cast<long long>(split.test.nnz()), bench::now_seconds() - t0);

  std::printf("\n## training, MF f = %lld, batch 1024, sparse tables, %lld steps, %s\n", static_cast<long long>(dim),
              static_cast<long long>(steps), device.str().c_str());
  std::printf("%-12s %14s %16s %12s\n", "sampler", "samples/s", "sampling share", "ms/step");
  std::stringstream list(samplers);
  for (std::string name; std::getline(list, name, ',');) {
    torch::manual_seed(1);
    auto model = matrix_factorization(
        MatrixFactorizationOptions(catalogue.num_users(), catalogue.num_items(), dim).sparse(true));
    model->to(device);
    RetrievalTrainer trainer(model, split.train, RetrievalColumns{},
                             RetrievalTrainerOptions()
                                 .negatives(parse_negative_sampling(name))
                                 .batch_size(1024)
                                 .l2(1e-3)
                                 .seed(1)
                                 .device(device)
                                 .max_steps_per_epoch(steps));
    const auto adam = torch::optim::AdamOptions(1e-2);
    TableOptimizers tables(*model, table_parameter_names(*model, {"user_id", "item_id"}), adam, TableUpdate::Lazy);
    auto optimizers = tables.all();
    std::unique_ptr<torch::optim::Adam> gates;
    if (!trainer.augmenter().is_empty()) {
      gates = std::make_unique<torch::optim::Adam>(trainer.augmenter()->parameters(), adam);
      optimizers.push_back(gates.get());
    }
    trainer.train_epoch(optimizers, 0);  // warm-up
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto stats = trainer.train_epoch(optimizers, 1);
    if (device.is_cuda()) torch::cuda::synchronize();
    std::printf("%-12s %14.0f %15.1f%% %12.2f\n", name.c_str(), stats.samples_per_second(),
                100.0 * stats.sampling_seconds / stats.seconds, 1e3 * stats.seconds / static_cast<double>(stats.steps));
    std::fflush(stdout);
  }

  std::printf("\n## full-catalogue evaluation, f = %lld, K = 10 and 20, %s\n", static_cast<long long>(dim),
              device.str().c_str());
  torch::manual_seed(2);
  const auto user_factors = torch::randn({catalogue.num_users(), dim}).to(device);
  const auto item_factors = torch::randn({catalogue.num_items(), dim}).to(device);
  // The first eval_users users (all by default).
  CsrMatrix test = split.test;
  if (eval_users < test.rows) {
    test.indptr = test.indptr.clone();
    test.indptr.narrow(0, eval_users + 1, test.rows - eval_users).fill_(test.indptr[eval_users].item<int64_t>());
  }
  const auto m = evaluate_retrieval(user_factors, item_factors, split.train, test);
  std::printf("%lld users with test items x %lld items: %.2f s (%.0f users/s)\n", static_cast<long long>(m.users),
              static_cast<long long>(catalogue.num_items()), m.seconds, static_cast<double>(m.users) / m.seconds);
  return 0;
}
