// CSV read throughput (parse + validation), full dataset load (plus id
// remapping), and the binary cache: write and reload times.
//   csv_bench [--scale S] [--dir DIR] [--threads T] [--runs R]
// Without --dir it writes a synthetic dataset at scale S (default 0.05,
// ~7M rows) into a temporary directory first.

#include "machine.hpp"
#include "programs.hpp"

#include <rectrain/rectrain.hpp>

#include <charconv>
#include <cstring>
#include <filesystem>

namespace {

// The reference: a plain single-threaded std::from_chars loop over the
// same file (7 fields per line, no validation beyond parse success).
double plain_from_chars_seconds(const std::string& path, int64_t& rows) {
  rectrain::MappedFile file(path);
  const char* p = file.data();
  const char* end = p + file.size();
  const double t0 = bench::now_seconds();
  p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p))) + 1;
  int64_t checksum = 0;
  rows = 0;
  while (p < end) {
    int64_t user = 0, item = 0;
    float spent = 0;
    p = std::from_chars(p, end, user).ptr + 1;
    p = std::from_chars(p, end, item).ptr + 1;
    p = std::from_chars(p, end, spent).ptr + 1;
    for (int k = 0; k < 4; ++k) {
      int flag = 0;
      p = std::from_chars(p, end, flag).ptr + 1;
      checksum += flag;
    }
    checksum += user + item + static_cast<int64_t>(spent);
    ++rows;
  }
  const double dt = bench::now_seconds() - t0;
  if (checksum == 42) std::printf("#\n");
  return dt;
}

} // namespace

int csv_bench_main(int argc, char** argv) {
  double scale = 0.05;
  std::string dir;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--scale") scale = std::stod(argv[i + 1]);
    else if (flag == "--dir") dir = argv[i + 1];
    else if (flag == "--threads") threads = std::stoi(argv[i + 1]);
    else if (flag == "--runs") runs = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: csv_bench [--scale S] [--dir DIR] [--threads T] [--runs R]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  bench::print_machine("csv_bench");
  std::filesystem::path temp;
  if (dir.empty()) {
    temp = std::filesystem::temp_directory_path() / ("rectrain-csv-bench-" + std::to_string(::getpid()));
    dir = temp.string();
    const double t0 = bench::now_seconds();
    rectrain::generate_synthetic(dir, rectrain::SyntheticOptions::at_scale(scale));
    std::printf("generated synthetic scale %g in %.1f s\n", scale, bench::now_seconds() - t0);
  }
  const std::string path = dir + "/interactions.csv";
  const double mb = static_cast<double>(std::filesystem::file_size(path)) / 1e6;
  int64_t rows = 0;
  const std::vector<rectrain::CsvField> fields{
      {"user_id", rectrain::CsvType::Id},      {"item_id", rectrain::CsvType::Id},
      {"timespent", rectrain::CsvType::NonNegativeNumber}, {"like", rectrain::CsvType::Flag},
      {"dislike", rectrain::CsvType::Flag},    {"share", rectrain::CsvType::Flag},
      {"bookmarks", rectrain::CsvType::Flag}};
  // Warm the page cache once, so every figure is CPU-bound.
  rectrain::read_csv(path, fields);
  const double csv_s = bench::median_seconds(runs, [&] { rows = rectrain::read_csv(path, fields).num_rows(); });
  int64_t plain_rows = 0;
  const double plain_s = bench::median_seconds(runs, [&] { plain_from_chars_seconds(path, plain_rows); });
  rectrain::Dataset ds;
  const double load_s = bench::median_seconds(runs, [&] { ds = rectrain::load_dataset(dir); });
  const std::string cache = dir + "/dataset.cache.pt";
  const double save_s = bench::median_seconds(1, [&] { rectrain::save_dataset_cache(ds, cache); });
  rectrain::load_dataset_cache(cache);
  const double cache_s = bench::median_seconds(runs, [&] { ds = rectrain::load_dataset_cache(cache); });
  // The cache maps the file's pages; reading every byte once shows the
  // cost of actually bringing the data in.
  double checksum = 0;
  const double touched_s = bench::median_seconds(runs, [&] {
    ds = rectrain::load_dataset_cache(cache);
    for (const auto* table : {&ds.interactions, &ds.users, &ds.items, &ds.candidates})
      for (const auto& column : table->columns()) checksum += column.value().sum().item<double>();
  });
  // What verifying the cache's checksums costs on its own (warm pages).
  const rectrain::MappedFile mapped(cache);
  uint32_t crc = 0, crc_parallel = 0;
  const double crc_s = bench::median_seconds(runs, [&] { crc = rectrain::crc32(mapped.data(), mapped.size()); });
  const double crc_parallel_s =
      bench::median_seconds(runs, [&] { crc_parallel = rectrain::crc32_parallel(mapped.data(), mapped.size()); });
  std::printf("interactions.csv: %.1f MB, %lld rows\n", mb, static_cast<long long>(rows));
  std::printf("csv_read_MBps %.0f  (rectrain CsvFile::read, %d threads, parse + validation: %.3f s)\n",
              mb / csv_s, threads, csv_s);
  std::printf("plain_from_chars_MBps %.0f  (single-threaded std::from_chars loop, no validation: %.3f s)\n",
              mb / plain_s, plain_s);
  std::printf("load_dataset_MBps %.0f  (all four files, validation, id remapping: %.3f s)\n", mb / load_s, load_s);
  std::printf("cache_save_seconds %.3f  (%.1f MB)\n", save_s,
              static_cast<double>(std::filesystem::file_size(cache)) / 1e6);
  std::printf("cache_load_seconds %.4f  (memory-mapped; %.0fx faster than load_dataset)\n", cache_s,
              load_s / cache_s);
  std::printf("cache_load_and_read_all_seconds %.3f  (%.1fx faster than load_dataset; checksum %.6g)\n",
              touched_s, load_s / touched_s, checksum / runs);
  std::printf("crc32_GBps %.2f  (1 thread; %.2f over %d threads with crc32_parallel%s; the cache load verifies "
              "every record)\n",
              static_cast<double>(mapped.size()) / crc_s / 1e9, static_cast<double>(mapped.size()) / crc_parallel_s / 1e9,
              threads, crc == crc_parallel ? ", same value" : ", A DIFFERENT VALUE");
  if (!temp.empty()) std::filesystem::remove_all(temp);
  return 0;
}
