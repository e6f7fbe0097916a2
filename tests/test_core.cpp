#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/core/memory_reuse.hpp>
#include <rectrain/core/random.hpp>

#include <torch/torch.h>

#include <set>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace rectrain;
using rectrain_test::TempDir;
using rectrain_test::i64;

TEST_CASE("IdMap assigns dense indices in ascending raw order", "[core][id_map]") {
  auto a = i64({int64_t{50}, 7, 50, 1000000000000LL});
  auto b = i64({int64_t{3}, 7});
  const IdMap map = IdMap::from_ids({a, b});
  REQUIRE(map.size() == 4);
  CHECK(map.raw_ids().equal(i64({int64_t{3}, 7, 50, 1000000000000LL})));
  CHECK(map.encode(a).equal(i64({int64_t{2}, 1, 2, 3})));
  CHECK(map.index_of(7) == 1);
  CHECK(map.index_of(8) == -1);
  auto unknown = i64({int64_t{8}, 3});
  CHECK(map.encode(unknown).equal(i64({int64_t{-1}, 0})));
  CHECK(map.decode(i64({int64_t{0}, -1, 3})).equal(
      i64({int64_t{3}, -1, 1000000000000LL})));
  CHECK_THROWS_AS(map.decode(i64({int64_t{4}})), TensorError);
}

TEST_CASE("IdMap round-trips large random id sets", "[core][id_map]") {
  auto ids = torch::randint(0, int64_t{1} << 40, {200000}, torch::kInt64);
  ids = torch::cat({ids, ids.slice(0, 0, 1000)});
  const IdMap map = IdMap::from_ids({ids});
  const auto unique = std::get<0>(torch::_unique(ids, /*sorted=*/true));
  CHECK(map.raw_ids().equal(unique));
  CHECK(map.decode(map.encode(ids)).equal(ids));
}

TEST_CASE("IdMap rejects negative ids and bad vocabularies", "[core][id_map]") {
  CHECK_THROWS_WITH(IdMap::from_ids({i64({int64_t{1}, -5})}),
                    Catch::Contains("negative id -5 at position 1"));
  CHECK_THROWS_AS(IdMap::from_sorted_unique(i64({int64_t{3}, 3})), TensorError);
  CHECK_THROWS_AS(IdMap::from_ids({torch::tensor({1.0f})}), TensorError);
}

TEST_CASE("write_atomically leaves the old file when the writer throws", "[core][atomic]") {
  TempDir dir;
  const auto path = dir.file("out.txt");
  write_stream_atomically(path, [](std::ostream& out) { out << "first"; });
  CHECK(rectrain_test::read_file(path) == "first");
  CHECK_THROWS(write_stream_atomically(path, [](std::ostream& out) {
    out << "partial";
    throw std::runtime_error("boom");
  }));
  CHECK(rectrain_test::read_file(path) == "first");
  // No temporary left behind.
  const auto files = std::distance(std::filesystem::directory_iterator(dir.path()),
                                   std::filesystem::directory_iterator());
  CHECK(files == 1);
}

TEST_CASE("FastRng streams are deterministic and distinct", "[core][random]") {
  rectrain::detail::FastRng a(rectrain::detail::stream_seed(1, 2, 3)), b(rectrain::detail::stream_seed(1, 2, 3)),
      c(rectrain::detail::stream_seed(1, 3, 2));
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next();
    CHECK(x == b.next());
    differs |= x != c.next();
  }
  CHECK(differs);
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 100000; ++i) ++counts[a.below(10)];
  for (int count : counts) CHECK(std::abs(count - 10000) < 600);
}

TEST_CASE("IdMap direct tables and hash tables agree", "[core][id_map]") {
  // Dense small ids take the direct table, the same ids shifted far apart
  // take the hash table; dense indices must match.
  const auto small = torch::randint(0, 5000, {100000}, torch::kInt64);
  const auto far = small * 1000003 + (int64_t{1} << 40);
  const IdMap a = IdMap::from_ids({small}), b = IdMap::from_ids({far});
  REQUIRE(a.size() == b.size());
  CHECK(a.encode(small).equal(b.encode(far)));
  CHECK(a.index_of(5000) == -1);
  CHECK(a.index_of(-3) == -1);
  CHECK(a.index_of(int64_t{1} << 50) == -1);
  CHECK(a.decode(a.encode(small)).equal(small));
  const IdMap reloaded = IdMap::from_sorted_unique(a.raw_ids());
  CHECK(reloaded.encode(small).equal(a.encode(small)));
}

#if RECTRAIN_DETAIL_OWN_ALLOCATOR
TEST_CASE("reuse_freed_memory reports that a sanitizer's allocator has no such setting", "[core][memory]") {
  CHECK_FALSE(reuse_freed_memory());
}
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
TEST_CASE("reuse_freed_memory serves large blocks from the heap", "[core][memory]") {
  const auto mapped = [] { return mallinfo2().hblkhd; };
  constexpr int64_t floats = int64_t{16} << 20;  // 64 MiB: above glibc's largest default mmap threshold
  const size_t before = mapped();
  {
    const auto t = torch::empty({floats});
    CHECK(mapped() >= before + 4 * floats);  // glibc's default: mapped on its own
  }
  REQUIRE(reuse_freed_memory());
  {
    const auto t = torch::empty({floats});
    CHECK(mapped() < before + 4 * floats);  // from the heap, reusable after free
  }
  // Back to fixed defaults for the tests that follow.
  CHECK(reuse_freed_memory(MemoryReuseOptions().max_block_bytes(128 << 10).keep_bytes(128 << 10)));
}
#endif
