#pragma once
// Raw ids (non-negative integers below 2^63, as in the files) <-> dense
// indices 0..n-1 (what embedding tables are indexed by). Dense order is
// ascending raw id, so a vocabulary is the same whatever order rows come in.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace rectrain {

namespace detail {

/// Open-addressing hash map int64 -> int64 with linear probing; keys are
/// non-negative so -1 marks an empty slot. Read-only after construction,
/// hence safe to query from many threads.
class IdHashMap {
 public:
  IdHashMap() = default;

  explicit IdHashMap(int64_t expected) {
    uint64_t capacity = 16;
    while (capacity < static_cast<uint64_t>(expected) * 2) capacity <<= 1;
    keys_.assign(capacity, -1);
    values_.assign(capacity, -1);
    mask_ = capacity - 1;
    shift_ = 64 - bits(capacity);
  }

  /// Inserts `key` if absent; returns true if it was inserted.
  bool insert(int64_t key, int64_t value) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    return insert_no_grow(key, value);
  }

  int64_t find(int64_t key) const noexcept {
    if (keys_.empty()) return -1;
    uint64_t slot = hash(key);
    while (true) {
      const int64_t k = keys_[slot];
      if (k == key) return values_[slot];
      if (k == -1) return -1;
      slot = (slot + 1) & mask_;
    }
  }

  int64_t size() const noexcept { return static_cast<int64_t>(size_); }

  template <typename F>
  void for_each_key(F&& f) const {
    for (int64_t k : keys_)
      if (k != -1) f(k);
  }

 private:
  static int bits(uint64_t capacity) {
    int b = 0;
    while ((uint64_t{1} << b) < capacity) ++b;
    return b;
  }
  uint64_t hash(int64_t key) const noexcept {
    return (static_cast<uint64_t>(key) * 0x9e3779b97f4a7c15ULL) >> shift_;
  }
  bool insert_no_grow(int64_t key, int64_t value) {
    uint64_t slot = hash(key);
    while (true) {
      const int64_t k = keys_[slot];
      if (k == key) return false;
      if (k == -1) {
        keys_[slot] = key;
        values_[slot] = value;
        ++size_;
        return true;
      }
      slot = (slot + 1) & mask_;
    }
  }
  void grow() {
    std::vector<int64_t> old_keys = std::move(keys_);
    std::vector<int64_t> old_values = std::move(values_);
    const uint64_t capacity = std::max<uint64_t>(16, old_keys.size() * 2);
    keys_.assign(capacity, -1);
    values_.assign(capacity, -1);
    mask_ = capacity - 1;
    shift_ = 64 - bits(capacity);
    size_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i)
      if (old_keys[i] != -1) insert_no_grow(old_keys[i], old_values[i]);
  }

  std::vector<int64_t> keys_;
  std::vector<int64_t> values_;
  uint64_t mask_ = 0;
  int shift_ = 64;
  uint64_t size_ = 0;
};

/// Largest raw id a direct lookup table may cover (256 MiB of int32).
inline constexpr int64_t kDirectLimit = int64_t{1} << 26;

inline void check_id_tensor(const torch::Tensor& t, const char* name) {
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kInt64 ||
      !t.device().is_cpu())
    throw TensorError(concat(name, ": expected a 1-D int64 CPU tensor, got ",
                             type_and_shape_of(t)));
}

} // namespace detail

/// A vocabulary of raw ids with dense indices in ascending raw order.
class IdMap {
 public:
  IdMap() : raw_ids_(torch::empty({0}, torch::kInt64)) {}

  /// Every distinct id found in `columns` (1-D int64 CPU tensors of raw ids,
  /// each >= 0; a negative value throws, naming the tensor and position).
  static IdMap from_ids(const std::vector<torch::Tensor>& columns) {
    int64_t total = 0, max_id = -1;
    for (size_t c = 0; c < columns.size(); ++c) {
      detail::check_id_tensor(columns[c], "IdMap::from_ids column");
      if (columns[c].numel() == 0) continue;
      total += columns[c].numel();
      const int64_t lo = columns[c].min().item<int64_t>();
      if (lo < 0) {
        const int64_t at = (columns[c] < 0).nonzero()[0][0].item<int64_t>();
        throw TensorError(detail::concat("IdMap::from_ids: column ", c, " holds a negative id ",
                                         columns[c][at].item<int64_t>(), " at position ", at));
      }
      max_id = std::max(max_id, columns[c].max().item<int64_t>());
    }
    // Ids in a small range (the usual case: 0..n-1 as in the challenge data)
    // are collected in a presence table; sparse ones in per-chunk hash sets.
    if (max_id >= 0 && max_id < detail::kDirectLimit && max_id < 8 * total + (int64_t{1} << 20)) {
      std::vector<uint8_t> present(static_cast<size_t>(max_id + 1), 0);
      for (const auto& column : columns) {
        const auto col = column.contiguous();
        const int64_t* data = col.data_ptr<int64_t>();
        // Racing stores of the same byte: use relaxed atomics to stay defined.
        auto* flags = reinterpret_cast<std::atomic<uint8_t>*>(present.data());
        at::parallel_for(0, col.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) flags[data[i]].store(1, std::memory_order_relaxed);
        });
      }
      std::vector<int64_t> keys;
      for (int64_t id = 0; id <= max_id; ++id)
        if (present[static_cast<size_t>(id)]) keys.push_back(id);
      return from_sorted_unique(
          torch::from_blob(keys.data(), {static_cast<int64_t>(keys.size())}, torch::kInt64).clone());
    }
    std::vector<int64_t> keys;
    for (const auto& column : columns) {
      const auto col = column.contiguous();
      const int64_t n = col.numel();
      const int64_t* data = col.data_ptr<int64_t>();
      // Per-chunk hash sets in parallel, merged afterwards: ids repeat a lot
      // (views per item), so the sets stay small.
      const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads() * 4, n / 65536));
      std::vector<detail::IdHashMap> sets(static_cast<size_t>(chunks));
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          detail::IdHashMap set(1024);
          for (int64_t i = n * k / chunks, hi = n * (k + 1) / chunks; i < hi; ++i) set.insert(data[i], 0);
          sets[static_cast<size_t>(k)] = std::move(set);
        }
      });
      for (auto& set : sets) set.for_each_key([&](int64_t key) { keys.push_back(key); });
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return from_sorted_unique(
        torch::from_blob(keys.data(), {static_cast<int64_t>(keys.size())}, torch::kInt64).clone());
  }

  /// The vocabulary whose dense index i is raw_ids[i]; raw_ids must be
  /// strictly increasing and non-negative (what raw_ids() returns).
  static IdMap from_sorted_unique(torch::Tensor raw_ids) {
    detail::check_id_tensor(raw_ids, "IdMap raw_ids");
    IdMap map;
    map.raw_ids_ = raw_ids.contiguous();
    const int64_t n = map.raw_ids_.numel();
    const int64_t* ids = map.raw_ids_.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || (i > 0 && ids[i] <= ids[i - 1]))
        throw TensorError(detail::concat("IdMap raw_ids: expected strictly increasing non-negative ids, "
                                         "got ", ids[i], " at position ", i));
    const int64_t max_id = n > 0 ? ids[n - 1] : -1;
    if (max_id < detail::kDirectLimit && max_id < 4 * n + (int64_t{1} << 20)) {
      // Dense enough: a direct table, one load per lookup.
      map.direct_.assign(static_cast<size_t>(max_id + 1), -1);
      for (int64_t i = 0; i < n; ++i) map.direct_[static_cast<size_t>(ids[i])] = static_cast<int32_t>(i);
    } else {
      map.index_ = detail::IdHashMap(n);
      for (int64_t i = 0; i < n; ++i) map.index_.insert(ids[i], i);
    }
    return map;
  }

  int64_t size() const noexcept { return raw_ids_.numel(); }

  /// Raw id of each dense index, ascending; [size()] int64.
  const torch::Tensor& raw_ids() const noexcept { return raw_ids_; }

  /// Dense index of `raw`, or -1 when it is not in the vocabulary.
  int64_t index_of(int64_t raw) const noexcept {
    if (!direct_.empty() || raw_ids_.numel() == 0)
      return raw >= 0 && raw < static_cast<int64_t>(direct_.size()) ? direct_[static_cast<size_t>(raw)] : -1;
    return index_.find(raw);
  }

  /// Dense indices of a tensor of raw ids; -1 where an id is unknown.
  torch::Tensor encode(const torch::Tensor& raw) const {
    detail::check_id_tensor(raw, "IdMap::encode input");
    auto out = raw.contiguous().clone();
    encode_(out);
    return out;
  }

  /// encode, in place: overwrites raw ids with dense indices (saves a copy
  /// of large id columns that are not needed afterwards).
  torch::Tensor& encode_(torch::Tensor& raw) const {
    detail::check_id_tensor(raw, "IdMap::encode_ input");
    if (!raw.is_contiguous()) throw TensorError("IdMap::encode_: the tensor must be contiguous");
    int64_t* data = raw.data_ptr<int64_t>();
    at::parallel_for(0, raw.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) data[i] = index_of(data[i]);
    });
    return raw;
  }

  /// Raw ids of dense indices; -1 (unknown) stays -1, anything else outside
  /// [0, size()) throws.
  torch::Tensor decode(const torch::Tensor& dense) const {
    detail::check_id_tensor(dense, "IdMap::decode input");
    if (dense.numel() > 0) {
      const int64_t lo = dense.min().item<int64_t>(), hi = dense.max().item<int64_t>();
      if (lo < -1 || hi >= size())
        throw TensorError(detail::concat("IdMap::decode: index out of range [-1, ", size(),
                                         "): found ", lo < -1 ? lo : hi));
    }
    auto padded = torch::cat({raw_ids_, torch::full({1}, -1, torch::kInt64)});
    // Index -1 picks the appended -1: unknown stays unknown.
    return padded.index_select(0, torch::where(dense < 0, torch::full_like(dense, size()), dense));
  }

 private:
  torch::Tensor raw_ids_;
  std::vector<int32_t> direct_;  // raw id -> dense index, when ids are dense enough
  detail::IdHashMap index_;      // otherwise
};

} // namespace rectrain
