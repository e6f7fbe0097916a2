// libFuzzer target: Checkpoint::load into a model, its Adam state, a
// generator and plain values, the way rectrain-vk binds them on --resume.
// `fuzz_checkpoint --write-seed FILE` writes a valid checkpoint of these
// objects (the seed corpus's start).

#include "fuzz_input.hpp"

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
  Checkpoint checkpoint;

  State() {
    checkpoint.add("config", config).add("model", *model).add("adam", adam).add("rng", rng)
        .add("epochs", epochs).add("best", best);
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
  const std::string path = rectrain_fuzz::write_input("checkpoint.pt", data, size);
  rectrain_fuzz::expect_rectrain_errors([&] {
    State s;
    s.checkpoint.load(path);
    // What was loaded must be usable: a forward pass and an optimizer step.
    s.model->forward(torch::ones({2, 4})).sum().backward();
    s.adam.step();
  });
  return 0;
}
