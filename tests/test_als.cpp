#include "catch.hpp"
#include "helpers.hpp"

#include <rectrain/als/sparse_matrix.hpp>

using namespace rectrain;
using rectrain_test::i64;

namespace {
// Reference: LibTorch's own COO coalescing (sums duplicates), as dense.
torch::Tensor coo_dense(const torch::Tensor& row, const torch::Tensor& col, const torch::Tensor& values,
                        int64_t rows, int64_t cols) {
  const auto keep = (row >= 0) & (col >= 0);
  const auto idx = torch::stack({row.masked_select(keep), col.masked_select(keep)});
  return torch::sparse_coo_tensor(idx, values.masked_select(keep), {rows, cols}).coalesce().to_dense();
}
} // namespace

TEST_CASE("build_csr merges duplicates, skips unknowns, sorts columns", "[als][sparse]") {
  const auto row = i64({2, 0, 2, 0, -1, 1, 2});
  const auto col = i64({3, 1, 0, 1, 2, -1, 3});
  const CsrMatrix m = build_csr(row, col, 3, 4);
  CHECK(m.indptr.equal(i64({0, 1, 1, 3})));
  CHECK(m.indices.equal(torch::tensor({1, 0, 3}, torch::kInt32)));
  CHECK(m.values.equal(torch::ones({3})));  // binary: duplicates merged to 1
  // Confidences 1 + alpha * r, r counted (no signal) or summed (signal).
  const CsrMatrix counted = build_csr(row, col, 3, 4, {}, InteractionMatrixOptions().alpha(10));
  CHECK(counted.values.equal(torch::tensor({21.0f, 11.0f, 21.0f})));
  const auto signal = torch::tensor({0.5f, 1.0f, 2.0f, 3.0f, 9.0f, 9.0f, 0.25f});
  const CsrMatrix weighted = build_csr(row, col, 3, 4, signal, InteractionMatrixOptions().alpha(2));
  CHECK(weighted.values.equal(torch::tensor({9.0f, 5.0f, 2.5f})));
}

TEST_CASE("build_csr and transpose agree with coalesced COO on random data", "[als][sparse]") {
  torch::manual_seed(7);
  const int64_t rows = 300, cols = 500, n = 20000;
  const auto row = torch::randint(-1, rows, {n});
  const auto col = torch::randint(0, cols, {n});
  const auto signal = torch::rand({n});
  const CsrMatrix m = build_csr(row, col, rows, cols, signal, InteractionMatrixOptions().alpha(3));
  const auto expected_r = coo_dense(row, col, signal, rows, cols);
  const auto expected = torch::where(expected_r > 0, 1 + 3 * expected_r, torch::zeros_like(expected_r));
  CHECK(torch::allclose(m.to_dense(), expected, 1e-5, 1e-5));
  const CsrMatrix t = m.transpose();
  CHECK(t.rows == cols);
  CHECK(t.to_dense().equal(m.to_dense().t()));
  const CsrMatrix back = t.transpose();
  CHECK(back.indptr.equal(m.indptr));
  CHECK(back.indices.equal(m.indices));
  CHECK(back.values.equal(m.values));
  // Column indices ascend within every row.
  const auto ptr = m.indptr;
  for (int64_t r = 0; r < rows; ++r) {
    const auto seg = m.indices.slice(0, ptr[r].item<int64_t>(), ptr[r + 1].item<int64_t>());
    if (seg.numel() > 1) CHECK((seg.diff() > 0).all().item<bool>());
  }
}

TEST_CASE("build_csr rejects bad coordinates", "[als][sparse][bad-input]") {
  CHECK_THROWS_WITH(build_csr(i64({0, 5}), i64({0, 0}), 3, 2), Catch::Contains("row: values must be in [-1, 3)"));
  CHECK_THROWS_WITH(build_csr(i64({0}), i64({-2}), 3, 2), Catch::Contains("found -2"));
  CHECK_THROWS_AS(build_csr(i64({0, 1}), i64({0}), 3, 2), TensorError);
  CHECK_THROWS_AS(build_csr(i64({0}), i64({0}), 3, 2, torch::tensor({NAN})), TensorError);
  CHECK_THROWS_AS(build_csr(i64({0}), i64({0}), 3, 2, {}, InteractionMatrixOptions().alpha(-1)), Error);
  const CsrMatrix empty = build_csr(torch::empty({0}, torch::kInt64), torch::empty({0}, torch::kInt64), 2, 2);
  CHECK(empty.nnz() == 0);
  CHECK(empty.indptr.equal(i64({0, 0, 0})));
}

TEST_CASE("user x item and user x source matrices of a dataset", "[als][sparse]") {
  rectrain_test::TempDir dir;
  rectrain_test::write_file(dir.file("interactions.csv"),
                            "user_id,item_id,timespent,like,dislike,share,bookmarks\n"
                            "1,10,5,1,0,0,0\n1,11,5,0,0,0,0\n2,10,5,0,0,0,0\n1,10,3,0,0,0,0\n2,12,1,0,0,0,0\n");
  rectrain_test::write_file(dir.file("items.csv"), "item_id,source_id,duration\n10,7,1\n11,7,1\n12,0,1\n");
  const Dataset ds = load_dataset(dir.path().string());
  const CsrMatrix ui = user_item_matrix(ds);
  CHECK(ui.to_dense().equal(torch::tensor({{1.0f, 1.0f, 0.0f}, {1.0f, 0.0f, 1.0f}})));
  const CsrMatrix spent = user_item_matrix(ds, "timespent", InteractionMatrixOptions().alpha(1));
  CHECK(spent.to_dense()[0][0].item<float>() == 9.0f);  // 1 + (5 + 3)
  const CsrMatrix us = user_source_matrix(ds);  // item 12 has no source
  CHECK(us.to_dense().equal(torch::tensor({{1.0f}, {1.0f}})));
  const CsrMatrix us_counts = user_source_matrix(ds, "", InteractionMatrixOptions().alpha(1));
  CHECK(us_counts.to_dense().equal(torch::tensor({{4.0f}, {2.0f}})));
}
