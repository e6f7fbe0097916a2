// Integrity of what rectrain reads and writes: checksums of every record,
// fingerprints of datasets, id maps carried by models, outputs that never
// replace inputs, one writer per directory, files that change while they
// are read, and input formats rectrain cannot read, explained.

#include "helpers.hpp"

// Only the headers used: the umbrella header's ALS and model code would
// double this file's build time, most of all under the sanitizers.
#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/checksum.hpp>
#include <rectrain/core/directory_lock.hpp>
#include <rectrain/core/file_identity.hpp>
#include <rectrain/core/torch_archive.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/data/challenge_schema.hpp>
#include <rectrain/data/csv.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/dataset_fingerprint.hpp>
#include <rectrain/data/predictions.hpp>
#include <rectrain/data/synthetic.hpp>
#include <rectrain/data/tensor_file.hpp>
#include <rectrain/data/vocabulary.hpp>
#include <rectrain/train/checkpoint.hpp>
#include <rectrain/train/ensemble.hpp>

#include <csignal>
#include <random>
#include <thread>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace rectrain;
using namespace rectrain_test;

namespace {

/// The CRC-32 of [p, p + n) one bit at a time: the definition.
uint32_t crc32_by_bits(const unsigned char* p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
  }
  return ~crc;
}

std::vector<unsigned char> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> out(n);
  for (auto& b : out) b = static_cast<unsigned char>(rng());
  return out;
}

} // namespace

TEST_CASE("crc32 matches the zip CRC-32 at every length and alignment, and combines", "[core][checksum]") {
  CHECK(crc32("123456789", 9) == 0xCBF43926u);  // the standard check value
  CHECK(crc32("", 0) == 0u);
  const auto bytes = random_bytes(1 << 16, 3);
  std::mt19937 rng(5);
  for (int trial = 0; trial < 400; ++trial) {
    const size_t offset = rng() % 64, length = trial < 200 ? trial : rng() % 20000;
    const unsigned char* p = bytes.data() + offset;
    const uint32_t expected = crc32_by_bits(p, length);
    INFO("offset " << offset << " length " << length);
    REQUIRE(crc32(p, length) == expected);
    // The portable tables (what CPUs without PCLMULQDQ use) on their own.
    REQUIRE(~rectrain::detail::crc32_tables_update(0xFFFFFFFFu, p, length) == expected);
    const size_t cut = length ? rng() % length : 0;
    CHECK(crc32_update(crc32(p, cut), p + cut, length - cut) == expected);
    CHECK(crc32_combine(crc32(p, cut), crc32(p + cut, length - cut), length - cut) == expected);
  }
  // Records of tens of megabytes: chunked over threads, combined in order.
  const auto big = random_bytes(size_t{19} << 20, 9);
  CHECK(crc32_parallel(big.data(), big.size()) == crc32(big.data(), big.size()));
  CHECK(crc32_parallel(big.data(), big.size()) == crc32_by_bits(big.data(), big.size()));
}

TEST_CASE("fingerprint tells tensors apart by type, shape and any byte, whatever the thread count", "[core][checksum]") {
  CHECK(rectrain::detail::xxh64("", 0) == 0xEF46DB3751D8E999ULL);  // XXH64's published empty-input value
  CHECK(rectrain::detail::xxh64("abc", 3) == 0x44BC2CF5AD770999ULL);
  auto t = torch::arange(3 << 20, torch::kInt32);
  const uint64_t base = fingerprint(t);
  CHECK(fingerprint(t.clone()) == base);
  CHECK(fingerprint(t.view({3, -1})) != base);
  CHECK(fingerprint(t.to(torch::kInt64)) != base);
  auto changed = t.clone();
  changed[(3 << 20) - 1] = 7;  // the last element, in the last 4 MiB chunk
  CHECK(fingerprint(changed) != base);
  CHECK(fingerprint(t.view({2, -1}).t()) == fingerprint(t.view({2, -1}).t().contiguous()));
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  CHECK(fingerprint(t) == base);
  at::set_num_threads(threads);
  CHECK(fingerprint_hex(0x1234) == "0000000000001234");
}

namespace {

/// The zip records of a torch.save archive that hold tensor data.
std::vector<rectrain::detail::ArchiveRecord> tensor_records(const std::string& bytes) {
  const auto index = rectrain::detail::index_torch_archive(bytes.data(), bytes.size(), "file");
  std::vector<rectrain::detail::ArchiveRecord> out;
  for (const auto& [name, record] : index.records)
    if (name.rfind("data/", 0) == 0 && record.size > 0) out.push_back(record);
  return out;
}

/// Flips one byte at `count` random offsets inside the file's tensor
/// records, one at a time, and expects `load` to refuse each damaged copy
/// as damaged, naming the file.
void expect_every_flip_detected(const std::string& path, const std::function<void(const std::string&)>& load,
                                int count, uint32_t seed) {
  const std::string good = read_file(path);
  const auto records = tensor_records(good);
  REQUIRE_FALSE(records.empty());
  uint64_t total = 0;
  for (const auto& r : records) total += r.size;
  std::mt19937_64 rng(seed);
  const std::string damaged = path + ".damaged";
  for (int k = 0; k < count; ++k) {
    uint64_t at = rng() % total;
    size_t r = 0;
    while (at >= records[r].size) at -= records[r++].size;
    const uint64_t offset = records[r].offset + at;
    std::string bytes = good;
    bytes[offset] = static_cast<char>(bytes[offset] ^ static_cast<char>(1 + rng() % 255));
    write_file(damaged, bytes);
    INFO(path << ": byte " << offset << " flipped");
    try {
      load(damaged);
      FAIL("a damaged file loaded");
    } catch (const rectrain::Error& e) {
      CHECK_THAT(e.what(), Catch::Contains(damaged) && Catch::Contains("damaged: record '") &&
                               Catch::Contains("the file changed after it was written"));
    }
  }
  std::remove(damaged.c_str());
  REQUIRE_NOTHROW(load(path));
}

} // namespace

TEST_CASE("A one-byte change inside any tensor record of a model, checkpoint, cache or ALS file is detected on load",
          "[faults][checksum]") {
  TempDir dir;
  torch::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 1));
  torch::optim::Adam adam(model->parameters());
  model->forward(torch::ones({4, 8})).sum().backward();
  adam.step();
  IdMap ids = IdMap::from_ids({i64({3, 10, 42})});
  std::string text = "hidden=16\n";
  int64_t epochs = 3;

  // A model file (weights, an id map, text) and a checkpoint (model, Adam,
  // a generator, plain values).
  Checkpoint model_file;
  model_file.add("config", text).add("user_ids", ids).add("model", *model);
  model_file.save(dir.file("model.pt"));
  at::Generator rng = at::detail::createCPUGenerator(5);
  Checkpoint checkpoint;
  checkpoint.add("model", *model).add("adam", adam).add("rng", rng).add("epochs_done", epochs);
  checkpoint.save(dir.file("checkpoint.pt"));
  expect_every_flip_detected(dir.file("model.pt"), [&](const std::string& p) { model_file.load(p); }, 40, 1);
  expect_every_flip_detected(dir.file("checkpoint.pt"), [&](const std::string& p) { checkpoint.load(p); }, 40, 2);

  // A dataset cache and an ALS factors file (torch.save dicts).
  generate_synthetic(dir.file("data"), SyntheticOptions::at_scale(0.002).seed(4));
  const Dataset ds = load_dataset(dir.file("data"));
  save_dataset_cache(ds, dir.file("cache.pt"));
  expect_every_flip_detected(dir.file("cache.pt"), [](const std::string& p) { load_dataset_cache(p); }, 40, 3);
  c10::impl::GenericDict als(c10::StringType::get(), c10::TensorType::get());
  als.insert("user_item_factors", torch::randn({ds.num_users(), 8}));
  als.insert("item_factors", torch::randn({ds.num_items(), 8}));
  als.insert("user_id", ds.user_ids.raw_ids());
  save_pickle(c10::IValue(als), dir.file("als.pt"));
  expect_every_flip_detected(dir.file("als.pt"), [](const std::string& p) { load_tensor_dict(p); }, 40, 4);
  const auto factors = load_tensor_dict(dir.file("als.pt"));
  CHECK(factors["item_factors"].sizes() == torch::IntArrayRef({ds.num_items(), 8}));

  // The records that are not tensors are checked as well: the pickle.
  {
    std::string bytes = read_file(dir.file("als.pt"));
    const auto index = rectrain::detail::index_torch_archive(bytes.data(), bytes.size(), "als.pt");
    const auto* pickle = index.find("data.pkl");
    bytes[pickle->offset + pickle->size / 2] ^= 0x20;
    write_file(dir.file("bad_pickle.pt"), bytes);
    CHECK_THROWS_AS(load_tensor_dict(dir.file("bad_pickle.pt")), ChecksumError);
  }
  // An archive written without checksums (every CRC 0): rectrain's own
  // files refuse it, files from elsewhere load unchecked.
  auto without_checksums = [&](const std::string& from, const std::string& to) {
    std::string bytes = read_file(dir.file(from));
    const auto index = rectrain::detail::index_torch_archive(bytes.data(), bytes.size(), from);
    for (const auto& entry : index.records) std::memset(&bytes[entry.second.directory_entry + 16], 0, 4);
    write_file(dir.file(to), bytes);
  };
  without_checksums("cache.pt", "cache_no_crc.pt");
  CHECK_THROWS_WITH(load_dataset_cache(dir.file("cache_no_crc.pt")), Catch::Contains("written without checksums"));
  without_checksums("als.pt", "als_no_crc.pt");
  CHECK(load_tensor_dict(dir.file("als_no_crc.pt")).size() == 3);
}

TEST_CASE("Checkpoint binds id maps; a model file carries its vocabulary", "[train][checksum]") {
  TempDir dir;
  IdMap users = IdMap::from_ids({i64({900, 5, 77, 5})}), loaded;
  Checkpoint out;
  out.add("user_ids", users);
  out.save(dir.file("ids.pt"));
  Checkpoint in;
  in.add("user_ids", loaded);
  in.load(dir.file("ids.pt"));
  CHECK(loaded.raw_ids().equal(i64({5, 77, 900})));
  CHECK(loaded.index_of(900) == 2);
  CHECK(loaded.index_of(6) == -1);
  // Raw ids out of order (a file not written by this binding) are refused,
  // naming the entry.
  torch::serialize::OutputArchive archive, part;
  archive.write("rectrain_checkpoint", torch::tensor(Checkpoint::format_version));
  part.write("raw_ids", i64({9, 3}));
  archive.write("user_ids", part);
  archive.save_to(dir.file("bad.pt"));
  CHECK_THROWS_WITH(in.load(dir.file("bad.pt")),
                    Catch::Contains("entry 'user_ids'") && Catch::Contains("strictly increasing"));
}

TEST_CASE("DatasetFingerprint tells data apart part by part", "[dataset][checksum]") {
  TempDir dir;
  generate_synthetic(dir.file("data"), SyntheticOptions::at_scale(0.002).seed(6));
  Dataset ds = load_dataset(dir.file("data"));
  const auto a = DatasetFingerprint::of(ds);
  CHECK(a.differences(DatasetFingerprint::of(load_dataset(dir.file("data")))).empty());
  const auto round_trip = DatasetFingerprint::from_text(a.to_text(), "here");
  CHECK(round_trip.differences(a).empty());
  // One changed timespent: the interactions differ, nothing else.
  auto timespent = ds.interactions["timespent"].clone();
  timespent[5] += 1;
  ds.interactions.set("timespent", timespent);
  const auto diff = a.differences(DatasetFingerprint::of(ds), "before", "after");
  CHECK_THAT(diff, Catch::StartsWith("  interactions: ") && Catch::Contains(" before; ") && Catch::EndsWith(" after\n"));
  CHECK(std::count(diff.begin(), diff.end(), '\n') == 1);
  CHECK_THROWS_WITH(DatasetFingerprint::from_text("interactions 3 xyz\n", "f.pt"), Catch::Contains("f.pt: bad data"));
}

TEST_CASE("candidate_batch_spec in a model's vocabulary: ids by raw id, side features from the data",
          "[dataset][vocabulary]") {
  TempDir dir;
  const std::string data = dir.file("data");
  fs::create_directories(data);
  write_file(data + "/interactions.csv",
             "user_id,item_id,timespent,like,dislike,share,bookmarks\n10,100,1,1,0,0,0\n20,200,2,0,0,0,0\n");
  write_file(data + "/items.csv", "item_id,source_id,duration\n100,7,30\n200,8,40\n300,9,50\n");
  write_file(data + "/candidates.csv", "user_id,item_id\n20,300\n30,100\n10,200\n");
  const Dataset ds = load_dataset(data);
  // A model that knew users 5 and 20, items 200 and 100, sources 8 and 3.
  Vocabulary model{IdMap::from_ids({i64({5, 20})}), IdMap::from_ids({i64({200, 100})}), IdMap::from_ids({i64({8, 3})})};
  const auto batch = candidate_batch_spec(ds, model).gather(torch::arange(3).view({3, 1}));
  CHECK(batch.feature("user").view(-1).equal(i64({1, -1, -1})));    // 20 -> 1; 30 and 10 unknown
  CHECK(batch.feature("item").view(-1).equal(i64({-1, 0, 1})));     // 300 unknown; 100 -> 0; 200 -> 1
  CHECK(batch.feature("source").view(-1).equal(i64({-1, -1, 1})));  // 9, 7 unknown; 8 -> 1 (after 3)
  CHECK(batch.feature("duration").view(-1).equal(torch::tensor({50.0f, 30.0f, 40.0f})));  // the data's own
  // In the data's own vocabulary it is the plain candidates spec.
  const auto own = candidate_batch_spec(ds, Vocabulary::of(ds)).gather(torch::arange(3).view({3, 1}));
  const auto plain = candidate_batch_spec(ds).gather(torch::arange(3).view({3, 1}));
  for (const char* name : {"user", "item", "source", "duration", "age"})
    CHECK(own.feature(name).equal(plain.feature(name)));
}

TEST_CASE("ensemble_scores with fixed score scales: a pair's score does not depend on the others", "[train]") {
  const auto scale = ScoreScale::of(torch::tensor({1.0, 2.0, 3.0}));
  CHECK(scale.mean == 2.0);
  CHECK(scale.std == 1.0);
  CHECK(ScoreScale::of(torch::tensor({4.0f, 4.0f})).std == 1.0);
  const std::vector<ScoreScale> scales{{2.0, 1.0}, {0.0, 4.0}};
  const auto few = ensemble_scores({torch::tensor({3.0f}), torch::tensor({8.0f})}, scales);
  const auto many = ensemble_scores({torch::tensor({3.0f, -9.0f, 100.0f}), torch::tensor({8.0f, 1.0f, 2.0f})}, scales);
  CHECK(few[0].item<float>() == 1.5f);  // ((3 - 2) / 1 + 8 / 4) / 2
  CHECK(many[0].item<float>() == few[0].item<float>());
  CHECK_THROWS_AS(ensemble_scores({torch::tensor({1.0f})}, {{0.0, 0.0}}), TensorError);
  CHECK_THROWS_AS(ScoreScale::of(torch::tensor({1.0f, NAN})), TensorError);
}

TEST_CASE("Writers refuse a program's inputs, through symlinks and hard links", "[core][atomic]") {
  TempDir dir;
  const std::string data = dir.file("data");
  fs::create_directories(data);
  write_file(data + "/candidates.csv", "user_id,item_id\n1,2\n");
  write_file(dir.file("other.csv"), "x\n");
  fs::create_symlink(data + "/candidates.csv", dir.file("link.csv"));
  fs::create_hard_link(data + "/candidates.csv", dir.file("hard.csv"));
  protect_input(data);
  for (const char* target : {"data/candidates.csv", "link.csv", "hard.csv"}) {
    INFO(target);
    CHECK_THROWS_WITH(write_predictions(dir.file(target), i64({1}), i64({2}), torch::tensor({0.5f})),
                      Catch::Contains("refusing to write " + dir.file(target)) &&
                          Catch::Contains("of this run; choose another output path"));
  }
  CHECK(read_file(data + "/candidates.csv") == "user_id,item_id\n1,2\n");
  CHECK_NOTHROW(write_predictions(dir.file("other.csv"), i64({1}), i64({2}), torch::tensor({0.5f})));
  CHECK_NOTHROW(write_predictions(dir.file("new.csv"), i64({1}), i64({2}), torch::tensor({0.5f})));
  clear_protected_inputs();
  CHECK_NOTHROW(write_predictions(dir.file("hard.csv"), i64({1}), i64({2}), torch::tensor({0.5f})));
}

TEST_CASE("DirectoryLock: one holder per directory, named to the next", "[core][lock]") {
  TempDir dir;
  const std::string out = dir.file("out");
  {
    DirectoryLock first(out, "the first run");
    CHECK(fs::is_directory(out));
    CHECK_THROWS_WITH(DirectoryLock(out, "the second"),
                      Catch::Contains(out + " is in use by another process (pid " + std::to_string(::getpid()) +
                                      ": the first run, since ") &&
                          Catch::Contains("choose another output directory"));
  }
  CHECK_NOTHROW(DirectoryLock(out, "after the first ended"));
}

TEST_CASE("A failed write (file too large, disk full) throws with the reason and leaves the old file", "[core][atomic]") {
  TempDir dir;
  const std::string path = dir.file("model.pt");
  torch::nn::Linear small(4, 4), big(512, 512);
  Checkpoint a, b;
  a.add("model", *small);
  b.add("model", *big);
  a.save(path);
  const std::string before = read_file(path);
  // A file-size limit of 256 KiB: writes past it fail with EFBIG (SIGXFSZ
  // ignored), as they would with ENOSPC on a full disk.
  struct rlimit old_limit {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 256 * 1024;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
  std::string message;
  try {
    b.save(path);
  } catch (const rectrain::Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  CHECK_THAT(message, Catch::Contains("cannot write " + path + ": File too large") &&
                          Catch::Contains("the partial file was removed"));
  CHECK(read_file(path) == before);
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);  // no temporary left
  // Durable writes: the same bytes, synced.
  set_durable_writes(true);
  b.save(path);
  set_durable_writes(false);
  CHECK_NOTHROW(b.load(path));
}

TEST_CASE("write_directory_atomically swaps whole directories and refuses foreign files", "[core][atomic]") {
  TempDir dir;
  const std::string target = dir.file("data");
  auto dataset_file = [](const std::string& name) { return name == "a.csv" || name == "b.csv"; };
  write_directory_atomically(target, [](const std::string& d) {
    write_file(d + "/a.csv", "old a\n");
    write_file(d + "/b.csv", "old b\n");
  }, dataset_file);
  // A writer that fails half-way leaves the old contents whole.
  CHECK_THROWS_WITH(write_directory_atomically(target, [](const std::string& d) {
                      write_file(d + "/a.csv", "new a\n");
                      throw rectrain::Error("interrupted");
                    }, dataset_file),
                    Catch::Contains("interrupted"));
  CHECK(read_file(target + "/a.csv") == "old a\n");
  CHECK(read_file(target + "/b.csv") == "old b\n");
  write_directory_atomically(target, [](const std::string& d) { write_file(d + "/a.csv", "new a\n"); }, dataset_file);
  CHECK(read_file(target + "/a.csv") == "new a\n");
  CHECK_FALSE(fs::exists(target + "/b.csv"));  // the old set is gone with its directory
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);  // no staging left
  write_file(target + "/notes.txt", "mine\n");
  CHECK_THROWS_WITH(write_directory_atomically(target, [](const std::string&) {}, dataset_file),
                    Catch::Contains("holds other files than the ones written there (notes.txt)"));
  CHECK(read_file(target + "/notes.txt") == "mine\n");
}

TEST_CASE("A CSV that shrinks while it is read is an error, not SIGBUS", "[dataset][faults][mmap]") {
  TempDir dir;
  const std::string path = dir.file("interactions.csv");
  std::string text = "user_id,item_id,timespent,like,dislike,share,bookmarks\n";
  for (int r = 0; r < 40000; ++r) text += std::to_string(r % 97) + "," + std::to_string(r % 131) + ",3,0,1,0,0\n";
  write_file(path, text);
  const std::vector<CsvField> fields{{"user_id", CsvType::Id}, {"item_id", CsvType::Id}, {"timespent", CsvType::Number}};
  {
    CsvFile file(path);                 // mapped, header parsed
    REQUIRE(::truncate(path.c_str(), 100000) == 0);  // most pages are gone
    CHECK_THROWS_WITH(file.read(fields, CsvOptions().extra_columns(ExtraColumns::Ignore)),
                      Catch::Contains(path + ": the file changed while it was read (" + std::to_string(text.size()) +
                                      " bytes when opened, 100000 bytes now)"));
  }
  write_file(path, text);
  {
    CsvFile file(path);
    write_file(path, text.substr(0, text.size() - 1) + "1\n");  // same size, rewritten in place
    CHECK_THROWS_WITH(file.read(fields), Catch::Contains("changed while it was read"));
  }
  // A file that is not regular (a pipe) is read into memory instead.
  const std::string fifo = dir.file("pipe.csv");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { write_file(fifo, "user_id,item_id,timespent\n1,2,3\n4,5,6\n"); });
  const Table t = read_csv(fifo, fields);
  writer.join();
  CHECK(t["item_id"].equal(i64({2, 5})));
}

TEST_CASE("sigbus child: a mapped tensor file truncated under its tensors", "[.sigbus-child]") {
  // Run by the next test in a process of its own: the process must stop
  // with a message naming the file, not die of SIGBUS.
  const std::string path = std::getenv("RECTRAIN_SIGBUS_FILE");
  const Table t = load_tensor_table(path);
  REQUIRE(::truncate(path.c_str(), 0) == 0);
  std::printf("sum %f\n", t["x"].sum().item<double>());  // touches pages that are gone
}

TEST_CASE("A tensor file truncated while its tensors use it stops the process with a message", "[dataset][faults][mmap]") {
  TempDir dir;
  const std::string path = dir.file("t.pt");
  Table t;
  t.add("x", torch::ones({1 << 20}));
  save_tensor_table(t, path);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string out =
      run_command("{ RECTRAIN_SIGBUS_FILE=" + path + " " + self + " '[.sigbus-child]' 2>&1; echo rc=$?; }");
  CHECK_THAT(out, Catch::Contains("rectrain: fatal: " + path + " shrank while this process still used its data") &&
                      Catch::Contains("rc=1"));
  CHECK_THAT(out, !Catch::Contains("sum "));
}

TEST_CASE("Inputs rectrain cannot read are explained: compression, delimiters, legacy and OrderedDict files",
          "[dataset][bad-input]") {
  TempDir dir;
  const std::string data = dir.file("data");
  fs::create_directories(data);
  const std::string header = "user_id,item_id,timespent,like,dislike,share,bookmarks\n";
  auto load_error = [&] {
    try {
      load_dataset(data);
    } catch (const rectrain::Error& e) {
      return std::string(e.what());
    }
    return std::string("loaded");
  };
  write_file(data + "/interactions.csv", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00", 8) + "junk");
  CHECK_THAT(load_error(), Catch::Contains("interactions.csv: not a CSV text file: it is gzip-compressed; decompress "
                                           "it first (gunzip)"));
  write_file(data + "/interactions.csv", "user_id\titem_id\ttimespent\tlike\tdislike\tshare\tbookmarks\n1\t2\t3\t0\t0\t0\t0\n");
  CHECK_THAT(load_error(), Catch::Contains("missing required column") &&
                               Catch::Contains("the line has 6 tabs and 0 commas: the file looks tab-separated"));
  write_file(data + "/interactions.csv", header + "1;2;3;0;0;0;0\n");
  CHECK_THAT(load_error(), Catch::Contains("interactions.csv:2:1: column 'user_id': expected a non-negative integer id, "
                                           "got '1;2;3;0;0;0;0' (the field has 6 semicolons and 0 commas: the file "
                                           "looks semicolon-separated"));
  write_file(data + "/interactions.csv", header + "1,2,3,0,0,0,0\n1|2|3|0|0|0|0\n");
  CHECK_THAT(load_error(), Catch::Contains("interactions.csv:3:1: column 'user_id'") &&
                               Catch::Contains("the file looks bar-separated"));
  // A column that takes a name rectrain gives its own columns.
  write_file(data + "/interactions.csv",
             "user_id,item_id,timespent,like,dislike,share,bookmarks,target\n1,2,3,0,0,0,0,1\n");
  CHECK_THAT(load_error(), Catch::Contains("interactions.csv:1:8: column 'target': the name 'target' is reserved"));
  write_file(data + "/interactions.csv", "user,user_id,item_id,timespent,like,dislike,share,bookmarks\n5,1,2,3,0,0,0,0\n");
  CHECK_THAT(load_error(), Catch::Contains("interactions.csv:1:1: column 'user': the name 'user' is reserved"));
  fs::remove(data + "/interactions.csv");

  // torch.save's legacy format (before PyTorch 1.6) and other binary files.
  write_file(data + "/interactions.pt",
             std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.", 22));
  CHECK_THAT(load_error(), Catch::Contains("legacy torch.save format") &&
                               Catch::Contains("save it again with torch.save(obj, path)"));
  write_file(data + "/interactions.pt", std::string("\x93NUMPY\x01\x00", 8) + "{'descr': '<i8'}");
  CHECK_THAT(load_error(), Catch::Contains("it is a NumPy .npy array"));

  // An OrderedDict saved from Python (when Python's torch is here).
  const std::string script = dir.file("od.py");
  write_file(script, "import collections, sys, torch\n"
                     "d = collections.OrderedDict()\n"
                     "d['user_id'] = torch.tensor([1, 2]); d['item_id'] = torch.tensor([3, 4])\n"
                     "torch.save(d, sys.argv[1])\n");
  if (std::system(("/usr/bin/python3 " + script + " " + data + "/interactions.pt >/dev/null 2>&1").c_str()) != 0) {
    WARN("Python's torch is not installed: the OrderedDict case is skipped");
    return;
  }
  CHECK_THAT(load_error(), Catch::Contains("collections.OrderedDict") &&
                               Catch::Contains("save a plain dict instead: torch.save(dict(d), path)"));
}
