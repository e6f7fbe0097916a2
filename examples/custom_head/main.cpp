// A head of your own, without touching rectrain: a watch-completion head
// that learns what share of a video the user watched,
// clamp(timespent / duration, 0, 1), with a Huber loss, trained beside the
// library's heads in one Ranker.
//   custom_head [--data DIR] [--epochs 2] [--seed 1]
// Without --data it makes a small synthetic dataset in a temporary folder.

#include <rectrain/rectrain.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

// 1. Derive from torch::nn::Cloneable (so the head clones, moves to CUDA,
//    saves and loads like any LibTorch module) and from HeadInterface (so a
//    Ranker can call it). Register parameters in reset().
struct WatchCompletionHeadOptions {
  WatchCompletionHeadOptions(int64_t input_dim) : input_dim_(input_dim) {}
  TORCH_ARG(int64_t, input_dim);
  TORCH_ARG(double, huber_delta) = 0.1;
};

class WatchCompletionHeadImpl : public torch::nn::Cloneable<WatchCompletionHeadImpl>, public rectrain::HeadInterface {
 public:
  explicit WatchCompletionHeadImpl(WatchCompletionHeadOptions options) : options(std::move(options)) { reset(); }

  void reset() override { linear = register_module("linear", torch::nn::Linear(options.input_dim(), 1)); }

  // 2. forward: [B, G, input_dim] shared representation -> [B, G].
  torch::Tensor forward(const torch::Tensor& hidden) override { return torch::sigmoid(linear(hidden).squeeze(-1)); }

  // 3. loss: read whatever the Batch carries (here a label and a feature),
  //    and average over the real rows only (batch.mask).
  torch::Tensor loss(const torch::Tensor& completion, const rectrain::Batch& batch) override {
    const auto watched = batch.label("timespent");
    const auto duration = batch.feature("duration").to(watched.scalar_type());
    const auto target = (watched / duration.clamp_min(1)).clamp(0, 1).to(completion.scalar_type());
    const auto elementwise = torch::huber_loss(completion, target, at::Reduction::None, options.huber_delta());
    return rectrain::masked_mean(elementwise, batch.mask);
  }

  int64_t input_dim() const override { return options.input_dim(); }

  WatchCompletionHeadOptions options;
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(WatchCompletionHead);

int main(int argc, char** argv) {
  CLI::App app{"custom_head: a watch-completion head of your own, trained beside rectrain's heads"};
  std::string data;
  int64_t epochs = 2;
  uint64_t seed = 1;
  app.add_option("--data", data, "Dataset directory (default: small synthetic data in a temporary folder)");
  app.add_option("--epochs", epochs, "Epochs")->capture_default_str();
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(2);
    std::filesystem::path temp;
    if (data.empty()) {
      temp = std::filesystem::temp_directory_path() / ("rectrain-custom-head-" + std::to_string(::getpid()));
      rectrain::generate_synthetic(temp.string(), rectrain::SyntheticOptions::at_scale(0.003).seed(seed));
      data = temp.string();
    }
    const auto ds = rectrain::load_dataset(data);
    torch::manual_seed(static_cast<int64_t>(seed));

    using namespace rectrain;
    NumericFeature age, duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
    age->fit(ds.users["age"]);
    duration->fit(ds.items["duration"]);
    Tower user;
    user->add("user", CategoricalFeature(ds.num_users(), 16)).add("gender", CategoricalFeature(3, 2)).add("age", age);
    Tower item;
    item->add("item", CategoricalFeature(ds.num_items(), 16))
        .add("duration", duration)
        .add("item_embedding", DenseFeature(ds.items["embedding"].size(1)));
    Ranker ranker(user, item, RankerOptions(MlpBlocks({64, 32})));
    // 4. Add it like any library head; its loss enters the multi-task sum.
    ranker->add_head("target", RankingHead(ranker->hidden_dim()))
        .add_head("like", BinaryHead(ranker->hidden_dim(), "like"))
        .add_head("completion", WatchCompletionHead(ranker->hidden_dim()), 0.5);

    // 5. Train it with the library's loop: a validation split shaped like
    //    the test, and a Trainer that reports each epoch's losses (the
    //    completion head's among them) and validation GAUC.
    const auto split = split_holdout(ds, HoldoutOptions().views(20).min_views(40).fraction(0.2).seed(seed));
    GroupSampler sampler(split.train.interactions["user"], split.train.interaction_targets(),
                         GroupSamplerOptions(20).batch_size(32).seed(seed));
    BatchPipeline pipeline(standard_batch_spec(split.train), sampler);
    torch::optim::Adam adam(ranker->parameters(), 3e-3);
    const auto valid_spec = standard_batch_spec(split.valid);
    Trainer<Ranker> trainer(ranker, {&adam}, pipeline, PhaseSchedule(0, epochs),
                            TrainerOptions()
                                .seed(seed)
                                .validate([&] {
                                  const auto scores = score_groups(ranker, valid_spec, split.valid_rows).reshape(-1);
                                  return gauc(split.valid_users, split.valid_targets, scores);
                                })
                                .on_epoch([](const EpochRecord& r) {
                                  double completion = 0;
                                  for (const auto& [head, loss] : r.stats.head_losses)
                                    if (head == "completion") completion = loss;
                                  std::printf("%s; completion loss %.4f\n", r.summary().c_str(), completion);
                                }));
    trainer.fit();
    if (!temp.empty()) std::filesystem::remove_all(temp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_head: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
