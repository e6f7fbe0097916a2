#pragma once
// Synthetic data with the shape of the VK RecSys Challenge 2024 data: views
// per user heavy-tailed between 2 and ~4,500 (mean ~790 at full scale),
// like rate ~4.7%, dislike ~0.04%, share and bookmarks rarer still,
// timespent, ~20k sources, 32-d content embeddings, gender and age. A planted
// latent structure (topics -> sources -> items; users mixing a few topics)
// drives both what users see and what they like, so a model that learns it
// ranks far better than popularity. Deterministic for a seed, whatever the
// thread count: every user draws from its own RNG stream.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/core/text.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace rectrain {

struct SyntheticOptions {
  /// Full challenge scale: 183,404 users, 337,727 items, 19,876 sources,
  /// ~145M views. Smaller scales shrink all three and cap histories at a
  /// quarter of the items, so small sets stay valid (no repeated views).
  static SyntheticOptions at_scale(double scale) {
    if (!(scale > 0) || scale > 1)
      throw Error(detail::concat("synthetic scale must be in (0, 1], got ", scale));
    SyntheticOptions o;
    o.users(std::max<int64_t>(8, std::llround(183404 * scale)))
        .items(std::max<int64_t>(80, std::llround(337727 * scale)))
        .sources(std::max<int64_t>(4, std::llround(19876 * scale)));
    o.max_history(std::min<int64_t>(4500, o.items() / 4));
    return o;
  }
  TORCH_ARG(int64_t, users) = 183404;
  TORCH_ARG(int64_t, items) = 337727;
  TORCH_ARG(int64_t, sources) = 19876;
  TORCH_ARG(int64_t, min_history) = 2;
  TORCH_ARG(int64_t, max_history) = 4500;
  /// Mean views per user before the cap (790 gives ~145M rows at full scale).
  TORCH_ARG(double, mean_history) = 790;
  TORCH_ARG(int64_t, embedding_dim) = 32;
  TORCH_ARG(double, like_rate) = 0.047;
  TORCH_ARG(double, dislike_rate) = 0.0004;
  TORCH_ARG(double, share_rate) = 0.0003;
  TORCH_ARG(double, bookmark_rate) = 0.00025;
  /// Users with at least this many views get their last 20 as candidates.
  TORCH_ARG(int64_t, candidate_min_history) = 40;
  TORCH_ARG(int64_t, candidates_per_user) = 20;
  TORCH_ARG(uint64_t, seed) = 42;
};

/// What generate_synthetic wrote.
struct SyntheticSummary {
  int64_t users = 0, items = 0, sources = 0;
  int64_t interactions = 0;  ///< rows in interactions.csv
  int64_t candidates = 0;    ///< rows in candidates.csv
  double like_rate = 0, dislike_rate = 0, share_rate = 0, bookmark_rate = 0;
};

namespace detail {

constexpr int kLatent = 16;
constexpr int kTopics = 32;
using Latent = std::array<float, kLatent>;

inline float dot(const Latent& a, const Latent& b) {
  float s = 0;
  for (int k = 0; k < kLatent; ++k) s += a[static_cast<size_t>(k)] * b[static_cast<size_t>(k)];
  return s;
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// Index drawn from a cumulative weight table.
inline int64_t draw(const std::vector<double>& cdf, FastRng& rng) {
  const double x = rng.uniform() * cdf.back();
  return std::upper_bound(cdf.begin(), cdf.end(), x) - cdf.begin();
}

/// Offset a such that the mean of sigmoid(a + x) over `xs` is `rate`.
inline double calibrate(const std::vector<float>& xs, double rate) {
  double lo = -40, hi = 20;
  for (int it = 0; it < 60; ++it) {
    const double mid = (lo + hi) / 2;
    double mean = 0;
    for (float x : xs) mean += sigmoid(mid + x);
    mean /= static_cast<double>(xs.size());
    (mean < rate ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

} // namespace detail

namespace detail {
/// The dataset's four files, written into `dir`.
inline SyntheticSummary write_synthetic(const std::string& dir, const SyntheticOptions& o);
}

/// Writes interactions.csv, users.csv, items.csv and candidates.csv (with
/// targets) into `dir`, all at once: they are written beside it and put in
/// place in one rename, so a run killed part-way leaves the previous
/// dataset whole (or none), never old files beside new ones. An existing
/// `dir` may hold only dataset files (interactions, users, items,
/// candidates as .csv or .pt), which the new dataset replaces.
inline SyntheticSummary generate_synthetic(const std::string& dir, const SyntheticOptions& o) {
  SyntheticSummary summary;
  auto dataset_file = [](const std::string& name) {
    for (const char* stem : {"interactions", "users", "items", "candidates"})
      for (const char* ext : {".csv", ".pt"})
        if (name == std::string(stem) + ext) return true;
    return false;
  };
  write_directory_atomically(dir, [&](const std::string& staging) { summary = detail::write_synthetic(staging, o); },
                             dataset_file);
  return summary;
}

namespace detail {

/// The synthetic world behind generate_synthetic, built step by step: the
/// steps run in this order (each draws from the streams the one before
/// left), and each file is written from the state they built.
struct SyntheticWorld {
  explicit SyntheticWorld(const SyntheticOptions& options)
      : o(options), U(o.users()), I(o.items()), S(o.sources()), D(o.embedding_dim()),
        world(stream_seed(o.seed(), 1)) {}

  /// Topics, sources (Zipf-sized), items of a source's topic, and the
  /// projection the content embeddings are made with.
  void make_items() {
    topic.resize(kTopics);
    for (auto& t : topic)
      for (auto& x : t) x = static_cast<float>(world.normal() / std::sqrt(double(kLatent)) * 1.6);
    std::vector<int> source_topic(static_cast<size_t>(S));
    std::vector<Latent> source_vec(static_cast<size_t>(S));
    std::vector<double> source_cdf(static_cast<size_t>(S));
    double acc = 0;
    for (int64_t s = 0; s < S; ++s) {
      source_topic[static_cast<size_t>(s)] = static_cast<int>(world.below(kTopics));
      for (int k = 0; k < kLatent; ++k)
        source_vec[static_cast<size_t>(s)][static_cast<size_t>(k)] =
            topic[static_cast<size_t>(source_topic[static_cast<size_t>(s)])][static_cast<size_t>(k)] +
            static_cast<float>(0.35 * world.normal() / std::sqrt(double(kLatent)));
      acc += 1.0 / std::pow(static_cast<double>(s + 1), 0.9);  // Zipf-sized sources
      source_cdf[static_cast<size_t>(s)] = acc;
    }
    item_source.resize(static_cast<size_t>(I));
    item_vec.resize(static_cast<size_t>(I));
    item_quality.resize(static_cast<size_t>(I));
    duration.resize(static_cast<size_t>(I));
    std::vector<double> popularity(static_cast<size_t>(I));
    topic_items.resize(kTopics);
    topic_cdf.resize(kTopics);
    global_cdf.resize(static_cast<size_t>(I));
    acc = 0;
    for (int64_t i = 0; i < I; ++i) {
      const auto s = static_cast<int32_t>(draw(source_cdf, world));
      item_source[static_cast<size_t>(i)] = s;
      for (int k = 0; k < kLatent; ++k)
        item_vec[static_cast<size_t>(i)][static_cast<size_t>(k)] =
            source_vec[static_cast<size_t>(s)][static_cast<size_t>(k)] +
            static_cast<float>(0.45 * world.normal() / std::sqrt(double(kLatent)));
      item_quality[static_cast<size_t>(i)] = static_cast<float>(1.2 * world.normal());
      // Good items get shown more (as a recommender would): popularity and
      // like propensity are correlated, as in real logs.
      popularity[static_cast<size_t>(i)] =
          std::exp(1.0 * world.normal() + 1.5 * item_quality[static_cast<size_t>(i)]);
      duration[static_cast<size_t>(i)] =
          static_cast<float>(std::clamp(std::exp(3.2 + 0.8 * world.normal()), 3.0, 600.0));
      acc += popularity[static_cast<size_t>(i)];
      global_cdf[static_cast<size_t>(i)] = acc;
      const int t = source_topic[static_cast<size_t>(s)];
      topic_items[static_cast<size_t>(t)].push_back(static_cast<int32_t>(i));
      topic_cdf[static_cast<size_t>(t)].push_back(
          (topic_cdf[static_cast<size_t>(t)].empty() ? 0 : topic_cdf[static_cast<size_t>(t)].back()) +
          popularity[static_cast<size_t>(i)]);
    }
    // Content embedding: a fixed random projection of the latent vector plus noise.
    projection.resize(static_cast<size_t>(D * kLatent));
    for (auto& p : projection) p = static_cast<float>(world.normal() / std::sqrt(double(kLatent)));

  }

  /// Users: history lengths 2 * R^(u^a), a solved for the requested mean;
  /// a mixture of 1-3 topics, bias, gender and age tied to the latent.
  void make_users() {
    const double ratio = static_cast<double>(4500) / 2.0;
    auto mean_for = [&](double a) {
      double m = 0;
      for (int k = 0; k < 4000; ++k) m += 2.0 * std::pow(ratio, std::pow((k + 0.5) / 4000.0, a));
      return m / 4000;
    };
    double lo_a = 0.05, hi_a = 20;
    for (int it = 0; it < 60; ++it) {
      const double mid = (lo_a + hi_a) / 2;
      (mean_for(mid) > o.mean_history() ? lo_a : hi_a) = mid;
    }
    const double shape = (lo_a + hi_a) / 2;

    user_vec.resize(static_cast<size_t>(U));
    user_topics.resize(static_cast<size_t>(U));
    user_bias.resize(static_cast<size_t>(U));
    age.resize(static_cast<size_t>(U));
    gender.resize(static_cast<size_t>(U));
    history.resize(static_cast<size_t>(U));
    offset.assign(static_cast<size_t>(U + 1), 0);
    for (int64_t u = 0; u < U; ++u) {
      FastRng rng(stream_seed(o.seed(), 2, static_cast<uint64_t>(u)));
      auto& v = user_vec[static_cast<size_t>(u)];
      v.fill(0);
      for (int m = 0; m < 3; ++m) {
        const int t = static_cast<int>(rng.below(kTopics));
        user_topics[static_cast<size_t>(u)][static_cast<size_t>(m)] = t;
        const float w = m == 0 ? 0.7f : 0.3f;
        for (int k = 0; k < kLatent; ++k)
          v[static_cast<size_t>(k)] += w * topic[static_cast<size_t>(t)][static_cast<size_t>(k)];
      }
      for (auto& x : v) x += static_cast<float>(0.3 * rng.normal() / std::sqrt(double(kLatent)));
      user_bias[static_cast<size_t>(u)] = static_cast<float>(0.5 * rng.normal());
      gender[static_cast<size_t>(u)] =
          rng.uniform() < 0.08 ? 0 : (v[0] + 0.3 * rng.normal() > 0 ? 1 : 2);
      age[static_cast<size_t>(u)] =
          rng.uniform() < 0.05
              ? 0.0f
              : static_cast<float>(std::clamp(std::round(35 + 20 * v[1] + 8 * rng.normal()), 14.0, 80.0));
      const double len = 2.0 * std::pow(ratio, std::pow(rng.uniform(), shape));
      history[static_cast<size_t>(u)] =
          std::clamp<int64_t>(static_cast<int64_t>(len), o.min_history(), o.max_history());
      offset[static_cast<size_t>(u + 1)] = offset[static_cast<size_t>(u)] + history[static_cast<size_t>(u)];
    }
  }

    // One exposure as the views below draw it: 35% from the user's topics,
    // the rest from the global popularity.
    int64_t expose(int64_t u, FastRng& rng) const {
      if (rng.uniform() < 0.35) {
        const int t = user_topics[static_cast<size_t>(u)][rng.below(3)];
        const auto& list = topic_items[static_cast<size_t>(t)];
        if (!list.empty()) return list[static_cast<size_t>(draw(topic_cdf[static_cast<size_t>(t)], rng))];
      }
      return draw(global_cdf, rng);
    }


  /// Views, per user in parallel, drawn by expose(), never the same item
  /// twice for one user.
  void draw_views() {
    const int64_t rows = offset.back();
    view_item.resize(static_cast<size_t>(rows));
    at::parallel_for(0, U, 64, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> seen(static_cast<size_t>(I), 0);
      for (int64_t u = begin; u < end; ++u) {
        FastRng rng(stream_seed(o.seed(), 4, static_cast<uint64_t>(u)));
        const int64_t first = offset[static_cast<size_t>(u)], n = history[static_cast<size_t>(u)];
        for (int64_t k = 0; k < n; ++k) {
          int64_t item = -1;
          for (int attempt = 0; attempt < 64 && item < 0; ++attempt) {
            const int64_t candidate = expose(u, rng);
            if (!seen[static_cast<size_t>(candidate)]) item = candidate;
          }
          while (item < 0) {  // dense user: walk to the next unseen item
            const int64_t start = static_cast<int64_t>(rng.below(static_cast<uint32_t>(I)));
            for (int64_t j = 0; j < I && item < 0; ++j)
              if (!seen[static_cast<size_t>((start + j) % I)]) item = (start + j) % I;
          }
          seen[static_cast<size_t>(item)] = 1;
          view_item[static_cast<size_t>(first + k)] = static_cast<int32_t>(item);
        }
        for (int64_t k = 0; k < n; ++k) seen[static_cast<size_t>(view_item[static_cast<size_t>(first + k)])] = 0;
      }
    });

  }

  float affinity(int64_t u, int64_t item) const {
    return 1.6f * dot(user_vec[static_cast<size_t>(u)], item_vec[static_cast<size_t>(item)]);
  }

  /// Likes, dislikes, shares, bookmarks and watch time of every view; the
  /// signals' offsets are calibrated on evenly spaced views so the rates hold.
  void draw_signals() {
    const int64_t rows = offset.back();
    view_time.resize(static_cast<size_t>(rows));
    view_flags.resize(static_cast<size_t>(rows));
    std::vector<float> sample_like, sample_dislike;
    {
      const int64_t samples = std::min<int64_t>(rows, 40000);
      int64_t u = 0;
      for (int64_t k = 0; k < samples; ++k) {
        const int64_t r = rows * k / samples;
        while (offset[static_cast<size_t>(u + 1)] <= r) ++u;
        const int64_t item = view_item[static_cast<size_t>(r)];
        const float a = affinity(u, item), q = item_quality[static_cast<size_t>(item)];
        sample_like.push_back(a + q + user_bias[static_cast<size_t>(u)]);
        sample_dislike.push_back(-a - q);
      }
    }
    const double like_offset = calibrate(sample_like, o.like_rate());
    const double dislike_offset = calibrate(sample_dislike, o.dislike_rate());
    const double share_offset = calibrate(sample_like, o.share_rate());
    const double bookmark_offset = calibrate(sample_like, o.bookmark_rate());

    at::parallel_for(0, U, 64, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        FastRng rng(stream_seed(o.seed(), 6, static_cast<uint64_t>(u)));
        const int64_t first = offset[static_cast<size_t>(u)], n = history[static_cast<size_t>(u)];
        for (int64_t r = first; r < first + n; ++r) {
          const int64_t item = view_item[static_cast<size_t>(r)];
          const float a = affinity(u, item);
          const float q = item_quality[static_cast<size_t>(item)];
          const double z = a + q + user_bias[static_cast<size_t>(u)];
          const bool like = rng.uniform() < sigmoid(like_offset + z);
          const bool dislike = !like && rng.uniform() < sigmoid(dislike_offset - a - q);
          const bool share = rng.uniform() < sigmoid(share_offset + z);
          const bool bookmark = rng.uniform() < sigmoid(bookmark_offset + z);
          const double watched =
              std::clamp(sigmoid(0.2 + 0.6 * a + 0.4 * rng.normal()) * (like ? 1.4 : 1.0), 0.02, 3.0);
          view_time[static_cast<size_t>(r)] =
              static_cast<int32_t>(std::lround(watched * duration[static_cast<size_t>(item)]));
          view_flags[static_cast<size_t>(r)] =
              static_cast<uint8_t>(like | (dislike << 1) | (share << 2) | (bookmark << 3));
        }
      }
    });

  }

  /// Views each user keeps out of interactions.csv for candidates.csv.
  int64_t held_out(int64_t u) const {
    return history[static_cast<size_t>(u)] >= o.candidate_min_history() ? o.candidates_per_user() : 0;
  }

  /// "user,item," of view row `r` of user `u`.
  void append_view(std::string& out, int64_t u, int64_t r) const {
    append_int(out, u);
    out += ',';
    append_int(out, view_item[static_cast<size_t>(r)]);
    out += ',';
  }

  /// interactions.csv, oldest first: views are spread over time buckets and
  /// written bucket by bucket, so users interleave like a real log.
  void write_interactions(const std::string& dir, SyntheticSummary& summary) const {
    constexpr int64_t kBuckets = 256;
    write_atomically(concat(dir, "/interactions.csv"), [&](const std::string& temp) {
      std::FILE* f = std::fopen(temp.c_str(), "wb");
      if (!f) throw Error(concat("cannot create ", temp));
      const std::string header = "user_id,item_id,timespent,like,dislike,share,bookmarks\n";
      std::fwrite(header.data(), 1, header.size(), f);
      std::array<int64_t, 4> flag_sum{};
      int64_t written = 0;
      const int64_t per_round = 8;
      std::vector<std::string> parts(static_cast<size_t>(per_round));
      std::vector<std::array<int64_t, 5>> counts(static_cast<size_t>(per_round));
      for (int64_t round = 0; round < kBuckets; round += per_round) {
        at::parallel_for(0, per_round, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            auto& out = parts[static_cast<size_t>(b)];
            auto& c = counts[static_cast<size_t>(b)];
            out.clear();
            c = {};
            const int64_t bucket = round + b;
            for (int64_t u = 0; u < U; ++u) {
              const int64_t n = history[static_cast<size_t>(u)] - held_out(u);
              const int64_t lo = (bucket * n + kBuckets - 1) / kBuckets;
              const int64_t hi = ((bucket + 1) * n + kBuckets - 1) / kBuckets;
              for (int64_t k = lo; k < hi; ++k) {
                const int64_t r = offset[static_cast<size_t>(u)] + k;
                const uint8_t fl = view_flags[static_cast<size_t>(r)];
                append_view(out, u, r);
                append_int(out, view_time[static_cast<size_t>(r)]);
                for (int bit = 0; bit < 4; ++bit) {
                  out += ',';
                  out += static_cast<char>('0' + ((fl >> bit) & 1));
                  c[static_cast<size_t>(bit)] += (fl >> bit) & 1;
                }
                out += '\n';
                ++c[4];
              }
            }
          }
        });
        for (int64_t b = 0; b < per_round; ++b) {
          const auto& out = parts[static_cast<size_t>(b)];
          if (std::fwrite(out.data(), 1, out.size(), f) != out.size()) {
            std::fclose(f);
            throw Error(concat("write to ", temp, " failed (disk full?)"));
          }
          for (int bit = 0; bit < 4; ++bit)
            flag_sum[static_cast<size_t>(bit)] += counts[static_cast<size_t>(b)][static_cast<size_t>(bit)];
          written += counts[static_cast<size_t>(b)][4];
        }
      }
      if (std::fclose(f) != 0) throw Error(concat("write to ", temp, " failed"));
      summary.interactions = written;
      const double n = std::max<double>(1, static_cast<double>(written));
      summary.like_rate = static_cast<double>(flag_sum[0]) / n;
      summary.dislike_rate = static_cast<double>(flag_sum[1]) / n;
      summary.share_rate = static_cast<double>(flag_sum[2]) / n;
      summary.bookmark_rate = static_cast<double>(flag_sum[3]) / n;
    });

  }

  void write_candidates(const std::string& dir, SyntheticSummary& summary) const {
    write_stream_atomically(concat(dir, "/candidates.csv"), [&](std::ostream& out) {
      std::string text = "user_id,item_id,target\n";
      for (int64_t u = 0; u < U; ++u) {
        const int64_t h = held_out(u);
        for (int64_t k = history[static_cast<size_t>(u)] - h; k < history[static_cast<size_t>(u)]; ++k) {
          const int64_t r = offset[static_cast<size_t>(u)] + k;
          const uint8_t fl = view_flags[static_cast<size_t>(r)];
          append_view(text, u, r);
          append_int(text, (fl & 1) - ((fl >> 1) & 1));
          text += '\n';
          ++summary.candidates;
        }
      }
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
    });

  }

  void write_users(const std::string& dir) const {
    write_stream_atomically(concat(dir, "/users.csv"), [&](std::ostream& out) {
      std::string text = "user_id,gender,age\n";
      for (int64_t u = 0; u < U; ++u) {
        append_int(text, u);
        text += ',';
        append_int(text, gender[static_cast<size_t>(u)]);
        text += ',';
        append_int(text, static_cast<int64_t>(age[static_cast<size_t>(u)]));
        text += '\n';
      }
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
    });

  }

  void write_items(const std::string& dir) const {
    write_stream_atomically(concat(dir, "/items.csv"), [&](std::ostream& out) {
      std::string text = "item_id,source_id,duration";
      for (int64_t d = 0; d < D; ++d) text += concat(",emb_", d);
      text += '\n';
      FastRng rng(stream_seed(o.seed(), 5));
      for (int64_t i = 0; i < I; ++i) {
        append_int(text, i);
        text += ',';
        // 2% of items have no known source (0 = unknown); raw ids start at 1.
        append_int(text, rng.uniform() < 0.02 ? 0 : item_source[static_cast<size_t>(i)] + 1);
        text += ',';
        append_int(text, std::lround(duration[static_cast<size_t>(i)]));
        const auto& v = item_vec[static_cast<size_t>(i)];
        for (int64_t d = 0; d < D; ++d) {
          double e = 0.4 * rng.normal() / std::sqrt(double(kLatent));
          for (int k = 0; k < kLatent; ++k)
            e += projection[static_cast<size_t>(d * kLatent + k)] * v[static_cast<size_t>(k)];
          text += ',';
          append_fixed(text, e, 4);
        }
        text += '\n';
        if (text.size() > (1u << 24)) {
          out.write(text.data(), static_cast<std::streamsize>(text.size()));
          text.clear();
        }
      }
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
    });
  }

  const SyntheticOptions o;
  const int64_t U, I, S, D;
  FastRng world;
  std::vector<Latent> topic, item_vec, user_vec;
  std::vector<int32_t> item_source;
  std::vector<float> item_quality, duration, projection, user_bias, age;
  std::vector<std::vector<int32_t>> topic_items;
  std::vector<std::vector<double>> topic_cdf;
  std::vector<double> global_cdf;
  std::vector<std::array<int, 3>> user_topics;
  std::vector<int8_t> gender;
  std::vector<int64_t> history, offset;
  std::vector<int32_t> view_item, view_time;
  std::vector<uint8_t> view_flags;  // like | dislike << 1 | share << 2 | bookmark << 3
};

} // namespace detail

inline SyntheticSummary detail::write_synthetic(const std::string& dir, const SyntheticOptions& o) {
  if (o.users() < 1 || o.items() < 2 || o.sources() < 1 || o.min_history() < 1 ||
      o.max_history() < o.min_history() || o.max_history() > o.items())
    throw Error(concat("synthetic options: need users >= 1, items >= 2, sources >= 1 and "
                       "1 <= min_history <= max_history <= items; got users ", o.users(),
                       ", items ", o.items(), ", sources ", o.sources(), ", history [",
                       o.min_history(), ", ", o.max_history(), "]"));
  std::filesystem::create_directories(dir);
  SyntheticWorld w(o);
  w.make_items();
  w.make_users();
  w.draw_views();
  w.draw_signals();
  SyntheticSummary summary;
  summary.users = w.U;
  summary.items = w.I;
  summary.sources = w.S;
  w.write_interactions(dir, summary);
  w.write_candidates(dir, summary);
  w.write_users(dir);
  w.write_items(dir);
  return summary;
}

} // namespace rectrain
