#pragma once
// A head per interaction signal, chosen by the signal's name: the challenge's
// timespent a regression on log1p(seconds), its like, dislike, share and
// bookmarks binary; any other column as "name:binary" or "name:regression"
// (trainable_signals in data/challenge_schema.hpp names them so).
//
//   for (const auto& s : trainable_signals(train)) add_signal_head(*ranker, s);

#include <rectrain/core/error.hpp>
#include <rectrain/nn/binary_head.hpp>
#include <rectrain/nn/ranker.hpp>
#include <rectrain/nn/regression_head.hpp>

#include <string>

namespace rectrain {

/// Adds the head for `signal` to `ranker`, named as the signal (without
/// its ":kind"), reading ranker.hidden_dim() inputs.
inline void add_signal_head(RankerImpl& ranker, const std::string& signal, double weight = 1.0) {
  const auto colon = signal.find(':');
  const std::string name = signal.substr(0, colon);
  const std::string kind = colon == std::string::npos ? "" : signal.substr(colon + 1);
  const auto h = ranker.hidden_dim();
  if (kind.empty() && name == "timespent")
    ranker.add_head(name, RegressionHead(RegressionHeadOptions(h, name).log1p_label(true)), weight);
  else if (kind == "binary" ||
           (kind.empty() && (name == "like" || name == "dislike" || name == "share" || name == "bookmarks")))
    ranker.add_head(name, BinaryHead(h, name), weight);
  else if (kind == "regression")
    ranker.add_head(name, RegressionHead(RegressionHeadOptions(h, name)), weight);
  else
    throw Error(detail::concat("add_signal_head: unknown signal '", signal,
                               "' (timespent, like, dislike, share, bookmarks, or name:binary / name:regression)"));
}

} // namespace rectrain
