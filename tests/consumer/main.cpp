// Uses the public API end to end: synthetic data, loading, group sampling,
// a batch, and the metric; and the data-parallel headers (what the
// installed package's check found: rectrainDistributed.cmake).
#include <rectrain/dist/data_parallel.hpp>
#include <rectrain/dist/local_launcher.hpp>
#include <rectrain/dist/sharded_als.hpp>
#include <rectrain/rectrain.hpp>

#include <cstdio>
#include <filesystem>

int main() {
  torch::set_num_threads(2);
  const auto dir = std::filesystem::temp_directory_path() / ("rectrain-consumer-" + std::to_string(::getpid()));
  rectrain::generate_synthetic(dir.string(), rectrain::SyntheticOptions::at_scale(0.001).seed(1));
  const rectrain::Dataset ds = rectrain::load_dataset(dir.string());
  std::filesystem::remove_all(dir);
  rectrain::GroupSampler sampler(ds.interactions["user"], ds.interaction_targets(),
                                 rectrain::GroupSamplerOptions(20).batch_size(4).drop_uniform(false));
  const auto rows = sampler.next_batch();
  if (!rows) return 1;
  rectrain::ShardedSampler shard(sampler, 0, 1);  // one rank of one: the whole epoch
  shard.set_epoch(0);
  if (shard.num_batches() != sampler.num_batches()) return 1;
  const rectrain::Batch batch = rectrain::standard_batch_spec(ds).gather(*rows);
  const auto metric = rectrain::gauc(ds.candidates["user"], ds.candidates["target"],
                                     rectrain::like_rate_scores(ds));
  std::printf("consumer ok: rectrain %s (distributed: gloo %s), %lld rows, batch [%lld, %lld], like-rate GAUC %.4f over "
              "%lld users\n",
              rectrain::version_string,
              rectrain::distributed_backend_available(rectrain::DistributedBackend::Gloo) ? "yes" : "no", static_cast<long long>(ds.num_interactions()),
              static_cast<long long>(batch.num_groups()), static_cast<long long>(batch.group_size()),
              metric.value, static_cast<long long>(metric.users));
  return 0;
}
