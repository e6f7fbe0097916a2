// libFuzzer target: the CSV reader, and load_dataset over an interactions
// file. Every input is read twice, in one chunk and in 7-byte chunks (as
// many threads would cut a large file): both must agree, value for value,
// or fail on the same line and column.

#include "fuzz_input.hpp"

#include <rectrain/data/csv.hpp>
#include <rectrain/data/dataset.hpp>

#include <torch/torch.h>

using namespace rectrain;

namespace {
const std::vector<CsvField>& fields() {
  static const std::vector<CsvField> f{{"user_id", CsvType::Id},
                                       {"item_id", CsvType::Id},
                                       {"timespent", CsvType::NonNegativeNumber, false},
                                       {"like", CsvType::Flag, false},
                                       {"gender", CsvType::Integer, false, 0, 2},
                                       {"age", CsvType::Number, false}};
  return f;
}

std::string outcome(const std::string& path, int64_t chunk_bytes) {
  try {
    const Table t = read_csv(path, fields(), CsvOptions().extra_columns(ExtraColumns::KeepAsNumber).chunk_bytes(chunk_bytes));
    std::string out;
    for (const auto& c : t.columns()) {
      out += c.key() + ":";
      const auto bytes = c.value().contiguous();
      out.append(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.nbytes()));
    }
    return out;
  } catch (const InputError& e) {
    return std::string("error ") + e.what();
  }
}
} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = rectrain_fuzz::write_input("csv/interactions.csv", data, size);
  rectrain_fuzz::expect_rectrain_errors([&] {
    const std::string whole = outcome(path, int64_t{1} << 20), chunked = outcome(path, 7);
    if (whole != chunked) {
      std::fprintf(stderr, "finding: one chunk and 7-byte chunks disagree:\n%s\n%s\n", whole.c_str(), chunked.c_str());
      std::abort();
    }
  });
  rectrain_fuzz::expect_rectrain_errors([&] { load_dataset((rectrain_fuzz::scratch_dir() / "csv").string()); });
  return 0;
}
