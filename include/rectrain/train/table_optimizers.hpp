#pragma once
// The recipe's optimizer split: the id tables' weights (sparse gradients)
// to SparseAdam, every other parameter to torch::optim::Adam, which takes
// no sparse gradients; or one Adam for everything (dense tables).
//
//   TableOptimizers optimizers(*model, table_parameter_names(*model, {"user", "item"}),
//                              torch::optim::AdamOptions(3e-3), TableUpdate::Sparse);
//   train_epoch(model, optimizers.all(), pipeline, epoch);
//   optimizers.bind(checkpoint);  // a Checkpoint of your own (Trainer binds all() itself)

#include <rectrain/core/error.hpp>
#include <rectrain/train/checkpoint.hpp>
#include <rectrain/train/sparse_adam.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace rectrain {

/// How the id tables are updated once unfrozen.
enum class TableUpdate {
  Sparse,  ///< sparse gradients, SparseAdam over every row (Adam's update, one pass)
  Dense,   ///< dense gradients, torch::optim::Adam (the same update, many passes)
  Lazy,    ///< sparse gradients, SparseAdam on the rows each batch used
};

/// "sparse" | "adam" | "lazy" (the rectrain-vk flag's words); an Error
/// naming `what` otherwise.
inline TableUpdate parse_table_update(const std::string& text, const std::string& what = "table update") {
  if (text == "sparse") return TableUpdate::Sparse;
  if (text == "adam") return TableUpdate::Dense;
  if (text == "lazy") return TableUpdate::Lazy;
  throw Error(detail::concat(what, " must be sparse, adam or lazy; got '", text, "'"));
}

class TableOptimizers {
 public:
  /// `tables`: the named_parameters() keys of the id tables' weights (see
  /// table_parameter_names); with TableUpdate::Dense they stay with Adam.
  TableOptimizers(torch::nn::Module& model, const std::vector<std::string>& tables,
                  const torch::optim::AdamOptions& options, TableUpdate update) {
    std::vector<torch::Tensor> table_weights, rest;
    const auto params = model.named_parameters();
    for (const auto& name : tables)
      if (!params.contains(name))
        throw Error(detail::concat("TableOptimizers: the model has no parameter '", name, "' (parameters: ",
                                   detail::join_names(params.keys()), ")"));
    for (const auto& p : params) {
      const bool is_table =
          update != TableUpdate::Dense && std::find(tables.begin(), tables.end(), p.key()) != tables.end();
      (is_table ? table_weights : rest).push_back(p.value());
    }
    dense_ = std::make_unique<torch::optim::Adam>(rest, options);
    if (!table_weights.empty())
      tables_ = std::make_unique<SparseAdam>(table_weights, options,
                                             update == TableUpdate::Lazy ? SparseAdamRows::Touched : SparseAdamRows::All);
  }

  /// Every optimizer, for train_epoch.
  std::vector<torch::optim::Optimizer*> all() const {
    std::vector<torch::optim::Optimizer*> out{dense_.get()};
    if (tables_) out.push_back(tables_.get());
    return out;
  }
  torch::optim::Adam& dense() { return *dense_; }
  /// The tables' SparseAdam; nullptr when every parameter is with Adam.
  SparseAdam* tables() { return tables_.get(); }

  /// Binds their states into `checkpoint` as `dense_name` and, when there
  /// is one, `tables_name`.
  void bind(Checkpoint& checkpoint, const std::string& dense_name = "adam",
            const std::string& tables_name = "table_adam") {
    checkpoint.add(dense_name, *dense_);
    if (tables_) checkpoint.add(tables_name, *tables_);
  }

 private:
  std::unique_ptr<torch::optim::Adam> dense_;
  std::unique_ptr<SparseAdam> tables_;
};

} // namespace rectrain
