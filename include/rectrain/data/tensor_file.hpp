#pragma once
// Tables handed over from Python: `torch.save({"user_id": t, ...}, path)`
// where every value is a tensor of the same length. Read with LibTorch's
// own unpickler over the zip format torch.save writes by default, with
// tensor storages mapped from the file rather than copied.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/compat_unpickle.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/mapped_file.hpp>
#include <rectrain/core/torch_archive.hpp>
#include <rectrain/data/table.hpp>

#include <torch/torch.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace rectrain {

namespace detail {

/// Serves PyTorchStreamReader from a memory map.
class MappedReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit MappedReadAdapter(std::shared_ptr<MappedFile> file) : file_(std::move(file)) {}
  size_t size() const override { return file_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= file_->size()) return 0;
    n = std::min<size_t>(n, file_->size() - static_cast<size_t>(pos));
    std::memcpy(buf, file_->data() + pos, n);
    return n;
  }

 private:
  std::shared_ptr<MappedFile> file_;
};

/// Loads a torch.save / torch::pickle_save archive without copying tensor
/// data: storages point into a private (copy-on-write) memory map of the
/// file, kept alive as long as any tensor uses it. Every record's checksum
/// is verified first (`checksums`), which reads the file once.
inline c10::IValue load_pickle_mapped(const std::string& path, ArchiveChecksums checksums) {
  auto file = std::make_shared<MappedFile>(path, /*copy_on_write=*/true);
  if (file->size() == 0) throw InputError(path, 0, 0, "", "empty file, expected a torch.save archive");
  TorchArchiveIndex index;
  try {
    index = check_torch_archive(file->data(), file->size(), path, checksums);
  } catch (const InputError&) {
    // A file cut short while it was read looks damaged: say what happened.
    if (file->changed()) throw file->changed_error();
    throw;
  }
  c10::IValue value;
  try {
    caffe2::serialize::PyTorchStreamReader reader(std::make_shared<MappedReadAdapter>(file));
    auto read_record = [&](const std::string& name) -> at::DataPtr {
      const ArchiveRecord* record = index.find("data/" + name);
      if (!record || !record->stored)
        throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: no stored record data/", name));
      // torch.save aligns records to 64 bytes; a record that is not (a
      // hand-made or damaged file) is copied, so no load is misaligned.
      if (record->offset % 64 != 0) {
        at::DataPtr copy = at::getCPUAllocator()->allocate(static_cast<size_t>(record->size));
        if (record->size > 0) std::memcpy(copy.get(), file->data() + record->offset, static_cast<size_t>(record->size));
        return copy;
      }
      auto* keep_alive = new std::shared_ptr<MappedFile>(file);
      return at::DataPtr(file->data() + record->offset, keep_alive,
                         [](void* ctx) { delete static_cast<std::shared_ptr<MappedFile>*>(ctx); },
                         at::Device(at::kCPU));
    };
    value = compat::unpickle_archive(reader, read_record);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {  // the unpickler's std::out_of_range, std::bad_alloc, ...
    throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: ", e.what()));
  }
  for_each_tensor(value, [&](const at::Tensor& t) { check_tensor_extent(t, path, ""); });
  if (file->changed()) throw file->changed_error();
  // The tensors keep the mapping: a later truncation can no longer be
  // reported as an error, so it stops the process with a message.
  file->hand_over();
  return value;
}

} // namespace detail

/// Loads a dict {str: tensor} written by Python's torch.save (or by
/// save_tensor_table) as a Table; columns are moved to CPU, in the dict's
/// order. Anything else in the file throws an InputError naming it.
inline Table load_tensor_table(const std::string& path) {
  const c10::IValue value = detail::load_pickle_mapped(path, detail::ArchiveChecksums::IfPresent);
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

/// Loads a dict {str: tensor} of any lengths (what rectrain-vk als writes,
/// or Python's torch.save of such a dict), checksums verified, tensors on
/// the CPU in the dict's order. Anything else in the file throws an
/// InputError naming it.
inline torch::OrderedDict<std::string, torch::Tensor> load_tensor_dict(const std::string& path) {
  const c10::IValue value = detail::load_pickle_mapped(path, detail::ArchiveChecksums::IfPresent);
  if (!value.isGenericDict())
    throw InputError(path, 0, 0, "", detail::concat("expected a dict of tensors, found ", value.tagKind()));
  torch::OrderedDict<std::string, torch::Tensor> out("tensor");
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString())
      throw InputError(path, 0, 0, "", detail::concat("dict keys must be strings, found ", entry.key().tagKind()));
    const std::string name = entry.key().toStringRef();
    if (!entry.value().isTensor())
      throw InputError(path, 0, 0, name, detail::concat("expected a tensor, found ", entry.value().tagKind()));
    out.insert(name, entry.value().toTensor().to(torch::kCPU));
  }
  return out;
}

/// Writes `value` with torch::pickle_save (the torch.save format),
/// atomically.
inline void save_pickle(const c10::IValue& value, const std::string& path) {
  const std::vector<char> bytes = torch::pickle_save(value);
  write_stream_atomically(path, [&](std::ostream& out) {
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  });
}

/// Writes a Table as a dict {str: tensor} that Python's torch.load reads.
inline void save_tensor_table(const Table& table, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& item : table.columns()) dict.insert(item.key(), item.value());
  save_pickle(c10::IValue(dict), path);
}

} // namespace rectrain
