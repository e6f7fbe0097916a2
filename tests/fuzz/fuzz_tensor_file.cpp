// libFuzzer target: the tensor-file reader (torch.save archives mapped,
// checksummed and unpickled), as a table, as a dict of tensors (an ALS
// file), as a dataset's interactions.pt, and as a dataset cache; each input
// as it is and with its checksums made to match (so mutations also reach
// the checks behind them). `fuzz_tensor_file --write-seed DIR` writes a table and a dataset
// cache there (the seed corpus's start).

#include "fuzz_input.hpp"

#include <rectrain/data/dataset.hpp>
#include <rectrain/data/tensor_file.hpp>

#include <torch/torch.h>

using namespace rectrain;

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  torch::set_num_threads(1);
  for (int i = 1; i + 1 < *argc; ++i)
    if (std::string((*argv)[i]) == "--write-seed") {
      const std::string dir = (*argv)[i + 1];
      Table t;
      t.add("user_id", torch::tensor({3, 3, 5}, torch::kInt64))
          .add("item_id", torch::tensor({10, 11, 10}, torch::kInt64))
          .add("timespent", torch::tensor({1.5f, 0.0f, 7.0f}))
          .add("like", torch::tensor({1, 0, 0}, torch::kUInt8))
          .add("dislike", torch::tensor({0, 0, 1}, torch::kUInt8))
          .add("share", torch::tensor({0, 1, 0}, torch::kUInt8))
          .add("bookmarks", torch::tensor({0, 0, 0}, torch::kUInt8));
      save_tensor_table(t, dir + "/table.pt");
      save_tensor_table(t, rectrain_fuzz::scratch_dir().string() + "/interactions.pt");
      save_dataset_cache(load_dataset(rectrain_fuzz::scratch_dir().string()), dir + "/cache.pt");
      std::exit(0);
    }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (const std::string& input : {bytes, rectrain_fuzz::with_valid_checksums(bytes)}) {
    const std::string path = rectrain_fuzz::write_input(
        "pt/interactions.pt", reinterpret_cast<const uint8_t*>(input.data()), input.size());
    rectrain_fuzz::expect_rectrain_errors([&] {
      const Table t = load_tensor_table(path);
      // Touch every byte of every column: storages point into the mapping.
      for (const auto& c : t.columns()) (void)c.value().to(torch::kFloat64).sum().item<double>();
    });
    rectrain_fuzz::expect_rectrain_errors([&] {
      for (const auto& c : load_tensor_dict(path)) (void)c.value().to(torch::kFloat64).sum().item<double>();
    });
    rectrain_fuzz::expect_rectrain_errors([&] { load_dataset((rectrain_fuzz::scratch_dir() / "pt").string()); });
    rectrain_fuzz::expect_rectrain_errors([&] {
      const Dataset ds = load_dataset_cache(path);
      for (const auto& c : ds.interactions.columns()) (void)c.value().to(torch::kFloat64).sum().item<double>();
    });
  }
  return 0;
}
