#pragma once
// A training checkpoint: modules, optimizers, samplers, random generators
// and plain values bound once by name, then saved together (atomically:
// written to a temporary file and renamed) and loaded back in place.
//
//   Checkpoint state;
//   state.add("model", *model).add("adam", adam).add("sampler", sampler)
//        .add("rng", generator).add("epoch", epoch);
//   state.save(path);      // every epoch
//   state.load(path);      // on resume, into the same objects
//
// Not saved: whether a parameter requires grad (torch::save does not keep
// it); a trainer re-applies its freezing schedule after loading.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/crash_point.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/core/mapped_file.hpp>
#include <rectrain/core/torch_archive.hpp>
#include <rectrain/data/batch_sampler.hpp>

#include <torch/torch.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace rectrain {

class Checkpoint {
 public:
  /// Format version written into every checkpoint.
  static constexpr int64_t format_version = 1;

  /// A module's parameters and buffers. Loading checks that every tensor
  /// kept its shape (Module::load alone would take any shape).
  Checkpoint& add(const std::string& name, torch::nn::Module& module) {
    return bind(name, [&module](torch::serialize::OutputArchive& a) { module.save(a); },
                [&module](torch::serialize::InputArchive& a) {
                  const auto before = tensor_shapes(module);
                  module.load(a);
                  for (const auto& [key, shape] : tensor_shapes(module)) {
                    const auto it = before.find(key);
                    if (it != before.end() && it->second != shape)
                      throw Error(detail::concat("'", key, "' is ", at::IntArrayRef(shape), " in the checkpoint but ",
                                                 at::IntArrayRef(it->second),
                                                 " in the module (a model built with other sizes)"));
                  }
                });
  }
  /// An optimizer's state (moments, step counts, parameter groups).
  Checkpoint& add(const std::string& name, torch::optim::Optimizer& optimizer) {
    return bind(name, [&optimizer](torch::serialize::OutputArchive& a) { optimizer.save(a); },
                [&optimizer](torch::serialize::InputArchive& a) { optimizer.load(a); });
  }
  /// A sampler's progress (GroupSampler: its epoch and position).
  Checkpoint& add(const std::string& name, BatchSampler& sampler) {
    return bind(name, [&sampler](torch::serialize::OutputArchive& a) { sampler.save(a); },
                [&sampler](torch::serialize::InputArchive& a) { sampler.load(a); });
  }
  /// A torch::data sampler's progress.
  template <typename BatchRequest>
  Checkpoint& add(const std::string& name, torch::data::samplers::Sampler<BatchRequest>& sampler) {
    return bind(name, [&sampler](torch::serialize::OutputArchive& a) { sampler.save(a); },
                [&sampler](torch::serialize::InputArchive& a) { sampler.load(a); });
  }
  /// A random generator's state (for dropout and other random ops: the
  /// default one is at::globalContext().defaultGenerator(device)).
  Checkpoint& add(const std::string& name, at::Generator& generator) {
    return bind(
        name,
        [&generator](torch::serialize::OutputArchive& a) {
          std::lock_guard<std::mutex> lock(generator.mutex());
          a.write("state", generator.get_state(), /*is_buffer=*/true);
        },
        [&generator](torch::serialize::InputArchive& a) {
          torch::Tensor state;
          a.read("state", state, /*is_buffer=*/true);
          std::lock_guard<std::mutex> lock(generator.mutex());
          generator.set_state(state);
        });
  }
  Checkpoint& add(const std::string& name, int64_t& value) {
    return bind(name, [&value](torch::serialize::OutputArchive& a) { a.write("value", torch::tensor(value)); },
                [&value](torch::serialize::InputArchive& a) { value = read_scalar(a).item<int64_t>(); });
  }
  Checkpoint& add(const std::string& name, double& value) {
    return bind(
        name,
        [&value](torch::serialize::OutputArchive& a) {
          a.write("value", torch::tensor(value, torch::TensorOptions().dtype(torch::kFloat64)));
        },
        [&value](torch::serialize::InputArchive& a) { value = read_scalar(a).item<double>(); });
  }
  /// A vocabulary (raw ids <-> dense indices), stored as its raw ids: a
  /// model's id maps travel with the embedding rows they index.
  Checkpoint& add(const std::string& name, IdMap& map) {
    return bind(
        name, [&map](torch::serialize::OutputArchive& a) { a.write("raw_ids", map.raw_ids()); },
        [&map](torch::serialize::InputArchive& a) {
          torch::Tensor raw;
          a.read("raw_ids", raw);
          if (!raw.defined() || raw.dim() != 1 || raw.scalar_type() != torch::kInt64)
            throw Error(detail::concat("expected raw ids (1-D int64), got ", detail::shape_of(raw)));
          map = IdMap::from_sorted_unique(raw.contiguous().clone());
        });
  }
  /// Any text (a configuration, a metrics history); stored as bytes.
  Checkpoint& add(const std::string& name, std::string& value) {
    return bind(
        name,
        [&value](torch::serialize::OutputArchive& a) {
          auto bytes = torch::empty({static_cast<int64_t>(value.size())}, torch::kUInt8);
          if (!value.empty()) std::memcpy(bytes.data_ptr(), value.data(), value.size());
          a.write("value", bytes);
        },
        [&value](torch::serialize::InputArchive& a) {
          const auto bytes = read_scalar(a).contiguous();
          if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 1)
            throw Error(detail::concat("expected text (1-D uint8), got ", detail::shape_of(bytes)));
          value.assign(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
        });
  }

  /// Names bound so far, in order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

  /// Writes every bound object to `path` through a temporary file renamed
  /// over it: a crash leaves the previous checkpoint or none, never half of
  /// one.
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive;
    archive.write("rectrain_checkpoint", torch::tensor(format_version));
    for (const auto& e : entries_) {
      torch::serialize::OutputArchive part;
      e.save(part);
      archive.write(e.name, part);
    }
    write_stream_atomically(path, [&](std::ostream& out) {
      bool started = false;
      // Every chunk is reported written, even after a failed write: a short
      // count makes LibTorch's writer throw again from its destructor, which
      // terminates the process. The stream keeps the failure, and
      // write_stream_atomically reports it once the archive is done.
      archive.save_to([&](const void* bytes, size_t n) -> size_t {
        if (out) out.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
        if (!started) {
          started = true;
          out.flush();
          detail::crash_point("checkpoint.write");
        }
        return n;
      });
      out.flush();
      detail::crash_point("checkpoint.rename");
    });
  }

  /// Loads every bound object from `path`. Errors name the file and the
  /// entry (a model of another shape, a missing entry, not a checkpoint).
  /// On an error the objects loaded before it keep their new state.
  void load(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      throw Error(detail::concat("checkpoint ", path, ": no such file"));
    torch::serialize::InputArchive archive;
    auto unreadable = [&](const std::string& why) {
      return Error(detail::concat("checkpoint ", path, ": not a readable LibTorch archive (", why, ")"));
    };
    // Kept open over the whole load: a file rewritten or cut short while
    // it is read is reported as such, not as a damaged file.
    std::unique_ptr<detail::MappedFile> file;
    try {
      // LibTorch's reader trusts the file; check it first (torch_archive.hpp).
      {
        file = std::make_unique<detail::MappedFile>(path);
        if (file->size() == 0) throw unreadable("empty file");
        // The directory first: PyTorchStreamReader is safe to build once it holds.
        const auto index = detail::index_torch_archive(file->data(), file->size(), path);
        caffe2::serialize::PyTorchStreamReader reader(path);
        detail::check_archive_records(index, file->data(), path, detail::ArchiveChecksums::Required,
                                      /*module_code=*/true, [&](const std::string& name) {
          const auto record = reader.getRecord(name);
          return std::string(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record));
        });
      }
      archive.load_from(path);
      for (const auto& key : archive.keys()) {
        c10::IValue value;
        if (archive.try_read(key, value))
          detail::for_each_tensor(value, [&](const at::Tensor& t) { detail::check_tensor_extent(t, path, key); });
      }
    } catch (const std::exception& e) {
      if (file && file->changed()) throw Error(detail::concat("checkpoint ", file->changed_error().what()));
      if (dynamic_cast<const ChecksumError*>(&e)) throw;
      if (dynamic_cast<const InputError*>(&e)) throw unreadable(e.what());
      if (dynamic_cast<const Error*>(&e)) throw;
      if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) throw unreadable(c10_error->what_without_backtrace());
      throw unreadable(e.what());  // TorchScript's ErrorReport, std::bad_alloc, ...
    }
    if (file->changed()) throw Error(detail::concat("checkpoint ", file->changed_error().what()));
    file.reset();
    torch::Tensor version;
    if (!archive.try_read("rectrain_checkpoint", version) || version.numel() != 1)
      throw Error(detail::concat("checkpoint ", path, ": not a rectrain checkpoint (no format tag)"));
    if (version.item<int64_t>() != format_version)
      throw Error(detail::concat("checkpoint ", path, ": format version ", version.item<int64_t>(),
                                 ", this build reads version ", format_version));
    for (auto& e : entries_) {
      torch::serialize::InputArchive part;
      if (!archive.try_read(e.name, part))
        throw Error(detail::concat("checkpoint ", path, ": no entry '", e.name, "'"));
      try {
        e.load(part);
      } catch (const c10::Error& err) {
        throw Error(detail::concat("checkpoint ", path, ", entry '", e.name, "': ", err.what_without_backtrace()));
      } catch (const std::exception& err) {
        throw Error(detail::concat("checkpoint ", path, ", entry '", e.name, "': ", err.what()));
      }
    }
  }

 private:
  struct Entry {
    std::string name;
    std::function<void(torch::serialize::OutputArchive&)> save;
    std::function<void(torch::serialize::InputArchive&)> load;
  };

  Checkpoint& bind(const std::string& name, std::function<void(torch::serialize::OutputArchive&)> save,
                   std::function<void(torch::serialize::InputArchive&)> load) {
    if (name.empty() || name == "rectrain_checkpoint" || name.find('.') != std::string::npos)
      throw Error(detail::concat("Checkpoint: invalid entry name '", name, "' (non-empty, no '.')"));
    for (const auto& e : entries_)
      if (e.name == name) throw Error(detail::concat("Checkpoint: entry '", name, "' is already bound"));
    entries_.push_back({name, std::move(save), std::move(load)});
    return *this;
  }

  static std::map<std::string, std::vector<int64_t>> tensor_shapes(const torch::nn::Module& module) {
    std::map<std::string, std::vector<int64_t>> out;
    for (const auto& p : module.named_parameters()) out[p.key()] = p.value().sizes().vec();
    for (const auto& b : module.named_buffers()) out[b.key()] = b.value().sizes().vec();
    return out;
  }

  static torch::Tensor read_scalar(torch::serialize::InputArchive& archive) {
    torch::Tensor t;
    archive.read("value", t);
    return t;
  }

  std::vector<Entry> entries_;
};

/// Saves `module`'s parameters and buffers to `path` (a Checkpoint with the
/// one entry "model", written atomically).
inline void save_module(const std::string& path, torch::nn::Module& module) {
  Checkpoint().add("model", module).save(path);
}

/// Loads save_module's file (or any checkpoint with a "model" entry) into
/// `module`, refusing a file whose tensors have other names or shapes:
/// torch::load would take the file's shapes and leave a model of other
/// sizes than the one built.
inline void load_module(const std::string& path, torch::nn::Module& module) {
  Checkpoint().add("model", module).load(path);
}

} // namespace rectrain
