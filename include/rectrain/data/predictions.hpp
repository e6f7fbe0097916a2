#pragma once
// predictions.csv (`user_id,item_id,predict`, one row per candidate, in the
// order of candidates.csv) and matching predictions back to candidates.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/text.hpp>
#include <rectrain/data/csv.hpp>

#include <torch/torch.h>

#include <charconv>
#include <limits>
#include <string>
#include <unordered_map>

namespace rectrain {

/// Writes predictions.csv atomically; scores print in their shortest exact
/// float form.
inline void write_predictions(const std::string& path, const torch::Tensor& user_id,
                              const torch::Tensor& item_id, const torch::Tensor& scores) {
  const int64_t n = user_id.numel();
  if (item_id.numel() != n || scores.numel() != n)
    throw TensorError(detail::concat("write_predictions: user_id, item_id and scores must have the same "
                                     "length, got ", n, ", ", item_id.numel(), ", ", scores.numel()));
  const auto u = user_id.to(torch::kCPU, torch::kInt64).contiguous();
  const auto i = item_id.to(torch::kCPU, torch::kInt64).contiguous();
  const auto s = scores.to(torch::kCPU, torch::kFloat32).contiguous();
  if (n > 0 && !torch::isfinite(s).all().item<bool>())
    throw TensorError("write_predictions: scores hold NaN or infinite values; refusing to write them");
  write_stream_atomically(path, [&](std::ostream& out) {
    std::string text = "user_id,item_id,predict\n";
    const int64_t* up = u.data_ptr<int64_t>();
    const int64_t* ip = i.data_ptr<int64_t>();
    const float* sp = s.data_ptr<float>();
    for (int64_t r = 0; r < n; ++r) {
      detail::append_int(text, up[r]);
      text += ',';
      detail::append_int(text, ip[r]);
      text += ',';
      detail::append_float(text, sp[r]);
      text += '\n';
      if (text.size() > (1u << 22)) {
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        text.clear();
      }
    }
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  });
}

/// Scores from `predictions_path` for each (user_id, item_id) pair, in the
/// given order. A pair with no prediction, or predicted twice, throws with
/// the file and line; so does a prediction for a pair that is not asked
/// for (predictions for other candidates than these), unless
/// `allow_extra_rows`.
inline torch::Tensor match_predictions(const std::string& predictions_path, const torch::Tensor& user_id,
                                       const torch::Tensor& item_id, bool allow_extra_rows = false) {
  const Table p = read_csv(predictions_path, {{"user_id", CsvType::Id},
                                              {"item_id", CsvType::Id},
                                              {"predict", CsvType::Number}});
  struct PairHash {
    size_t operator()(const std::pair<int64_t, int64_t>& k) const noexcept {
      return static_cast<size_t>(static_cast<uint64_t>(k.first) * 0x9e3779b97f4a7c15ULL ^
                                 static_cast<uint64_t>(k.second));
    }
  };
  std::unordered_map<std::pair<int64_t, int64_t>, int64_t, PairHash> row_of;
  row_of.reserve(static_cast<size_t>(p.num_rows()));
  const int64_t* pu = p["user_id"].data_ptr<int64_t>();
  const int64_t* pi = p["item_id"].data_ptr<int64_t>();
  for (int64_t r = 0; r < p.num_rows(); ++r) {
    const auto [it, inserted] = row_of.emplace(std::make_pair(pu[r], pi[r]), r);
    if (!inserted)
      throw InputError(predictions_path, r + 2, 0, "",
                       detail::concat("duplicate prediction for user_id ", pu[r], ", item_id ", pi[r],
                                      " (first at line ", it->second + 2, ")"));
  }
  const auto u = user_id.to(torch::kCPU, torch::kInt64).contiguous();
  const auto i = item_id.to(torch::kCPU, torch::kInt64).contiguous();
  auto out = torch::empty({u.numel()}, torch::kFloat32);
  const float* ps = p["predict"].data_ptr<float>();
  for (int64_t r = 0; r < u.numel(); ++r) {
    const auto it = row_of.find({u.data_ptr<int64_t>()[r], i.data_ptr<int64_t>()[r]});
    if (it == row_of.end())
      throw InputError(predictions_path, 0, 0, "",
                       detail::concat("no prediction for candidate user_id ", u.data_ptr<int64_t>()[r],
                                      ", item_id ", i.data_ptr<int64_t>()[r], " (candidate row ", r + 1, ")"));
    out.data_ptr<float>()[r] = ps[it->second];
    if (!allow_extra_rows) it->second = -1;  // matched
  }
  if (!allow_extra_rows) {
    int64_t extra = 0, first = std::numeric_limits<int64_t>::max();
    for (const auto& entry : row_of)
      if (entry.second >= 0) {
        ++extra;
        first = std::min(first, entry.second);
      }
    if (extra > 0)
      throw InputError(predictions_path, first + 2, 0, "",
                       detail::concat("user_id ", pu[first], ", item_id ", pi[first], " is not a candidate (",
                                      extra, " of the ", p.num_rows(), " predictions are not); predictions must "
                                      "be for the candidates scored, and only for them"));
  }
  return out;
}

} // namespace rectrain
