// The test runner, with LibTorch's thread count pinned so results do not
// depend on how many cores the machine has.
#define CATCH_CONFIG_RUNNER  // v2: this translation unit provides main()
#include "catch.hpp"

#include <torch/torch.h>

int main(int argc, char** argv) {
  torch::set_num_threads(2);
  return Catch::Session().run(argc, argv);
}
