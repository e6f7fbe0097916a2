#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/data/csv.hpp>

using namespace rectrain;
using rectrain_test::input_error;
using rectrain_test::TempDir;
using rectrain_test::i64;
using rectrain_test::write_file;

namespace {
const std::vector<CsvField> kFields{{"user_id", CsvType::Id},
                                    {"item_id", CsvType::Id},
                                    {"timespent", CsvType::NonNegativeNumber},
                                    {"like", CsvType::Flag}};

} // namespace

TEST_CASE("CSV reader parses typed columns in any column order", "[csv]") {
  TempDir dir;
  write_file(dir.file("a.csv"),
             "like,item_id,user_id,timespent\r\n1,20,10,1.5\r\n0,21,11,0\r\n1,22,9223372036854775807,3e2");
  Table t = read_csv(dir.file("a.csv"), kFields);
  REQUIRE(t.num_rows() == 3);
  CHECK(t.names() == std::vector<std::string>{"like", "item_id", "user_id", "timespent"});
  CHECK(t["user_id"].equal(i64({int64_t{10}, 11, 9223372036854775807LL})));
  CHECK(t["item_id"].equal(i64({int64_t{20}, 21, 22})));
  CHECK(t["timespent"].equal(torch::tensor({1.5f, 0.0f, 300.0f})));
  CHECK(t["like"].equal(torch::tensor({1, 0, 1}, torch::kUInt8)));
}

TEST_CASE("CSV reader: many chunks give the same table as one", "[csv]") {
  TempDir dir;
  std::string text = "user_id,item_id,timespent,like\n";
  for (int i = 0; i < 20000; ++i)
    text += std::to_string(i) + "," + std::to_string(i * 7 % 1000) + "," +
            std::to_string(i % 13) + ".25," + std::to_string(i % 2) + "\n";
  write_file(dir.file("a.csv"), text);
  Table one = read_csv(dir.file("a.csv"), kFields, CsvOptions().chunk_bytes(int64_t{1} << 30));
  Table many = read_csv(dir.file("a.csv"), kFields, CsvOptions().chunk_bytes(97));
  REQUIRE(one.num_rows() == 20000);
  for (const auto& name : one.names()) CHECK(one[name].equal(many[name]));
  CHECK(many["user_id"][19999].item<int64_t>() == 19999);
}

TEST_CASE("CSV reader: extra columns are ignored with a warning or kept", "[csv]") {
  TempDir dir;
  write_file(dir.file("a.csv"), "user_id,item_id,timespent,like,watch_ratio\n1,2,3,0,0.5\n");
  Table ignored = read_csv(dir.file("a.csv"), kFields);
  CHECK_FALSE(ignored.contains("watch_ratio"));
  Table kept = read_csv(dir.file("a.csv"), kFields,
                        CsvOptions().extra_columns(ExtraColumns::KeepAsNumber));
  CHECK(kept["watch_ratio"].equal(torch::tensor({0.5f})));
}

TEST_CASE("CSV reader errors name file, line and column", "[csv][bad-input]") {
  TempDir dir;
  const auto path = dir.file("bad.csv");
  struct Case {
    std::string body;
    int64_t line, column;
    std::string message;
  };
  const std::vector<Case> cases{
      {"1,2,3,1\n4,x,6,0\n", 3, 2, "expected a non-negative integer id, got 'x'"},
      {"1,2,3,1\n-4,5,6,0\n", 3, 1, "negative id '-4'"},
      {"1,2,3,1\n4,5,6,2\n", 3, 4, "expected a flag 0 or 1, got '2'"},
      {"1,2,nan,1\n", 2, 3, "NaN or infinite number 'nan'"},
      {"1,2,inf,1\n", 2, 3, "NaN or infinite number 'inf'"},
      {"1,2,1e999,1\n", 2, 3, "NaN or infinite number"},
      {"1,2,-3,1\n", 2, 3, "expected a non-negative number, got '-3'"},
      {"1,2,abc,1\n", 2, 3, "expected a number, got 'abc'"},
      {"1,2,3\n", 2, 0, "wrong field count: expected 4, found 3"},
      {"1,2,3,1,5\n", 2, 0, "wrong field count: expected 4, found 5"},
      {"1,2,3,1\n\n4,5,6,1\n", 3, 0, "empty line"},
      {"1,2,,1\n", 2, 3, "expected a number, got ''"},
      {"99999999999999999999,2,3,1\n", 2, 1, "does not fit below 2^63"},
  };
  for (const auto& c : cases) {
    INFO(c.body);
    write_file(path, "user_id,item_id,timespent,like\n" + c.body);
    const InputError e = input_error([&] { read_csv(path, kFields); });
    CHECK(e.file() == path);
    CHECK(e.line() == c.line);
    CHECK(e.column() == c.column);
    CHECK_THAT(e.what(), Catch::Contains(c.message));
  }
}

TEST_CASE("CSV reader reports the earliest bad line whatever the chunking", "[csv][bad-input]") {
  TempDir dir;
  std::string text = "user_id,item_id,timespent,like\n";
  for (int i = 0; i < 5000; ++i) text += (i == 1234 || i == 4000 ? "1,2,3,7\n" : "1,2,3,1\n");
  write_file(dir.file("a.csv"), text);
  for (int64_t chunk : {int64_t{64}, int64_t{1000}, int64_t{1} << 30}) {
    const InputError e = input_error(
        [&] { read_csv(dir.file("a.csv"), kFields, CsvOptions().chunk_bytes(chunk)); });
    CHECK(e.line() == 1234 + 2);
  }
}

TEST_CASE("CSV reader: missing file, missing column, bad header", "[csv][bad-input]") {
  TempDir dir;
  CHECK_THROWS_WITH(read_csv(dir.file("nope.csv"), kFields), Catch::Contains("cannot open"));
  write_file(dir.file("a.csv"), "user_id,item_id,like\n1,2,1\n");
  const InputError e = input_error([&] { read_csv(dir.file("a.csv"), kFields); });
  CHECK(e.line() == 1);
  CHECK(e.column_name() == "timespent");
  CHECK_THAT(e.what(), Catch::Contains("missing required column"));
  write_file(dir.file("b.csv"), "");
  CHECK_THROWS_WITH(read_csv(dir.file("b.csv"), kFields), Catch::Contains("empty file"));
  write_file(dir.file("c.csv"), "user_id,item_id,user_id\n");
  CHECK_THROWS_WITH(read_csv(dir.file("c.csv"), kFields), Catch::Contains("duplicate column name"));
}

TEST_CASE("CSV reader: header only means zero rows; Integer ranges hold", "[csv]") {
  TempDir dir;
  write_file(dir.file("a.csv"), "user_id,item_id,timespent,like");
  CHECK(read_csv(dir.file("a.csv"), kFields).num_rows() == 0);
  write_file(dir.file("g.csv"), "gender\n0\n2\n3\n");
  const InputError e = input_error(
      [&] { read_csv(dir.file("g.csv"), {{"gender", CsvType::Integer, true, 0, 2}}); });
  CHECK(e.line() == 4);
  CHECK_THAT(e.what(), Catch::Contains("outside [0, 2]"));
}
