#pragma once
// The recipe's full Ranker (user id 256+128, gender, age; item id 256,
// source 128, duration, 32-d content vector; shared MLP 512-256 with
// LayerNorm and dropout 0.1; six heads) at the challenge's table sizes, and
// random batches for it: what model_bench and dist_bench time.

#include <rectrain/rectrain.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bench {

/// The recipe Ranker's table sizes at `scale` of the challenge's.
struct ModelShape {
  int64_t users, items, sources;
  static ModelShape at_scale(double scale) {
    return {std::max<int64_t>(8, std::llround(183404 * scale)), std::max<int64_t>(8, std::llround(337727 * scale)),
            std::max<int64_t>(8, std::llround(19876 * scale))};
  }
};

rectrain::Ranker recipe_ranker(const ModelShape& shape, bool frozen, bool sparse) {
  using namespace rectrain;
  // Frozen means every table, gender's too: one trainable table would make
  // the first layer's input need a gradient again.
  auto table = [&](int64_t n, int64_t dim) {
    return CategoricalFeature(CategoricalFeatureOptions(n, dim).frozen(frozen).sparse(sparse));
  };
  NumericFeature age, duration(NumericFeatureOptions().scaling(NumericScaling::Log1pZScore));
  age->fit(torch::rand({1000}) * 50 + 18);
  duration->fit(torch::rand({1000}) * 300);
  Tower user;
  user->add("user", table(shape.users, 384)).add("gender", table(3, 4)).add("age", age);
  Tower item;
  item->add("item", table(shape.items, 256))
      .add("source", table(shape.sources, 128))
      .add("duration", duration)
      .add("item_embedding", DenseFeature(32));
  // The recipe's shared MLP, as rectrain-vk trains it.
  Ranker ranker(user, item,
                RankerOptions(MlpBlocks({512, 256}).normalization(Normalization::LayerNorm).dropout(0.1)));
  const auto h = ranker->hidden_dim();
  ranker->add_head("target", RankingHead(h));
  for (const char* label : {"like", "dislike", "share", "bookmarks"}) ranker->add_head(label, BinaryHead(h, label));
  ranker->add_head("timespent", RegressionHead(RegressionHeadOptions(h, "timespent").log1p_label(true)));
  return ranker;
}

rectrain::Batch random_batch(const ModelShape& shape, int64_t groups, torch::Device device) {
  const int64_t g = 20;
  rectrain::Batch b;
  b.rows = torch::arange(groups * g).view({groups, g});
  b.mask = torch::ones({groups, g}, torch::kBool);
  const auto user = torch::randint(0, shape.users, {groups, 1}).expand({groups, g}).contiguous();
  b.features.insert("user", user);
  b.features.insert("gender", torch::randint(0, 3, {groups, g}));
  b.features.insert("age", torch::rand({groups, g}) * 50 + 18);
  b.features.insert("item", torch::randint(0, shape.items, {groups, g}));
  b.features.insert("source", torch::randint(0, shape.sources, {groups, g}));
  b.features.insert("duration", torch::rand({groups, g}) * 300);
  b.features.insert("item_embedding", torch::randn({groups, g, 32}));
  const auto r = torch::rand({groups, g});
  b.labels.insert("target", (r < 0.047).to(torch::kFloat32) - (r > 0.9996).to(torch::kFloat32));
  for (const char* label : {"like", "dislike", "share", "bookmarks"})
    b.labels.insert(label, (torch::rand({groups, g}) < 0.05).to(torch::kFloat32));
  b.labels.insert("timespent", torch::rand({groups, g}) * 60);
  return b.to(device);
}

} // namespace bench
