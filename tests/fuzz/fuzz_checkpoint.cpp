// libFuzzer target: Checkpoint::load into a model, its Adam state, a
// generator, an id map and plain values (a data fingerprint among them),
// the way rectrain-vk binds them in checkpoints and model files. Each input
// is loaded as it is (checksums catch nearly every mutation) and with its
// checksums made to match, so mutations also reach the checks behind them.
// `fuzz_checkpoint --write-seed FILE` writes a valid checkpoint of these
// objects (the seed corpus's start).

#include "fuzz_input.hpp"

#include <rectrain/data/dataset_fingerprint.hpp>
#include <rectrain/train/checkpoint.hpp>

#include <torch/torch.h>

#include <cstring>

using namespace rectrain;

namespace {
struct State {
  torch::nn::Sequential model{torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::Linear(3, 1)};
  torch::optim::Adam adam{model->parameters(), torch::optim::AdamOptions(1e-3)};
  at::Generator rng = at::detail::createCPUGenerator(7);
  int64_t epochs = 2;
  double best = 0.5;
  std::string config = "hidden=3\n";
  std::string data = "user_ids 3 0123456789abcdef\ninteractions 5 fedcba9876543210\n";
  IdMap users = IdMap::from_ids({torch::tensor({4, 9, 70000}, torch::kInt64)});
  Checkpoint checkpoint;

  State() {
    checkpoint.add("config", config).add("data", data).add("user_ids", users).add("model", *model).add("adam", adam)
        .add("rng", rng).add("epochs", epochs).add("best", best);
  }
};
} // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  torch::set_num_threads(1);
  for (int i = 1; i + 1 < *argc; ++i)
    if (std::strcmp((*argv)[i], "--write-seed") == 0) {
      torch::manual_seed(1);
      State s;
      // One step, so the checkpoint holds Adam's moments too.
      s.model->forward(torch::ones({2, 4})).sum().backward();
      s.adam.step();
      s.checkpoint.save((*argv)[i + 1]);
      std::exit(0);
    }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (const std::string& input : {bytes, rectrain_fuzz::with_valid_checksums(bytes)}) {
    const std::string path = rectrain_fuzz::write_input(
        "checkpoint.pt", reinterpret_cast<const uint8_t*>(input.data()), input.size());
    rectrain_fuzz::expect_rectrain_errors([&] {
      State s;
      s.checkpoint.load(path);
      // What was loaded must be usable: a forward pass and an optimizer
      // step, lookups in the id map, the fingerprint read back.
      s.model->forward(torch::ones({2, 4})).sum().backward();
      s.adam.step();
      (void)s.users.encode(torch::tensor({4, 5, 70000}, torch::kInt64));
      (void)DatasetFingerprint::from_text(s.data, path);
    });
  }
  return 0;
}
