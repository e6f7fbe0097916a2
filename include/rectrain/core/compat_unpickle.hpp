#pragma once
// The LibTorch-version bridge for the JIT unpickler (core/compat.hpp holds
// the others): apart, so that only the files that read torch.save archives
// pay for the JIT's headers.

#include <rectrain/core/compat.hpp>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <cstring>
#include <functional>
#include <string>

namespace rectrain {
namespace compat {

/// Unpickles the `data.pkl` of a torch.save / torch::pickle_save archive,
/// taking each tensor's storage from `read_record(name)` (so storages can
/// point into a memory map instead of being copied). The first six
/// Unpickler arguments are the same in 1.13 and 2.x.
inline c10::IValue unpickle_archive(caffe2::serialize::PyTorchStreamReader& reader,
                                    std::function<at::DataPtr(const std::string&)> read_record) {
  auto pickle = reader.getRecord("data.pkl");
  const char* bytes = static_cast<const char*>(std::get<0>(pickle).get());
  const size_t size = std::get<1>(pickle);
  size_t offset = 0;
  auto read = [&](char* buffer, size_t len) -> size_t {
    len = std::min(len, size - offset);
    std::memcpy(buffer, bytes + offset, len);
    offset += len;
    return len;
  };
  torch::jit::Unpickler unpickler(read, nullptr, nullptr, std::move(read_record), nullopt);
  unpickler.set_version(reader.version());
  return unpickler.parse_ivalue();
}

} // namespace compat
} // namespace rectrain
