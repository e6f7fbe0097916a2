// rectrain-retrieval: a thin program over rectrain's retrieval parts.
//
//   synth   --out CSV                                synthetic positives
//   split   --input CSV --train-out CSV --test-out CSV   per-user holdout
//   train   --train CSV [--test CSV] --negatives S --loss L --out DIR
//   export  --out DIR                        user_factors.csv, item_factors.csv
//   eval    --train CSV --test CSV --factors DIR
//   als     --train CSV [--test CSV] --out DIR   the ALS baseline (factors)
//   popularity --train CSV --test CSV        the popularity baseline
//
// CSV files are user_id,item_id[,weight]. Ids are the union of the train and
// test files, so every item has a factor.

#include "cli.hpp"

#include <rectrain/als/implicit_als.hpp>
#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/device.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/stopwatch.hpp>
#include <rectrain/retrieval/interactions.hpp>
#include <rectrain/retrieval/retrieval_metrics.hpp>
#include <rectrain/retrieval/retrieval_trainer.hpp>
#include <rectrain/retrieval/synthetic_interactions.hpp>
#include <rectrain/train/table_optimizers.hpp>
#include <rectrain/nn/id_tables.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace retrieval {
namespace {

using namespace rectrain;
namespace fs = std::filesystem;

struct TrainRun {
  std::string train, test, out, negatives = "uniform", loss = "bpr", device = "cpu", init = "random";
  int64_t dim = 64, epochs = 20, batch_size = 1024, num_negatives = 1, pool = 16;
  double lr = 1e-2, l2 = 1e-3, beta = 0.75, temperature = 1.0, ans_eps = 1.0, ans_gamma = 0.1, ans_scale = 0.1;
  double als_regularization = 0.1;
  uint64_t seed = 1;
  bool weighted = false, sparse = false;
};

struct Data {
  InteractionLog train_log, test_log;
  bool has_test = false;
  Catalogue catalogue;
  CsrMatrix train, test;
};

Data load(const std::string& train, const std::string& test) {
  Data d;
  d.train_log = read_interaction_log(train);
  d.has_test = !test.empty();
  if (d.has_test) d.test_log = read_interaction_log(test);
  d.catalogue = d.has_test ? Catalogue::of({&d.train_log, &d.test_log}) : Catalogue::of({&d.train_log});
  d.train = positives_matrix(d.train_log, d.catalogue);
  if (d.has_test) d.test = positives_matrix(d.test_log, d.catalogue);
  return d;
}

void print_metrics(const std::string& prefix, const RetrievalMetrics& m) {
  std::printf("%sprecision@10 %.6f\n%sndcg@10 %.6f\n%srecall@20 %.6f\n%sndcg@20 %.6f\n", prefix.c_str(),
              m.at_k(10).precision, prefix.c_str(), m.at_k(10).ndcg, prefix.c_str(), m.at_k(20).recall, prefix.c_str(),
              m.at_k(20).ndcg);
}

std::string metrics_json(const RetrievalMetrics& m) {
  return rectrain::detail::concat("\"precision@10\": ", m.at_k(10).precision, ", \"ndcg@10\": ", m.at_k(10).ndcg,
                        ", \"recall@10\": ", m.at_k(10).recall, ", \"precision@20\": ", m.at_k(20).precision,
                        ", \"recall@20\": ", m.at_k(20).recall, ", \"ndcg@20\": ", m.at_k(20).ndcg,
                        ", \"hit_rate@20\": ", m.at_k(20).hit_rate, ", \"eval_users\": ", m.users);
}

/// `id,f0,...` rows, one per dense index (ascending raw id).
void write_factors(const std::string& path, const torch::Tensor& raw_ids, const torch::Tensor& factors) {
  const auto f = factors.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = f.size(0), d = f.size(1);
  const int64_t* ids = raw_ids.data_ptr<int64_t>();
  const float* v = f.data_ptr<float>();
  write_stream_atomically(path, [&](std::ostream& out) {
    out << "id";
    for (int64_t j = 0; j < d; ++j) out << ",f" << j;
    out << '\n';
    char buffer[32];
    for (int64_t i = 0; i < n; ++i) {
      out << ids[i];
      for (int64_t j = 0; j < d; ++j) {
        std::snprintf(buffer, sizeof buffer, ",%.9g", static_cast<double>(v[i * d + j]));
        out << buffer;
      }
      out << '\n';
    }
  });
}

/// A factor file: its ids (ascending, no repeats) and [n, d] float32.
std::pair<torch::Tensor, torch::Tensor> read_factors(const std::string& path) {
  const Table t = read_csv(path, {{"id", CsvType::Id}}, CsvOptions().extra_columns(ExtraColumns::KeepAsNumber));
  std::vector<torch::Tensor> columns;
  for (int64_t j = 0;; ++j) {
    const std::string name = "f" + std::to_string(j);
    if (!t.contains(name)) break;
    columns.push_back(t[name]);
  }
  if (columns.empty() || static_cast<int64_t>(columns.size()) + 1 != t.num_columns())
    throw Error(path + ": expected the columns id,f0,...,f{d-1} (as export writes them)");
  const auto ids = t["id"];
  if (ids.numel() == 0) throw Error(path + ": no rows");
  if (ids.numel() > 1 && !(ids.slice(0, 1) > ids.slice(0, 0, -1)).all().item<bool>()) {
    const int64_t at = (ids.slice(0, 1) <= ids.slice(0, 0, -1)).nonzero()[0][0].item<int64_t>();
    throw Error(rectrain::detail::concat(path, ": line ", at + 3, ": ids must be ascending without repeats (id ",
                               ids[at + 1].item<int64_t>(), " after ", ids[at].item<int64_t>(), ")"));
  }
  return {ids, torch::stack(columns, 1)};
}

int run_split(const std::string& input, const std::string& train_out, const std::string& test_out, double fraction,
              uint64_t seed) {
  const auto log = read_interaction_log(input);
  const auto catalogue = Catalogue::of({&log});
  const auto split = split_per_user(positives_matrix(log, catalogue), fraction, seed);
  const bool weighted = log.weight.defined();
  for (const auto& [path, m] : {std::pair<std::string, const CsrMatrix*>{train_out, &split.train}, {test_out, &split.test}})
    write_stream_atomically(path, [&, mm = m](std::ostream& out) { out << interaction_rows_csv(*mm, catalogue, weighted); });
  std::printf("split: %lld users, %lld items: %lld train and %lld test positives (seed %llu)\n",
              static_cast<long long>(catalogue.num_users()), static_cast<long long>(catalogue.num_items()),
              static_cast<long long>(split.train.nnz()), static_cast<long long>(split.test.nnz()),
              static_cast<unsigned long long>(seed));
  return 0;
}

int run_synth(const std::string& out, const SyntheticInteractionsOptions& o) {
  const auto log = synthetic_interactions(o);
  const auto catalogue = Catalogue::of({&log});
  const auto m = positives_matrix(log, catalogue);
  write_stream_atomically(out, [&](std::ostream& stream) { stream << interaction_rows_csv(m, catalogue, false); });
  std::printf("synth: %lld users, %lld items, %lld positives in %s\n", static_cast<long long>(catalogue.num_users()),
              static_cast<long long>(catalogue.num_items()), static_cast<long long>(m.nnz()), out.c_str());
  return 0;
}

int run_popularity(const std::string& train, const std::string& test) {
  const auto d = load(train, test);
  const auto counts = item_counts(d.train).to(torch::kFloat32).unsqueeze(1);
  const auto m = evaluate_retrieval(torch::ones({d.catalogue.num_users(), 1}), counts, d.train, d.test);
  print_metrics("", m);
  return 0;
}

int run_eval(const std::string& train, const std::string& test, const std::string& factors) {
  auto [user_ids, users] = read_factors((fs::path(factors) / "user_factors.csv").string());
  auto [item_ids, items] = read_factors((fs::path(factors) / "item_factors.csv").string());
  if (users.size(1) != items.size(1))
    throw Error(rectrain::detail::concat(factors, ": user factors have ", users.size(1), " columns, item factors ",
                               items.size(1)));
  Catalogue catalogue;
  catalogue.users = IdMap::from_sorted_unique(user_ids);
  catalogue.items = IdMap::from_sorted_unique(item_ids);
  const auto train_m = positives_matrix(read_interaction_log(train), catalogue);
  const auto test_m = positives_matrix(read_interaction_log(test), catalogue);
  print_metrics("", evaluate_retrieval(users, items, train_m, test_m));
  return 0;
}

int run_als(const std::string& train, const std::string& test, const std::string& out, int64_t dim, double reg,
            double alpha, int64_t iterations, uint64_t seed) {
  const auto d = load(train, test);
  Stopwatch clock;
  const auto f = fit_implicit_als(d.train, ImplicitAlsOptions(dim).regularization(reg).alpha(alpha).iterations(iterations).seed(seed));
  const double seconds = clock.seconds();
  fs::create_directories(out);
  write_factors((fs::path(out) / "user_factors.csv").string(), d.catalogue.users.raw_ids(), f.user);
  write_factors((fs::path(out) / "item_factors.csv").string(), d.catalogue.items.raw_ids(), f.item);
  std::printf("als: %lld users x %lld items, f = %lld, %.2f s\n", static_cast<long long>(d.catalogue.num_users()),
              static_cast<long long>(d.catalogue.num_items()), static_cast<long long>(dim), seconds);
  if (d.has_test) print_metrics("", evaluate_retrieval(f.user.to(torch::kFloat32), f.item.to(torch::kFloat32), d.train, d.test));
  return 0;
}

TwoTower build_model(const TrainRun& r, const Data& d) {
  torch::manual_seed(r.seed);
  MatrixFactorizationOptions mf(d.catalogue.num_users(), d.catalogue.num_items(), r.dim);
  mf.sparse(r.sparse);
  if (r.init == "als") {
    const auto f = fit_implicit_als(d.train, ImplicitAlsOptions(r.dim).regularization(r.als_regularization).seed(r.seed));
    mf.user_init(f.user.to(torch::kFloat32)).item_init(f.item.to(torch::kFloat32));
  } else if (r.init != "random") {
    throw Error("--init must be random or als, got '" + r.init + "'");
  }
  return matrix_factorization(mf);
}

void save_model(const std::string& out, TwoTower& model, const Catalogue& catalogue) {
  torch::serialize::OutputArchive archive;
  model->save(archive);
  archive.write("user_raw_ids", catalogue.users.raw_ids());
  archive.write("item_raw_ids", catalogue.items.raw_ids());
  archive.write("dim", torch::tensor(model->user_tower->output_dim()));
  write_atomically((fs::path(out) / "model.pt").string(), [&](const std::string& temp) { archive.save_to(temp); });
}

int run_train(const TrainRun& r) {
  const auto d = load(r.train, r.test);
  const auto device = parse_device(r.device, "--device");
  auto model = build_model(r, d);
  model->to(device);
  RetrievalTrainerOptions o;
  o.negatives(parse_negative_sampling(r.negatives))
      .batch_size(r.batch_size)
      .num_negatives(r.num_negatives)
      .pool(r.pool)
      .popularity_beta(r.beta)
      .temperature(r.temperature)
      .l2(r.l2)
      .weighted(r.weighted)
      .ans_eps(r.ans_eps)
      .ans_gamma(r.ans_gamma)
      .ans_scale(r.ans_scale)
      .seed(r.seed)
      .device(device);
  if (r.loss == "bpr") o.loss(RetrievalLossKind::Bpr);
  else if (r.loss == "softmax") o.loss(RetrievalLossKind::SampledSoftmax);
  else throw Error("--loss must be bpr or softmax, got '" + r.loss + "'");
  RetrievalTrainer trainer(model, d.train, RetrievalColumns{}, o);
  const auto adam = torch::optim::AdamOptions(r.lr);
  // The id tables to SparseAdam on the rows each batch used (--sparse), the
  // rest (and the augmented sampler's gates) to Adam.
  std::unique_ptr<TableOptimizers> tables;
  std::unique_ptr<torch::optim::Adam> dense;
  std::vector<torch::optim::Optimizer*> optimizers;
  if (r.sparse) {
    tables = std::make_unique<TableOptimizers>(*model, table_parameter_names(*model, {"user_id", "item_id"}), adam,
                                               TableUpdate::Lazy);
    optimizers = tables->all();
    if (!trainer.augmenter().is_empty()) {
      dense = std::make_unique<torch::optim::Adam>(trainer.augmenter()->parameters(), adam);
      optimizers.push_back(dense.get());
    }
  } else {
    dense = std::make_unique<torch::optim::Adam>(trainer.parameters(), adam);
    optimizers.push_back(dense.get());
  }
  fs::create_directories(r.out);
  std::vector<std::string> records;
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  double first_loss = 0, train_seconds = 0;
  RetrievalEpochStats last;
  std::printf("train: %lld users x %lld items, %lld positives; MF f = %lld, %s negatives, %s loss, seed %llu\n",
              static_cast<long long>(d.catalogue.num_users()), static_cast<long long>(d.catalogue.num_items()),
              static_cast<long long>(d.train.nnz()), static_cast<long long>(r.dim), r.negatives.c_str(), r.loss.c_str(),
              static_cast<unsigned long long>(r.seed));
  for (int64_t epoch = 1; epoch <= r.epochs; ++epoch) {
    last = trainer.train_epoch(optimizers, epoch, [&](int64_t step, int64_t steps) {
      if (terminal) std::fprintf(stderr, "\r\033[Kepoch %lld step %lld/%lld", static_cast<long long>(epoch),
                                 static_cast<long long>(step), static_cast<long long>(steps));
    });
    if (terminal) std::fprintf(stderr, "\r\033[K");
    train_seconds += last.seconds;
    if (epoch == 1) first_loss = last.loss;
    std::string line = rectrain::detail::concat("{\"epoch\": ", epoch, ", \"loss\": ", last.loss, ", \"seconds\": ", last.seconds,
                                      ", \"samples_per_second\": ", last.samples_per_second(),
                                      ", \"sampling_seconds\": ", last.sampling_seconds);
    std::printf("epoch %lld  loss %.5f  %.0f samples/s  %.2f s", static_cast<long long>(epoch), last.loss,
                last.samples_per_second(), last.seconds);
    if (d.has_test) {
      const auto m = evaluate_retrieval(all_vectors(model, {}, true, d.catalogue.num_users(), device),
                                        all_vectors(model, {}, false, d.catalogue.num_items(), device), d.train, d.test);
      std::printf("  precision@10 %.5f  recall@20 %.5f  ndcg@20 %.5f", m.at_k(10).precision, m.at_k(20).recall,
                  m.at_k(20).ndcg);
      line += ", " + metrics_json(m);
    }
    std::printf("\n");
    std::fflush(stdout);
    records.push_back(line + "}");
    write_lines_atomically((fs::path(r.out) / "metrics.jsonl").string(), records);
  }
  // A run whose loss did not fall learned nothing: not a model to keep.
  if (r.epochs >= 2 && !(last.loss < first_loss))
    throw Error(rectrain::detail::concat("train: the loss did not fall (epoch 1: ", first_loss, ", epoch ", r.epochs, ": ",
                               last.loss, "); lower --lr or check the data"));
  save_model(r.out, model, d.catalogue);
  std::printf("train: %.2f s of training; model in %s\n", train_seconds, (fs::path(r.out) / "model.pt").c_str());
  return 0;
}

int run_export(const std::string& out) {
  const std::string path = (fs::path(out) / "model.pt").string();
  if (!fs::exists(path)) throw Error(path + ": no model (run train --out " + out + " first)");
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  torch::Tensor user_ids, item_ids;
  archive.read("user_raw_ids", user_ids);
  archive.read("item_raw_ids", item_ids);
  torch::Tensor dim_tensor;
  archive.read("dim", dim_tensor);
  const int64_t dim = dim_tensor.item<int64_t>();
  auto model = matrix_factorization(MatrixFactorizationOptions(user_ids.numel(), item_ids.numel(), dim));
  model->load(archive);
  const auto users = all_vectors(model, {}, true, user_ids.numel(), torch::kCPU);
  const auto items = all_vectors(model, {}, false, item_ids.numel(), torch::kCPU);
  write_factors((fs::path(out) / "user_factors.csv").string(), user_ids, users);
  write_factors((fs::path(out) / "item_factors.csv").string(), item_ids, items);
  std::printf("export: %lld user and %lld item factors (f = %lld) in %s\n", static_cast<long long>(user_ids.numel()),
              static_cast<long long>(item_ids.numel()), static_cast<long long>(dim), out.c_str());
  return 0;
}

} // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{"rectrain-retrieval: retrieval training with negative sampling on rectrain"};
  app.require_subcommand(1, 1);
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "LibTorch intra-op threads")->check(CLI::PositiveNumber)->capture_default_str();
  TrainRun r;
  std::string input, train_out, test_out, factors;
  double fraction = 0.2, als_alpha = 0.0;
  int64_t als_iterations = 15;
  auto option = [](CLI::App* command, const std::string& name, auto& value, const std::string& help) {
    return command->add_option(name, value, help)->capture_default_str();
  };
  auto* split = app.add_subcommand("split", "Hold out a fraction of each user's positives");
  split->add_option("--input", input, "user_id,item_id[,weight] CSV")->required()->check(CLI::ExistingFile);
  split->add_option("--train-out", train_out, "Where to write the training rows")->required();
  split->add_option("--test-out", test_out, "Where to write the held-out rows")->required();
  option(split, "--test-fraction", fraction, "Share of each user's positives held out (rounded; every user keeps one)");
  auto* synth = app.add_subcommand("synth", "Write synthetic positives (clustered tastes, Zipf popularity)");
  SyntheticInteractionsOptions synth_options(10000, 5000);
  int64_t synth_users = 10000, synth_items = 5000, synth_clusters = 50;
  double synth_per_user = 50, synth_noise = 0.1;
  synth->add_option("--out", input, "Where to write user_id,item_id rows")->required();
  option(synth, "--users", synth_users, "Users")->check(CLI::PositiveNumber);
  option(synth, "--items", synth_items, "Items")->check(CLI::PositiveNumber);
  option(synth, "--per-user", synth_per_user, "Mean positives per user (before repeats merge)");
  option(synth, "--clusters", synth_clusters, "Taste clusters")->check(CLI::PositiveNumber);
  option(synth, "--noise", synth_noise, "Share of positives drawn uniformly");
  auto* train = app.add_subcommand("train", "Train matrix factorisation with sampled negatives");
  auto* exporter = app.add_subcommand("export", "Write a trained model's user_factors.csv and item_factors.csv");
  auto* eval = app.add_subcommand("eval", "Full-catalogue metrics of exported factors (training items excluded)");
  auto* als = app.add_subcommand("als", "The implicit-ALS baseline: fit, write factors (and metrics with --test)");
  auto* popularity = app.add_subcommand("popularity", "The popularity baseline's metrics");
  for (auto* c : {train, eval, als, popularity})
    c->add_option("--train", r.train, "Training positives, user_id,item_id[,weight]")->required()->check(CLI::ExistingFile);
  for (auto* c : {eval, popularity})
    c->add_option("--test", r.test, "Held-out positives")->required()->check(CLI::ExistingFile);
  for (auto* c : {train, als}) c->add_option("--test", r.test, "Held-out positives (metrics)")->check(CLI::ExistingFile);
  for (auto* c : {train, exporter, als}) c->add_option("--out", r.out, "Output directory")->required();
  eval->add_option("--factors", factors, "Directory with user_factors.csv and item_factors.csv")->required();
  for (auto* c : {synth, split, train, als}) option(c, "--seed", r.seed, "Random seed");
  for (auto* c : {train, als}) option(c, "--dim", r.dim, "Factors per user and item")->check(CLI::PositiveNumber);
  option(train, "--negatives", r.negatives, "uniform, popularity, in-batch, dynamic or augmented")
      ->check(CLI::IsMember({"uniform", "popularity", "in-batch", "dynamic", "augmented"}));
  option(train, "--loss", r.loss, "bpr or softmax (sampled softmax, log-Q corrected)")->check(CLI::IsMember({"bpr", "softmax"}));
  option(train, "--epochs", r.epochs, "Passes over the training positives")->check(CLI::PositiveNumber);
  option(train, "--batch-size", r.batch_size, "Positives per step")->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  option(train, "--lr", r.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  option(train, "--l2", r.l2, "L2 on the batch's vectors, times 1/batch");
  option(train, "--num-negatives", r.num_negatives, "Negatives per positive (uniform, popularity, dynamic)")
      ->check(CLI::PositiveNumber);
  option(train, "--pool", r.pool, "Candidates per positive for dynamic and augmented")->check(CLI::PositiveNumber);
  option(train, "--beta", r.beta, "Popularity exponent");
  option(train, "--temperature", r.temperature, "Sampled-softmax temperature")->check(CLI::PositiveNumber);
  option(train, "--ans-eps", r.ans_eps, "Augmented: weight of the augmentation gain in the choice");
  option(train, "--ans-gamma", r.ans_gamma, "Augmented: weight of the auxiliary losses");
  option(train, "--ans-scale", r.ans_scale, "Augmented: largest step of the easy factors");
  option(train, "--init", r.init, "random or als (the tables start from ALS factors)")->check(CLI::IsMember({"random", "als"}));
  option(train, "--als-regularization", r.als_regularization, "ALS regularisation for --init als");
  option(train, "--device", r.device, "cpu or cuda");
  train->add_flag("--weighted", r.weighted, "Scale each positive's loss by its weight column");
  train->add_flag("--sparse", r.sparse, "Sparse table gradients, SparseAdam on the rows a batch used (large catalogues)");
  option(als, "--regularization", r.als_regularization, "ALS regularisation");
  option(als, "--alpha", als_alpha, "ALS confidence 1 + alpha * weight");
  option(als, "--iterations", als_iterations, "ALS iterations");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "rectrain-retrieval: error: %s (rectrain-retrieval %s--help lists the options)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return 2;
  }
  torch::set_num_threads(threads);
  set_warning_handler(
      [](const std::string& what) { std::fprintf(stderr, "rectrain-retrieval: warning: %s\n", what.c_str()); });
  try {
    if (*synth)
      return run_synth(input, synth_options.users(synth_users).items(synth_items).per_user(synth_per_user)
                                  .clusters(synth_clusters).noise(synth_noise).seed(r.seed));
    if (*split) return run_split(input, train_out, test_out, fraction, r.seed);
    if (*popularity) return run_popularity(r.train, r.test);
    if (*eval) return run_eval(r.train, r.test, factors);
    if (*als) return run_als(r.train, r.test, r.out, r.dim, r.als_regularization, als_alpha, als_iterations, r.seed);
    if (*exporter) return run_export(r.out);
    return run_train(r);
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    if (what.find('\n') != std::string::npos) what.resize(what.find('\n'));
    std::fprintf(stderr, "rectrain-retrieval: error: LibTorch: %s\n", what.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rectrain-retrieval: error: %s\n", e.what());
    return 1;
  }
}

} // namespace retrieval
