#pragma once
// ViewHistory: what each user did before a view, and what was known of each
// item then, without leakage. Built once from the known interactions (row
// order is time order within a user, as in interactions.csv); a query is a
// (user or item, time) pair, where time t means "the known views with row
// index < t": a training row r asks with t = r (strictly earlier views, never
// itself or a later one), a candidate or held-out row with t = num_rows()
// (everything known).
//
// Every view falls in one reaction class: liked, disliked, long watch
// (neither, and timespent >= the long_watch threshold) or other. Per
// (user, class) and (item, class) the rows are kept sorted, so a query is
// a binary search: the last `window` items of each class, the counts per
// class, which give smoothed rates, and the mean log1p(timespent) (running
// sums per segment).
//
//   ViewHistory history(train, ViewHistoryOptions().window(16).long_watch(median_neutral_timespent(train)));
//   auto items = history.windows(users, times);          // [n, 4, 16] item indices, -1 = none
//   auto stats = history.item_statistics(items, times);  // [n, 6]: log1p(views), 4 rates, mean log1p(timespent)
//
// Memory: 20 bytes per known view (int32 rows and items, float running sums
// of log1p(timespent)), besides offsets per user and item.

#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/view_rows.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace rectrain {

/// The reaction classes, in the order of ViewHistory's class dimension.
enum class Reaction : int8_t { Liked = 0, Disliked = 1, LongWatch = 2, Other = 3 };

struct ViewHistoryOptions {
  /// Items kept per (row, class) by windows(): the most recent first.
  TORCH_ARG(int64_t, window) = 16;
  /// A view neither liked nor disliked with timespent >= this is a long
  /// watch. Infinity (the default): no view is; median_neutral_timespent()
  /// gives a dataset's median.
  TORCH_ARG(double, long_watch) = std::numeric_limits<double>::infinity();
  /// Rates are count / (views + smoothing): shrunk towards 0 when few views
  /// are known (no global rate enters a row's features).
  TORCH_ARG(double, smoothing) = 5.0;
  /// Item statistics of a training row (time < num_rows()): 0, from every
  /// user's views strictly before it; K >= 2, out of fold: from all views
  /// of the users outside its user's fold (users split into K folds by a
  /// hash), so it sees about as much of the item as a candidate does.
  TORCH_ARG(int64_t, item_folds) = 0;
};

/// The median timespent of the views neither liked nor disliked (+inf when
/// there are none): a long_watch threshold for ViewHistoryOptions.
inline double median_neutral_timespent(const Dataset& ds) {
  const auto& i = ds.interactions;
  const auto neutral = (i["like"] == 0) & (i["dislike"] == 0);
  const auto t = i["timespent"].masked_select(neutral).to(torch::kFloat64);
  if (t.numel() == 0) return std::numeric_limits<double>::infinity();
  return std::get<0>(t.sort()).index({(t.numel() - 1) / 2}).item<double>();
}

class ViewHistory {
 public:
  static constexpr int64_t kReactions = 4;
  /// Width of user_statistics() and item_statistics(): log1p(views), one
  /// rate per reaction class, the mean log1p(timespent).
  static constexpr int64_t kStatistics = 2 + kReactions;

  ViewHistory() = default;

  /// `ds`'s interactions (user, item, like, dislike, timespent).
  ViewHistory(const Dataset& ds, ViewHistoryOptions options = {})
      : ViewHistory(ds.interactions["user"], ds.interactions["item"], ds.interactions["like"],
                    ds.interactions["dislike"], ds.interactions["timespent"], ds.num_users(), ds.num_items(),
                    std::move(options)) {}

  /// users, items: [N] dense indices in [0, num_users) and [0, num_items);
  /// like, dislike: [N] 0/1; timespent: [N].
  ViewHistory(const torch::Tensor& users, const torch::Tensor& items, const torch::Tensor& like,
              const torch::Tensor& dislike, const torch::Tensor& timespent, int64_t num_users, int64_t num_items,
              ViewHistoryOptions options = {})
      : options_(std::move(options)), num_users_(num_users), num_items_(num_items) {
    if (options_.window() < 1)
      throw Error(detail::concat("ViewHistory: window must be >= 1, got ", options_.window()));
    if (!(options_.smoothing() >= 0))
      throw Error(detail::concat("ViewHistory: smoothing must be >= 0, got ", options_.smoothing()));
    if (std::isnan(options_.long_watch())) throw Error("ViewHistory: long_watch is NaN");
    if (options_.item_folds() < 0 || options_.item_folds() == 1)
      throw Error(detail::concat("ViewHistory: item_folds must be 0 or >= 2, got ", options_.item_folds()));
    const auto checked = detail::checked_view_indices("ViewHistory", users, items, num_users, num_items);
    const torch::Tensor &u = checked.users, &it = checked.items;
    const int64_t n = u.numel();
    for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor*>{"like", &like}, {"dislike", &dislike},
                                  {"timespent", &timespent}})
      if (!t->defined() || t->dim() != 1 || t->numel() != n)
        throw TensorError(detail::concat("ViewHistory: ", name, " must be [", n, "] like users, got ",
                                         detail::shape_of(*t)));
    num_rows_ = n;
    const auto liked = like.to(torch::kBool), disliked = dislike.to(torch::kBool) & ~liked;
    // One double copy of timespent: compared with the threshold, then
    // turned into log1p(timespent) in place (copy=true: never the caller's).
    auto watch = timespent.to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true).contiguous();
    const auto long_watch = ~liked & ~disliked & (watch >= options_.long_watch());
    reactions_ = torch::full({n}, static_cast<int8_t>(Reaction::Other), torch::kInt8);
    reactions_.masked_fill_(long_watch, static_cast<int8_t>(Reaction::LongWatch));
    reactions_.masked_fill_(disliked, static_cast<int8_t>(Reaction::Disliked));
    reactions_.masked_fill_(liked, static_cast<int8_t>(Reaction::Liked));
    const int64_t* up = u.data_ptr<int64_t>();
    const int64_t* ip = it.data_ptr<int64_t>();
    const int8_t* rp = reactions_.data_ptr<int8_t>();
    watch.clamp_min_(0).log1p_();
    const double* wp = watch.data_ptr<double>();
    // Grouped by (key, class), stable: each segment stays in row order.
    auto bucket = [&](const int64_t* key, int64_t keys, std::vector<int64_t>& offsets, std::vector<int32_t>& rows,
                      std::vector<int32_t>* payload, std::vector<float>& watch_sums) {
      detail::group_rows_by_key(
          n, keys * kReactions, [key, rp](int64_t r) { return key[r] * kReactions + rp[r]; }, offsets, rows);
      if (payload) {
        payload->resize(static_cast<size_t>(n));
        for (size_t at = 0; at < static_cast<size_t>(n); ++at) (*payload)[at] = static_cast<int32_t>(ip[rows[at]]);
      }
      // Running sums within each segment, in double, stored as float.
      watch_sums.resize(static_cast<size_t>(n));
      for (size_t s = 0; s + 1 < offsets.size(); ++s) {
        double sum = 0;
        for (auto j = offsets[s]; j < offsets[s + 1]; ++j) {
          sum += wp[rows[static_cast<size_t>(j)]];
          watch_sums[static_cast<size_t>(j)] = static_cast<float>(sum);
        }
      }
    };
    bucket(up, num_users, user_offsets_, user_rows_, &user_items_, user_watch_);
    bucket(ip, num_items, item_offsets_, item_rows_, nullptr, item_watch_);
    if (options_.item_folds() >= 2) {
      // Per fold and item: views of each class and the sum of log1p(timespent).
      const int64_t k = options_.item_folds();
      fold_totals_.assign(static_cast<size_t>(k * num_items * kFoldWidth), 0.0);
      for (int64_t r = 0; r < n; ++r) {
        double* cell = &fold_totals_[static_cast<size_t>((fold_of(up[r]) * num_items + ip[r]) * kFoldWidth)];
        cell[rp[r]] += 1;
        cell[kReactions] += wp[r];
      }
    }
  }

  const ViewHistoryOptions& options() const noexcept { return options_; }
  /// Known views: the time of a query that sees them all.
  int64_t num_rows() const noexcept { return num_rows_; }
  int64_t num_users() const noexcept { return num_users_; }
  int64_t num_items() const noexcept { return num_items_; }
  /// [N] int8 reaction class of every known view.
  const torch::Tensor& reactions() const noexcept { return reactions_; }

  /// [n, 4, window] int64: per query (user, time) and class, the items of
  /// the user's last `window` views of that class before `time`, the most
  /// recent first, -1 where there are fewer (and for users < 0).
  torch::Tensor windows(const torch::Tensor& users, const torch::Tensor& times) const {
    const auto [u, t] = queries("windows", users, times);
    const int64_t q = u.numel(), w = options_.window();
    auto out = torch::full({q, kReactions, w}, -1, torch::kInt64);
    const int64_t* up = u.data_ptr<int64_t>();
    const int64_t* tp = t.data_ptr<int64_t>();
    int64_t* op = out.data_ptr<int64_t>();
    at::parallel_for(0, q, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (up[i] < 0 || up[i] >= num_users_) continue;
        for (int64_t c = 0; c < kReactions; ++c) {
          const auto [first, last] = segment(user_offsets_, user_rows_, up[i] * kReactions + c, tp[i]);
          int64_t* dst = op + (i * kReactions + c) * w;
          for (int64_t j = last - 1, k = 0; j >= first && k < w; --j, ++k)
            dst[k] = user_items_[static_cast<size_t>(j)];
        }
      }
    });
    return out;
  }

  /// [n, 4] int64: per query (user, time), the user's views of each class
  /// before `time` (0 for users < 0).
  torch::Tensor user_counts(const torch::Tensor& users, const torch::Tensor& times) const {
    return counts("user_counts", user_offsets_, user_rows_, num_users_, users, times);
  }
  /// [n, 4] int64: per query (item, time), the item's views of each class
  /// before `time`, over all users (0 for items < 0).
  torch::Tensor item_counts(const torch::Tensor& items, const torch::Tensor& times) const {
    return counts("item_counts", item_offsets_, item_rows_, num_items_, items, times);
  }

  /// [n, 6] float32: log1p(views before `time`), per class
  /// count / (views + smoothing), and the mean log1p(timespent) of those
  /// views (0 with none).
  torch::Tensor user_statistics(const torch::Tensor& users, const torch::Tensor& times) const {
    return statistics("user_statistics", user_offsets_, user_rows_, user_watch_, num_users_, users, times);
  }
  /// The same for items, over every user's views; with item_folds, a
  /// training row's from the other folds' users (`users`: each query's
  /// user, needed then).
  torch::Tensor item_statistics(const torch::Tensor& items, const torch::Tensor& times,
                                const torch::Tensor& users = {}) const {
    if (options_.item_folds() < 2)
      return statistics("item_statistics", item_offsets_, item_rows_, item_watch_, num_items_, items, times);
    const auto all = torch::full({items.numel()}, num_rows_, torch::kInt64);
    torch::Tensor watch_sum;
    auto c = counts("item_statistics", item_offsets_, item_rows_, num_items_, items, all, &item_watch_, &watch_sum)
                 .to(torch::kFloat64);
    const auto [k, t] = queries("item_statistics", items, times);
    if (!users.defined() || users.numel() != items.numel())
      throw TensorError(detail::concat("ViewHistory::item_statistics: out-of-fold statistics need each query's user ([",
                                       items.numel(), "]), got ", detail::type_and_shape_of(users)));
    const auto u = users.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* kp = k.data_ptr<int64_t>();
    const int64_t* tp = t.data_ptr<int64_t>();
    const int64_t* up = u.data_ptr<int64_t>();
    double* cp = c.data_ptr<double>();
    double* sp = watch_sum.data_ptr<double>();
    for (int64_t i = 0; i < k.numel(); ++i) {
      if (tp[i] >= num_rows_ || kp[i] < 0 || kp[i] >= num_items_ || up[i] < 0) continue;  // candidates: every view
      const double* own = &fold_totals_[static_cast<size_t>((fold_of(up[i]) * num_items_ + kp[i]) * kFoldWidth)];
      for (int64_t c2 = 0; c2 < kReactions; ++c2) cp[i * kReactions + c2] -= own[c2];
      sp[i] -= own[kReactions];
    }
    return rates(c.to(torch::kFloat32), watch_sum);
  }

  /// The fold of `user` for out-of-fold item statistics.
  int64_t fold_of(int64_t user) const {
    return static_cast<int64_t>(detail::splitmix64(static_cast<uint64_t>(user)) % static_cast<uint64_t>(options_.item_folds()));
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> queries(const char* what, const torch::Tensor& keys,
                                                  const torch::Tensor& times) const {
    if (!keys.defined() || keys.dim() != 1 || at::isFloatingType(keys.scalar_type()))
      throw TensorError(detail::concat("ViewHistory::", what, ": expected [n] integer indices, got ",
                                       detail::type_and_shape_of(keys)));
    if (!times.defined() || times.dim() != 1 || times.numel() != keys.numel() ||
        at::isFloatingType(times.scalar_type()))
      throw TensorError(detail::concat("ViewHistory::", what, ": times must be [", keys.numel(),
                                       "] integers, got ", detail::type_and_shape_of(times)));
    return {keys.to(torch::kCPU, torch::kInt64).contiguous(), times.to(torch::kCPU, torch::kInt64).contiguous()};
  }

  /// [first, last) of segment `s`'s rows that are < time. Every row is
  /// below num_rows(): a query that sees all views needs no search.
  std::pair<int64_t, int64_t> segment(const std::vector<int64_t>& offsets, const std::vector<int32_t>& rows, int64_t s,
                                      int64_t time) const {
    const auto first = offsets[static_cast<size_t>(s)], end = offsets[static_cast<size_t>(s) + 1];
    if (time >= num_rows_) return {first, end};
    const auto bound = std::lower_bound(rows.begin() + first, rows.begin() + end, static_cast<int32_t>(std::max<int64_t>(time, 0)));
    return {first, static_cast<int64_t>(bound - rows.begin())};
  }

  /// Per query, the views of each class before its time, and (with
  /// `watch_sum`) the sum of their log1p(timespent).
  torch::Tensor counts(const char* what, const std::vector<int64_t>& offsets, const std::vector<int32_t>& rows,
                       int64_t keys, const torch::Tensor& index, const torch::Tensor& times,
                       const std::vector<float>* watch = nullptr, torch::Tensor* watch_sum = nullptr) const {
    const auto [k, t] = queries(what, index, times);
    const int64_t q = k.numel();
    auto out = torch::zeros({q, kReactions}, torch::kInt64);
    if (watch_sum) *watch_sum = torch::zeros({q}, torch::kFloat64);
    double* sp = watch_sum ? watch_sum->data_ptr<double>() : nullptr;
    const int64_t* kp = k.data_ptr<int64_t>();
    const int64_t* tp = t.data_ptr<int64_t>();
    int64_t* op = out.data_ptr<int64_t>();
    at::parallel_for(0, q, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (kp[i] < 0 || kp[i] >= keys) continue;
        for (int64_t c = 0; c < kReactions; ++c) {
          const auto [first, last] = segment(offsets, rows, kp[i] * kReactions + c, tp[i]);
          op[i * kReactions + c] = last - first;
          if (sp && last > first) sp[i] += (*watch)[static_cast<size_t>(last - 1)];
        }
      }
    });
    return out;
  }

  torch::Tensor statistics(const char* what, const std::vector<int64_t>& offsets, const std::vector<int32_t>& rows,
                           const std::vector<float>& watch, int64_t keys, const torch::Tensor& index,
                           const torch::Tensor& times) const {
    torch::Tensor watch_sum;
    return rates(counts(what, offsets, rows, keys, index, times, &watch, &watch_sum).to(torch::kFloat32), watch_sum);
  }

  torch::Tensor rates(const torch::Tensor& c, const torch::Tensor& watch_sum) const {
    const auto views = c.sum(1, true);
    const auto mean_watch = (watch_sum.to(torch::kFloat32).unsqueeze(1) / views.clamp_min(1));
    return torch::cat({views.log1p(), c / (views + options_.smoothing()).clamp_min(1e-12), mean_watch}, 1);
  }

  ViewHistoryOptions options_;
  int64_t num_rows_ = 0, num_users_ = 0, num_items_ = 0;
  torch::Tensor reactions_ = torch::empty({0}, torch::kInt8);
  std::vector<int64_t> user_offsets_{0}, item_offsets_{0};
  std::vector<int32_t> user_rows_, user_items_, item_rows_;
  std::vector<float> user_watch_, item_watch_;  ///< running sums of log1p(timespent) per segment
  static constexpr int64_t kFoldWidth = kReactions + 1;
  std::vector<double> fold_totals_;  ///< [folds, items, 4 classes + watch sum] (item_folds)
};

} // namespace rectrain
