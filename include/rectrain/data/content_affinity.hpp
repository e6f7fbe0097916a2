#pragma once
// ContentAffinity: how much a user's watch time follows an item's content
// vector, as a feature for each (user, item, time). Per user, a ridge
// regression of log1p(timespent) - log1p(duration) (the log watch ratio)
// on the items' content vectors, centred, with an unpenalised intercept,
// fitted in closed form: one ALS half-step with the content vectors as the
// fixed item factors and watch time, not a view, as the response. Every
// view carries watch time, likes are rare, so the fit sees far more of a
// user's taste than the like history does.
//
// No leakage: a user's fits are made after their first `first_fit` views
// and then each time their count doubles (8, 16, 32, ...), plus one on all
// of them. A query (user, item, time) reads the last fit made from views
// strictly before `time` (a row of the interactions), which covers at
// least half of them; a query that sees every view reads the fit on all.
// Memory: D floats per fit, about log2(views / first_fit) + 1 fits per user.
//
//   ContentAffinity affinity(train);  // train.items["embedding"] as content
//   auto f = affinity.features(users, items, rows);  // [n, 2]

#include <rectrain/core/error.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/view_rows.hpp>

#include <ATen/Parallel.h>
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace rectrain {

struct ContentAffinityOptions {
  /// L2 penalty on the content weights (the intercept is not penalised).
  TORCH_ARG(double, ridge) = 10.0;
  /// A user's first fit is made after this many views; later ones each
  /// time the count doubles. Queries with fewer earlier views get zeros.
  TORCH_ARG(int64_t, first_fit) = 8;
};

class ContentAffinity {
 public:
  /// Width of features(): the affinity, log1p(views the fit used).
  static constexpr int64_t kWidth = 2;

  ContentAffinity() = default;

  /// `ds`'s interactions (user, item, timespent) and its items' content
  /// vectors (items["embedding"], D >= 1) and durations.
  explicit ContentAffinity(const Dataset& ds, ContentAffinityOptions options = {})
      : ContentAffinity(ds.interactions["user"], ds.interactions["item"], ds.interactions["timespent"],
                        ds.items["embedding"], ds.items["duration"], ds.num_users(), std::move(options)) {}

  /// users, items: [N] dense indices (users in [0, num_users), items rows of
  /// `content`); timespent: [N]; content: [num_items, D] float; duration:
  /// [num_items] (0 or missing: the response is log1p(timespent)).
  ContentAffinity(const torch::Tensor& users, const torch::Tensor& items, const torch::Tensor& timespent,
                  const torch::Tensor& content, const torch::Tensor& duration, int64_t num_users,
                  ContentAffinityOptions options = {})
      : options_(std::move(options)), num_users_(num_users) {
    if (!(options_.ridge() > 0) || !std::isfinite(options_.ridge()))
      throw Error(detail::concat("ContentAffinity: ridge must be finite and > 0, got ", options_.ridge()));
    if (options_.first_fit() < 1)
      throw Error(detail::concat("ContentAffinity: first_fit must be >= 1, got ", options_.first_fit()));
    if (!content.defined() || content.dim() != 2 || content.size(1) < 1)
      throw TensorError(detail::concat("ContentAffinity: content must be [items, D >= 1], got ",
                                       detail::shape_of(content), " (the data has no content vectors?)"));
    const int64_t num_items = content.size(0);
    const auto checked = detail::checked_view_indices("ContentAffinity", users, items, num_users, num_items);
    const torch::Tensor &u = checked.users, &it = checked.items;
    const int64_t n = u.numel();
    dim_ = content.size(1);
    if (!timespent.defined() || timespent.dim() != 1 || timespent.numel() != n)
      throw TensorError(detail::concat("ContentAffinity: timespent must be [", n, "] like users, got ",
                                       detail::shape_of(timespent)));
    if (!duration.defined() || duration.dim() != 1 || duration.numel() != num_items)
      throw TensorError(detail::concat("ContentAffinity: duration must be [", num_items, "] like content's rows, got ",
                                       detail::shape_of(duration)));
    if (!torch::isfinite(timespent).all().item<bool>() || !torch::isfinite(duration).all().item<bool>())
      throw TensorError("ContentAffinity: timespent or duration has NaN or Inf entries");
    num_rows_ = n;
    const auto c64 = content.to(torch::kFloat64);
    if (!torch::isfinite(c64).all().item<bool>()) throw TensorError("ContentAffinity: content has NaN or Inf entries");
    // Centred by the mean over views, so the intercept is the user's mean
    // response and the weights only carry preferences between items.
    // (Weighted by each item's views, not gathered per view: [N, D] would
    // be 36 GB at the challenge's scale.)
    const auto item_views = torch::bincount(it, {}, num_items).to(torch::kFloat64);
    const auto mean = n > 0 ? item_views.matmul(c64) / static_cast<double>(n) : torch::zeros({dim_}, torch::kFloat64);
    content_ = (c64 - mean).to(torch::kFloat32).contiguous();
    // The response log1p(timespent) - log1p(duration) is formed per view
    // in the fit, not as [N] doubles (1 GB each at the challenge's scale).
    const auto log_duration = duration.to(torch::kFloat64).clamp_min(0).log1p().contiguous();
    const auto watch = timespent.scalar_type() == torch::kFloat64 ? timespent.contiguous()
                                                                   : timespent.to(torch::kFloat32).contiguous();
    const double* watch64 = watch.scalar_type() == torch::kFloat64 ? watch.data_ptr<double>() : nullptr;
    const float* watch32 = watch64 ? nullptr : watch.data_ptr<float>();
    const double* dp = log_duration.data_ptr<double>();

    const int64_t* up = u.data_ptr<int64_t>();
    detail::group_rows_by_key(n, num_users, [up](int64_t r) { return up[r]; }, user_offsets_, user_rows_);
    fit_offsets_.assign(static_cast<size_t>(num_users + 1), 0);
    for (int64_t user = 0; user < num_users; ++user)
      fit_offsets_[static_cast<size_t>(user + 1)] = fit_offsets_[static_cast<size_t>(user)] + fits_of(views_of(user));
    weights_.assign(static_cast<size_t>(fit_offsets_.back() * dim_), 0.0f);

    const int64_t* ip = it.data_ptr<int64_t>();
    const float* cp = content_.data_ptr<float>();
    const int64_t d1 = dim_ + 1;  // the content weights and the intercept
    at::parallel_for(0, num_users, 16, [&](int64_t begin, int64_t end) {
      Eigen::MatrixXd gram(d1, d1), x;
      Eigen::VectorXd moment(d1), y;
      for (int64_t user = begin; user < end; ++user) {
        const int64_t first = user_offsets_[static_cast<size_t>(user)], views = views_of(user);
        gram.setZero();
        moment.setZero();
        int64_t done = 0, fit = fit_offsets_[static_cast<size_t>(user)];
        for (int64_t k = 0; k < fits_of(views); ++k) {
          const int64_t upto = fit_size(k, views);
          // The views since the last fit, as rows [content, 1].
          x.resize(upto - done, d1);
          y.resize(upto - done);
          for (int64_t j = done; j < upto; ++j) {
            const int64_t r = user_rows_[static_cast<size_t>(first + j)];
            const float* c = cp + ip[r] * dim_;
            for (int64_t f = 0; f < dim_; ++f) x(j - done, f) = c[f];
            x(j - done, dim_) = 1.0;
            const double spent = watch64 ? watch64[r] : static_cast<double>(watch32[r]);
            y(j - done) = std::log1p(std::max(spent, 0.0)) - dp[ip[r]];
          }
          gram.noalias() += x.transpose() * x;
          moment.noalias() += x.transpose() * y;
          done = upto;
          Eigen::MatrixXd system = gram;
          system.diagonal().head(dim_).array() += options_.ridge();
          system(dim_, dim_) += 1e-9;  // an intercept-only user stays solvable
          const Eigen::VectorXd w = system.ldlt().solve(moment);
          float* out = &weights_[static_cast<size_t>((fit + k) * dim_)];
          for (int64_t f = 0; f < dim_; ++f) out[f] = static_cast<float>(w(f));
        }
      }
    });
  }

  const ContentAffinityOptions& options() const noexcept { return options_; }
  /// Known views: the time of a query that sees them all.
  int64_t num_rows() const noexcept { return num_rows_; }
  int64_t num_users() const noexcept { return num_users_; }
  int64_t num_items() const noexcept { return content_.size(0); }
  int64_t dim() const noexcept { return dim_; }

  /// [n, 2] float32: per query (user, item, time), the item's centred content
  /// vector dotted with the user's weights from the last fit on views before
  /// `time`, and log1p(the views that fit used); zeros without such a fit
  /// (and for users or items < 0).
  torch::Tensor features(const torch::Tensor& users, const torch::Tensor& items, const torch::Tensor& times) const {
    const int64_t n = users.numel();
    if (users.dim() != 1 || items.dim() != 1 || times.dim() != 1 || items.numel() != n || times.numel() != n)
      throw TensorError(detail::concat("ContentAffinity::features: users, items and times must be [n] alike, got ",
                                       detail::shape_of(users), ", ", detail::shape_of(items), " and ",
                                       detail::shape_of(times)));
    const auto u = users.to(torch::kCPU, torch::kInt64).contiguous();
    const auto it = items.to(torch::kCPU, torch::kInt64).contiguous();
    const auto t = times.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* up = u.data_ptr<int64_t>();
    const int64_t* ip = it.data_ptr<int64_t>();
    const int64_t* tp = t.data_ptr<int64_t>();
    for (int64_t q = 0; q < n; ++q)
      if (up[q] >= num_users_ || ip[q] >= num_items())
        throw TensorError(detail::concat("ContentAffinity::features: query ", q, " has user ", up[q], " and item ",
                                         ip[q], "; known are ", num_users_, " users and ", num_items(), " items"));
    auto out = torch::zeros({n, kWidth}, torch::kFloat32);
    float* op = out.data_ptr<float>();
    const float* cp = content_.data_ptr<float>();
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        if (up[q] < 0 || ip[q] < 0) continue;
        const int64_t first = user_offsets_[static_cast<size_t>(up[q])], views = views_of(up[q]);
        int64_t before = views;  // the user's views before the query's time
        if (tp[q] < num_rows_) {
          const auto* b = user_rows_.data() + first;
          before = std::lower_bound(b, b + views, tp[q]) - b;
        }
        const int64_t k = fit_before(before, views);
        if (k < 0) continue;
        const float* w = &weights_[static_cast<size_t>((fit_offsets_[static_cast<size_t>(up[q])] + k) * dim_)];
        const float* c = cp + ip[q] * dim_;
        float s = 0;
        for (int64_t f = 0; f < dim_; ++f) s += w[f] * c[f];
        op[q * kWidth] = s;
        op[q * kWidth + 1] = std::log1p(static_cast<float>(fit_size(k, views)));
      }
    });
    return out;
  }

 private:
  int64_t views_of(int64_t user) const {
    return user_offsets_[static_cast<size_t>(user + 1)] - user_offsets_[static_cast<size_t>(user)];
  }
  /// Fits of a user with `views` views: at first_fit * 2^k below `views`, and at `views`.
  int64_t fits_of(int64_t views) const {
    if (views < options_.first_fit()) return 0;
    int64_t fits = 1;
    for (int64_t at = options_.first_fit(); at < views; at *= 2) ++fits;
    return fits;
  }
  /// Views fit k of a user with `views` views used.
  int64_t fit_size(int64_t k, int64_t views) const {
    return k + 1 == fits_of(views) ? views : options_.first_fit() << k;
  }
  /// The last fit made from at most `before` of the user's views (-1: none).
  int64_t fit_before(int64_t before, int64_t views) const {
    const int64_t fits = fits_of(views);
    if (fits == 0 || before < options_.first_fit()) return -1;
    if (before >= views) return fits - 1;
    int64_t k = 0;
    while ((options_.first_fit() << (k + 1)) <= before) ++k;
    return k;  // first_fit * 2^k <= before < views, so k < fits - 1
  }

  ContentAffinityOptions options_;
  int64_t num_rows_ = 0, num_users_ = 0, dim_ = 0;
  torch::Tensor content_ = torch::zeros({0, 0}, torch::kFloat32);  ///< centred content vectors
  std::vector<int64_t> user_offsets_, fit_offsets_;
  std::vector<int32_t> user_rows_;  ///< each user's rows, in row order
  std::vector<float> weights_;      ///< [fits, D] content weights of every fit
};

} // namespace rectrain
