#pragma once
// The search behind HistoryFeature's largest similarity: per (row, list),
// the valid item whose table row has the largest dot product with the
// row's query. Every batch computes rows × lists × window dot products of
// the table's width (20,480 × 4 × 16 × 256 in the recipe at full scale);
// written as a plain loop, a build without -march flags ran them four
// floats at a time without FMA, a quarter of a frozen epoch at full scale.
// So one body serves every ISA of cpu_isa.hpp (core/simd.hpp).

#include <rectrain/core/cpu_isa.hpp>
#include <rectrain/core/simd.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>
#include <limits>

namespace rectrain {
namespace detail {

struct MostSimilarArgs {
  const float* table = nullptr;  ///< [items, dim]
  const float* query = nullptr;  ///< [rows, dim]
  const int64_t* ids = nullptr;  ///< [rows, lists, window] rows of table
  const bool* valid = nullptr;   ///< [rows, lists, window] which ids count
  int64_t* out = nullptr;        ///< [rows, lists]: the winner's id, left as it is for an empty list
  int64_t lists = 0, window = 0, dim = 0;
};

/// a · b over n floats: two chains of vectors, then the tail.
template <int Bytes>
RECTRAIN_ALWAYS_INLINE float dot_product(const float* a, const float* b, int64_t n) {
#if RECTRAIN_VECTOR_KERNELS
  using V = Vec<float, Bytes>;
  constexpr int64_t L = lanes<float, Bytes>;
  V even{}, odd{};
  int64_t k = 0;
  for (; k + 2 * L <= n; k += 2 * L) {
    V x, y;
    load(x, a + k);
    load(y, b + k);
    even += x * y;
    load(x, a + k + L);
    load(y, b + k + L);
    odd += x * y;
  }
  if (k + L <= n) {
    V x, y;
    load(x, a + k);
    load(y, b + k);
    even += x * y;
    k += L;
  }
  even += odd;
  float sum = horizontal_sum<float, Bytes>(even);
#else
  float sum = 0;
  int64_t k = 0;
#endif
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

/// Rows [begin, end) of the search; ties go to the first item.
template <int Bytes>
RECTRAIN_ALWAYS_INLINE void most_similar_body(const MostSimilarArgs& a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float* q = a.query + i * a.dim;
    for (int64_t c = 0; c < a.lists; ++c) {
      const int64_t first = (i * a.lists + c) * a.window;
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t j = first; j < first + a.window; ++j) {
        if (!a.valid[j]) continue;
        const float dot = dot_product<Bytes>(a.table + a.ids[j] * a.dim, q, a.dim);
        if (dot > best) {
          best = dot;
          a.out[i * a.lists + c] = a.ids[j];
        }
      }
    }
  }
}

// One entry point per ISA, the same body in each.
inline void most_similar_generic(const MostSimilarArgs& a, int64_t begin, int64_t end) {
  most_similar_body<16>(a, begin, end);
}
#if RECTRAIN_X86_DISPATCH
RECTRAIN_TARGET_AVX2 inline void most_similar_avx2(const MostSimilarArgs& a, int64_t begin, int64_t end) {
  most_similar_body<32>(a, begin, end);
}
RECTRAIN_TARGET_AVX512 inline void most_similar_avx512(const MostSimilarArgs& a, int64_t begin, int64_t end) {
  most_similar_body<64>(a, begin, end);
}
#endif

using MostSimilarKernel = void (*)(const MostSimilarArgs&, int64_t, int64_t);

inline MostSimilarKernel most_similar_for(CpuIsa isa) {
  return RECTRAIN_KERNEL_FOR(isa, &most_similar_generic, &most_similar_avx2, &most_similar_avx512);
}

/// The search on CPU tensors, with the kernel of cpu_isa(): `table` [items,
/// dim] and `query` [rows, dim] float32, `ids` [rows, lists, window] int64
/// rows of `table`, `valid` bool of the same shape. Returns [rows, lists]
/// int64, -1 for an empty list. The caller has checked shapes and ids.
inline torch::Tensor most_similar(const torch::Tensor& table, const torch::Tensor& query, const torch::Tensor& ids,
                                  const torch::Tensor& valid) {
  const auto t = table.to(torch::kFloat32).contiguous();
  const auto q = query.to(torch::kFloat32).contiguous();
  const auto id = ids.contiguous();
  const auto ok = valid.contiguous();
  const int64_t rows = ids.size(0);
  auto out = torch::full({rows, ids.size(1)}, -1, torch::kInt64);
  MostSimilarArgs args;
  args.table = t.data_ptr<float>();
  args.query = q.data_ptr<float>();
  args.ids = id.data_ptr<int64_t>();
  args.valid = ok.data_ptr<bool>();
  args.out = out.data_ptr<int64_t>();
  args.lists = ids.size(1);
  args.window = ids.size(2);
  args.dim = t.size(1);
  const auto kernel = most_similar_for(cpu_isa());
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
  return out;
}

} // namespace detail
} // namespace rectrain
