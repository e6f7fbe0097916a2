#pragma once
// Raw ids (non-negative integers below 2^63, as in the files) <-> dense
// indices 0..n-1 (what embedding tables are indexed by). Dense order is
// ascending raw id, so a vocabulary is the same whatever order rows come in.

#include <rectrain/core/error.hpp>

#include <torch/torch.h>

#include <algorithm>
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

inline void check_id_tensor(const torch::Tensor& t, const char* name) {
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kInt64 ||
      !t.device().is_cpu())
    throw TensorError(concat(name, ": expected a 1-D int64 CPU tensor, got ",
                             t.defined() ? t.toString() : std::string("undefined"),
                             t.defined() ? concat(" of shape ", t.sizes()) : std::string()));
}

} // namespace detail

/// A vocabulary of raw ids with dense indices in ascending raw order.
class IdMap {
 public:
  IdMap() : raw_ids_(torch::empty({0}, torch::kInt64)) {}

  /// Every distinct id found in `columns` (1-D int64 CPU tensors of raw ids,
  /// each >= 0; a negative value throws, naming the tensor and position).
  static IdMap from_ids(const std::vector<torch::Tensor>& columns) {
    std::vector<int64_t> keys;
    for (size_t c = 0; c < columns.size(); ++c) {
      const auto& column = columns[c];
      detail::check_id_tensor(column, "IdMap::from_ids column");
      const auto col = column.contiguous();
      const int64_t n = col.numel();
      const int64_t* data = col.data_ptr<int64_t>();
      // Per-chunk hash sets in parallel, merged afterwards: ids repeat a lot
      // (views per item), so the sets stay small.
      const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(
                                   at::get_num_threads() * 4, n / 65536));
      std::vector<detail::IdHashMap> sets(chunks);
      std::vector<int64_t> negative_at(chunks, -1);
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t lo = n * k / chunks, hi = n * (k + 1) / chunks;
          detail::IdHashMap set(1024);
          for (int64_t i = lo; i < hi; ++i) {
            if (data[i] < 0) {
              negative_at[k] = i;
              break;
            }
            set.insert(data[i], 0);
          }
          sets[k] = std::move(set);
        }
      });
      for (int64_t k = 0; k < chunks; ++k)
        if (negative_at[k] >= 0)
          throw TensorError(detail::concat(
              "IdMap::from_ids: column ", c, " holds a negative id ",
              data[negative_at[k]], " at position ", negative_at[k]));
      for (auto& set : sets) set.for_each_key([&](int64_t key) { keys.push_back(key); });
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return from_sorted_unique(torch::from_blob(keys.data(), {static_cast<int64_t>(keys.size())},
                                               torch::kInt64).clone());
  }

  /// The vocabulary whose dense index i is raw_ids[i]; raw_ids must be
  /// strictly increasing and non-negative (what raw_ids() returns).
  static IdMap from_sorted_unique(torch::Tensor raw_ids) {
    detail::check_id_tensor(raw_ids, "IdMap raw_ids");
    IdMap map;
    map.raw_ids_ = raw_ids.contiguous();
    const int64_t n = map.raw_ids_.numel();
    const int64_t* ids = map.raw_ids_.data_ptr<int64_t>();
    map.index_ = detail::IdHashMap(n);
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || (i > 0 && ids[i] <= ids[i - 1]))
        throw TensorError(detail::concat("IdMap raw_ids: expected strictly increasing non-negative ids, "
                                         "got ", ids[i], " at position ", i));
      map.index_.insert(ids[i], i);
    }
    return map;
  }

  int64_t size() const noexcept { return raw_ids_.numel(); }

  /// Raw id of each dense index, ascending; [size()] int64.
  const torch::Tensor& raw_ids() const noexcept { return raw_ids_; }

  /// Dense index of `raw`, or -1 when it is not in the vocabulary.
  int64_t index_of(int64_t raw) const noexcept { return index_.find(raw); }

  /// Dense indices of a tensor of raw ids; -1 where an id is unknown.
  torch::Tensor encode(const torch::Tensor& raw) const {
    detail::check_id_tensor(raw, "IdMap::encode input");
    const auto in = raw.contiguous();
    auto out = torch::empty_like(in);
    const int64_t* src = in.data_ptr<int64_t>();
    int64_t* dst = out.data_ptr<int64_t>();
    at::parallel_for(0, in.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dst[i] = index_.find(src[i]);
    });
    return out;
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
  detail::IdHashMap index_;
};

} // namespace rectrain
