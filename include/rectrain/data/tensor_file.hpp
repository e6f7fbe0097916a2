#pragma once
// Tables handed over from Python: `torch.save({"user_id": t, ...}, path)`
// where every value is a tensor of the same length. Read with LibTorch's
// own torch::pickle_load (the zip format torch.save writes by default).

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/data/table.hpp>

#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace rectrain {

/// Loads a dict {str: tensor} written by Python's torch.save (or by
/// save_tensor_table) as a Table; columns are moved to CPU, in the dict's
/// order. Anything else in the file throws an InputError naming it.
inline Table load_tensor_table(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, 0, 0, "", "cannot open");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw InputError(path, 0, 0, "", "empty file, expected a torch.save archive");
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw InputError(path, 0, 0, "",
                     detail::concat("not a readable torch.save archive: ", e.what_without_backtrace()));
  }
  if (!value.isGenericDict())
    throw InputError(path, 0, 0, "",
                     detail::concat("expected a dict of tensors, found ", value.tagKind()));
  Table table;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString())
      throw InputError(path, 0, 0, "",
                       detail::concat("dict keys must be strings, found ", entry.key().tagKind()));
    const std::string name = entry.key().toStringRef();
    if (!entry.value().isTensor())
      throw InputError(path, 0, 0, name,
                       detail::concat("expected a tensor, found ", entry.value().tagKind()));
    auto tensor = entry.value().toTensor().to(torch::kCPU).contiguous();
    if (tensor.dim() < 1)
      throw InputError(path, 0, 0, name, "expected a tensor with one row per entry, found a scalar");
    if (table.num_columns() > 0 && tensor.size(0) != table.num_rows())
      throw InputError(path, 0, 0, name,
                       detail::concat("has shape ", tensor.sizes(), " but the columns before it have ",
                                      table.num_rows(), " rows"));
    table.add(name, tensor);
  }
  return table;
}

/// Writes a Table as a dict {str: tensor} that Python's torch.load reads.
inline void save_tensor_table(const Table& table, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& item : table.columns()) dict.insert(item.key(), item.value());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_stream_atomically(path, [&](std::ostream& out) {
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  });
}

} // namespace rectrain
