#pragma once
// A dataset directory in the layout of DATA_FORMAT.md, loaded into columnar
// CPU tensors with raw ids remapped to dense indices. Each file may be a CSV
// (`interactions.csv`) or a torch.save dict of tensors (`interactions.pt`).
// A binary cache (LibTorch serialization) reloads the result quickly.

#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/data/csv.hpp>
#include <rectrain/data/dataset_memory.hpp>
#include <rectrain/data/table.hpp>
#include <rectrain/data/tensor_file.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace rectrain {

/// The standard signals of an interaction row, in file order.
inline const std::vector<std::string>& standard_signals() {
  static const std::vector<std::string> names{"timespent", "like", "dislike", "share", "bookmarks"};
  return names;
}

struct DatasetOptions {
  /// Load candidates.csv / .pt when present.
  TORCH_ARG(bool, load_candidates) = true;
  /// Fail when there is no candidates file.
  TORCH_ARG(bool, require_candidates) = false;
  /// Refuse, before reading anything, a dataset whose estimated loading
  /// peak (estimate_dataset_memory) is above this many bytes; 0: no budget.
  TORCH_ARG(int64_t, memory_budget) = 0;
};

/// Everything in a dataset directory, on the CPU, ids remapped.
struct Dataset {
  IdMap user_ids;    ///< raw user_id <-> dense user index
  IdMap item_ids;    ///< raw item_id <-> dense item index
  IdMap source_ids;  ///< raw source_id (0 = unknown, not in the map) <-> dense

  /// One row per view, in file order: `user`, `item` (dense int64), then
  /// the signals: timespent (float32), like, dislike, share, bookmarks
  /// (uint8), and any extra numeric column of the file (float32).
  Table interactions;
  /// One row per dense user: `gender` (int64, 0 unknown), `age` (float32).
  Table users;
  /// One row per dense item: `source` (int64 dense, -1 unknown), `duration`
  /// (float32), `embedding` [items, D] float32 (D may be 0).
  Table items;
  /// Pairs to score: `user`, `item` (dense, -1 when cold), `user_id`,
  /// `item_id` (raw), and `target` (int64) when the file has it.
  Table candidates;

  int64_t num_users() const noexcept { return user_ids.size(); }
  int64_t num_items() const noexcept { return item_ids.size(); }
  int64_t num_sources() const noexcept { return source_ids.size(); }
  int64_t num_interactions() const noexcept { return interactions.num_rows(); }
  int64_t embedding_dim() const { return items["embedding"].size(1); }

  /// Names of the interaction signals (every column but `user` and `item`).
  std::vector<std::string> signal_names() const {
    std::vector<std::string> out;
    for (const auto& name : interactions.names())
      if (name != "user" && name != "item") out.push_back(name);
    return out;
  }

  /// like - dislike per interaction, int8 in {-1, 0, 1}.
  torch::Tensor interaction_targets() const {
    return (interactions["like"].to(torch::kInt8) - interactions["dislike"].to(torch::kInt8));
  }
};

namespace detail {

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

inline bool is_csv_path(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".csv") == 0;
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

/// Converts and validates one column of a tensor file against its field.
inline torch::Tensor conform_column(const torch::Tensor& raw, const CsvField& field,
                                    const std::string& path) {
  if (raw.dim() != 1)
    throw InputError(path, 0, 0, field.name,
                     concat("expected a 1-D tensor, found shape ", raw.sizes()));
  const bool integral = !at::isFloatingType(raw.scalar_type()) &&
                        !at::isComplexType(raw.scalar_type());
  auto fail_at = [&](const torch::Tensor& bad, const std::string& what) {
    const int64_t row = bad.nonzero().view(-1)[0].item<int64_t>();
    throw InputError(path, 0, 0, field.name,
                     concat("row ", row, ": ", what, ", got ", raw[row].item<double>()));
  };
  switch (field.type) {
    case CsvType::Id:
    case CsvType::Integer: {
      if (!integral)
        throw InputError(path, 0, 0, field.name,
                         concat("expected an integer tensor, found ", raw.scalar_type()));
      auto v = raw.to(torch::kInt64);
      if (field.type == CsvType::Id) {
        if ((v < 0).any().item<bool>()) fail_at(v < 0, "expected a non-negative id");
      } else {
        auto bad = (v < field.min_value) | (v > field.max_value);
        if (bad.any().item<bool>())
          fail_at(bad, concat("expected a value in [", field.min_value, ", ", field.max_value, "]"));
      }
      return v;
    }
    case CsvType::Flag: {
      auto bad = (raw != 0) & (raw != 1);
      if (bad.any().item<bool>()) fail_at(bad, "expected a flag 0 or 1");
      return raw.to(torch::kUInt8);
    }
    case CsvType::Number:
    case CsvType::NonNegativeNumber: {
      auto v = raw.to(torch::kFloat32);
      auto bad = v.isfinite().logical_not();
      if (bad.any().item<bool>()) fail_at(bad, "NaN or infinite number is not allowed");
      if (field.type == CsvType::NonNegativeNumber && (v < 0).any().item<bool>())
        fail_at(v < 0, "expected a non-negative number");
      return v;
    }
  }
  return raw;
}

/// Reads `<dir>/<stem>.csv`, else `<dir>/<stem>.pt`; an absent file gives an
/// empty table (the caller decides whether that is an error). `extra_fields`
/// names columns (like emb_*) that only the header can reveal.
inline Table read_table_file(const std::string& dir, const std::string& stem,
                             std::vector<CsvField> fields, ExtraColumns extra,
                             std::string& path_out, bool embedding_columns = false,
                             int64_t* embedding_dim = nullptr) {
  const std::string csv = join_path(dir, stem + ".csv");
  const std::string pt = join_path(dir, stem + ".pt");
  auto add_embedding_fields = [&](const std::vector<std::string>& header, const std::string& path) {
    // emb_0..emb_{D-1}, each once and without gaps.
    std::vector<std::pair<int64_t, int64_t>> found;  // (k, column)
    for (size_t c = 0; c < header.size(); ++c) {
      const auto& h = header[c];
      if (h.size() > 4 && h.compare(0, 4, "emb_") == 0 &&
          std::all_of(h.begin() + 4, h.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
          (h.size() == 5 || h[4] != '0'))
        found.emplace_back(std::stoll(h.substr(4)), static_cast<int64_t>(c));
    }
    std::sort(found.begin(), found.end());
    for (size_t k = 0; k < found.size(); ++k)
      if (found[k].first != static_cast<int64_t>(k))
        throw InputError(path, 1, found[k].second + 1, header[static_cast<size_t>(found[k].second)],
                         concat("embedding columns must be emb_0..emb_", found.size() - 1,
                                " without gaps, but emb_", k, " is missing"));
    for (size_t k = 0; k < found.size(); ++k)
      fields.push_back({concat("emb_", k), CsvType::Number});
    if (embedding_dim) *embedding_dim = static_cast<int64_t>(found.size());
  };
  if (file_exists(csv)) {
    path_out = csv;
    CsvFile file(csv);
    if (embedding_columns) add_embedding_fields(file.header(), csv);
    return file.read(fields, CsvOptions().extra_columns(extra));
  }
  if (file_exists(pt)) {
    path_out = pt;
    Table raw = load_tensor_table(pt);
    if (embedding_columns) add_embedding_fields(raw.names(), pt);
    Table out;
    for (const auto& field : fields) {
      if (!raw.contains(field.name)) {
        if (field.required)
          throw InputError(pt, 0, 0, field.name, "missing required column");
        continue;
      }
      out.add(field.name, conform_column(raw[field.name], field, pt));
    }
    std::string ignored;
    for (const auto& name : raw.names()) {
      if (out.contains(name)) continue;
      if (extra == ExtraColumns::KeepAsNumber)
        out.add(name, conform_column(raw[name], {name, CsvType::Number}, pt));
      else
        ignored += (ignored.empty() ? "" : ", ") + name;
    }
    if (!ignored.empty()) warn(detail::concat(pt, ": ignoring unknown column(s): ", ignored));
    return out;
  }
  path_out = csv;
  return Table();
}

/// The earliest row whose key repeats an earlier row's, and that earlier
/// row: {later, first}, or {-1, -1} when keys are unique. `less(a, b)`
/// orders rows by key.
template <typename Less>
std::pair<int64_t, int64_t> first_repeat(int64_t n, Less less) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), less);
  int64_t later = -1, first = -1;
  for (int64_t i = 1; i < n; ++i) {
    const int64_t a = order[static_cast<size_t>(i - 1)], b = order[static_cast<size_t>(i)];
    if (!less(a, b) && (later < 0 || b < later)) {
      later = b;
      int64_t j = i - 1;
      while (j > 0 && !less(order[static_cast<size_t>(j - 1)], b)) --j;
      first = order[static_cast<size_t>(j)];
    }
  }
  return {later, first};
}

/// 1-based position of `column` in a CSV file's header, 0 for other files.
inline int64_t header_position(const std::string& path, const std::string& column) {
  if (!is_csv_path(path)) return 0;
  return CsvFile(path).column_index(column) + 1;
}

/// Throws on the first raw id that repeats (the later row is reported).
inline void check_unique_ids(const torch::Tensor& ids, const std::string& path, const std::string& column) {
  const int64_t* v = ids.data_ptr<int64_t>();
  const auto [later, first] = first_repeat(ids.numel(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
  if (later >= 0) {
    const bool csv = is_csv_path(path);
    throw InputError(path, csv ? later + 2 : 0, header_position(path, column), column,
                     concat("duplicate ", column, " ", v[later], " (first at ", csv ? "line " : "row ",
                            csv ? first + 2 : first, ")"));
  }
}

} // namespace detail

namespace detail {

/// interactions.csv (or .pt): required, non-empty; extra numeric columns
/// kept as signals, none named like the columns rectrain adds.
inline Table read_interactions(const std::string& dir, std::string& path) {
  std::vector<CsvField> interaction_fields{{"user_id", CsvType::Id}, {"item_id", CsvType::Id},
                                           {"timespent", CsvType::NonNegativeNumber}};
  for (const auto& flag : {"like", "dislike", "share", "bookmarks"})
    interaction_fields.push_back({flag, CsvType::Flag});
  Table raw = read_table_file(dir, "interactions", interaction_fields, ExtraColumns::KeepAsNumber, path);
  if (raw.num_columns() == 0)
    throw InputError(path, 0, 0, "", "missing file (interactions.csv or interactions.pt is required)");
  if (raw.num_rows() == 0)
    throw InputError(path, 2, 0, "", "no interaction rows: the dataset needs at least one view");
  // Extra columns become signals beside the dense ids and the target
  // rectrain adds: they must not take those names.
  for (const auto& name : raw.names())
    for (const char* reserved : {"user", "item", "target"})
      if (name == reserved)
        throw InputError(path, is_csv_path(path) ? 1 : 0, header_position(path, name), name,
                         concat("the name '", name, "' is reserved (", name == std::string("target")
                                            ? "rectrain's target is like - dislike"
                                            : "rectrain adds the dense index column '" + name + "'",
                                        "); rename the column"));
  return raw;
}

/// Per-user features, unknown (0) where users.csv says nothing.
inline void add_user_features(Dataset& ds, const Table& users_raw) {
  auto gender = torch::zeros({ds.num_users()}, torch::kInt64);
  auto age = torch::zeros({ds.num_users()}, torch::kFloat32);
  if (users_raw.num_columns() > 0) {
    const auto rows = ds.user_ids.encode(users_raw["user_id"]);
    gender.index_copy_(0, rows, users_raw["gender"]);
    age.index_copy_(0, rows, users_raw["age"]);
  }
  ds.users.add("gender", gender).add("age", age);
}

/// Per-item features; source 0 means unknown and maps to -1.
inline void add_item_features(Dataset& ds, const Table& items_raw, int64_t embedding_dim) {
  auto source = torch::full({ds.num_items()}, -1, torch::kInt64);
  auto duration = torch::zeros({ds.num_items()}, torch::kFloat32);
  auto embedding = torch::zeros({ds.num_items(), embedding_dim}, torch::kFloat32);
  if (items_raw.num_columns() > 0) {
    const auto rows = ds.item_ids.encode(items_raw["item_id"]);
    const auto raw_source = items_raw["source_id"];
    const auto known = raw_source != 0;
    ds.source_ids = IdMap::from_ids({raw_source.masked_select(known)});
    source.index_copy_(0, rows, torch::where(known, ds.source_ids.encode(raw_source),
                                             torch::full_like(raw_source, -1)));
    duration.index_copy_(0, rows, items_raw["duration"]);
    if (embedding_dim > 0) {
      std::vector<torch::Tensor> parts;
      for (int64_t k = 0; k < embedding_dim; ++k)
        parts.push_back(items_raw[concat("emb_", k)]);
      embedding.index_copy_(0, rows, torch::stack(parts, 1));
    }
  }
  ds.items.add("source", source).add("duration", duration).add("embedding", embedding);
}

/// candidates.csv (or .pt), when there is one: raw and dense ids, the
/// target when given, each (user_id, item_id) pair at most once.
inline void add_candidates(const std::string& dir, Dataset& ds, const DatasetOptions& options) {
  std::string candidates_path;
  Table c = read_table_file(
      dir, "candidates", {{"user_id", CsvType::Id}, {"item_id", CsvType::Id},
                          {"target", CsvType::Integer, false, -1, 1}},
      ExtraColumns::Ignore, candidates_path);
  if (c.num_columns() == 0) {
    if (options.require_candidates())
      throw InputError(candidates_path, 0, 0, "", "missing file (candidates.csv is required)");
  } else {
    // Unknown users or items are scored (as cold), never rejected: they
    // map to -1 and models fall back to their out-of-vocabulary rows.
    ds.candidates.add("user", ds.user_ids.encode(c["user_id"]))
        .add("item", ds.item_ids.encode(c["item_id"]))
        .add("user_id", c["user_id"])
        .add("item_id", c["item_id"]);
    if (c.contains("target")) ds.candidates.add("target", c["target"]);
    // Each (user_id, item_id) pair at most once.
    const auto u = c["user_id"], i = c["item_id"];
    const int64_t *pu = u.data_ptr<int64_t>(), *pi = i.data_ptr<int64_t>();
    const int64_t worst = first_repeat(u.numel(), [&](int64_t a, int64_t b) {
                            return pu[a] != pu[b] ? pu[a] < pu[b] : pi[a] < pi[b];
                          }).first;
    if (worst >= 0) {
      const bool csv = is_csv_path(candidates_path);
      throw InputError(candidates_path, csv ? worst + 2 : 0, 0, "",
                       concat("duplicate candidate pair (user_id ", pu[worst],
                                      ", item_id ", pi[worst], ")"));
    }
  }
}

} // namespace detail

/// Loads a dataset directory (see DATA_FORMAT.md): interactions, then the
/// users' and items' files, the id vocabularies, the side features, and the
/// candidates.
inline Dataset load_dataset(const std::string& dir, const DatasetOptions& options = {}) {
  if (options.memory_budget() > 0)
    check_memory_budget(estimate_dataset_memory(dir), options.memory_budget(), "dataset " + dir);
  Dataset ds;
  std::string path;
  Table raw = detail::read_interactions(dir, path);
  std::string users_path, items_path;
  Table users_raw = detail::read_table_file(
      dir, "users", {{"user_id", CsvType::Id}, {"gender", CsvType::Integer, true, 0, 2},
                     {"age", CsvType::NonNegativeNumber}},
      ExtraColumns::Ignore, users_path);
  int64_t embedding_dim = 0;
  Table items_raw = detail::read_table_file(
      dir, "items", {{"item_id", CsvType::Id}, {"source_id", CsvType::Id},
                     {"duration", CsvType::NonNegativeNumber}},
      ExtraColumns::Ignore, items_path, /*embedding_columns=*/true, &embedding_dim);
  if (users_raw.num_columns() > 0)
    detail::check_unique_ids(users_raw["user_id"], users_path, "user_id");
  if (items_raw.num_columns() > 0)
    detail::check_unique_ids(items_raw["item_id"], items_path, "item_id");

  // Vocabularies: every user and item seen in the interactions or described
  // in the metadata files (a described item may be a cold candidate).
  std::vector<torch::Tensor> user_columns{raw["user_id"]}, item_columns{raw["item_id"]};
  if (users_raw.num_columns() > 0) user_columns.push_back(users_raw["user_id"]);
  if (items_raw.num_columns() > 0) item_columns.push_back(items_raw["item_id"]);
  ds.user_ids = IdMap::from_ids(user_columns);
  ds.item_ids = IdMap::from_ids(item_columns);

  // The raw id columns are not kept: encode them in place.
  torch::Tensor user = raw["user_id"], item = raw["item_id"];
  ds.interactions.add("user", ds.user_ids.encode_(user));
  ds.interactions.add("item", ds.item_ids.encode_(item));
  for (const auto& name : raw.names())
    if (name != "user_id" && name != "item_id") ds.interactions.add(name, raw[name]);

  detail::add_user_features(ds, users_raw);
  detail::add_item_features(ds, items_raw, embedding_dim);
  if (options.load_candidates()) detail::add_candidates(dir, ds, options);
  return ds;
}

namespace detail {
inline constexpr const char* dataset_cache_format = "rectrain-dataset-v1";

inline void put_table(c10::impl::GenericDict& dict, const std::string& prefix, const Table& table) {
  std::string names;
  for (const auto& item : table.columns()) {
    names += (names.empty() ? "" : "\n") + item.key();
    dict.insert(prefix + "." + item.key(), item.value());
  }
  dict.insert(prefix + "#columns", names);
}

inline const c10::IValue& cache_entry(const c10::impl::GenericDict& dict, const std::string& key,
                                      const std::string& path) {
  const auto it = dict.find(key);
  if (it == dict.end()) throw InputError(path, 0, 0, "", concat("dataset cache lacks entry '", key, "'"));
  return it->value();
}

inline torch::Tensor cache_tensor(const c10::impl::GenericDict& dict, const std::string& key,
                                  const std::string& path) {
  const auto& v = cache_entry(dict, key, path);
  if (!v.isTensor()) throw InputError(path, 0, 0, "", concat("dataset cache entry '", key, "' is not a tensor"));
  return v.toTensor();
}

/// `copy`: the columns get memory of their own instead of pointing into the
/// file's mapping.
inline Table take_table(const c10::impl::GenericDict& dict, const std::string& prefix, const std::string& path,
                        bool copy) {
  const c10::IValue names_value = cache_entry(dict, prefix + "#columns", path);  // a copy: GCC 14 warns on a reference
  if (!names_value.isString()) throw InputError(path, 0, 0, "", "dataset cache: bad column list");
  const std::string names = names_value.toStringRef();
  Table table;
  size_t start = 0;
  while (start < names.size()) {
    const size_t stop = std::min(names.find('\n', start), names.size());
    const std::string name = names.substr(start, stop - start);
    auto column = cache_tensor(dict, prefix + "." + name, path);
    table.add(name, copy ? column.clone() : column);
    start = stop + 1;
  }
  return table;
}
} // namespace detail

/// Saves a loaded dataset atomically, in the torch.save format (LibTorch's
/// torch::pickle_save; Python's torch.load reads it as a dict too).
inline void save_dataset_cache(const Dataset& ds, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", std::string(detail::dataset_cache_format));
  dict.insert("user_ids", ds.user_ids.raw_ids());
  dict.insert("item_ids", ds.item_ids.raw_ids());
  dict.insert("source_ids", ds.source_ids.raw_ids());
  detail::put_table(dict, "interactions", ds.interactions);
  detail::put_table(dict, "users", ds.users);
  detail::put_table(dict, "items", ds.items);
  detail::put_table(dict, "candidates", ds.candidates);
  save_pickle(c10::IValue(dict), path);
}

/// Loads what save_dataset_cache wrote (of `options`, only memory_budget
/// applies). Tensors map the file's pages
/// (copy-on-write) instead of copying them, so this costs little more than
/// reading the directory of the archive.
inline Dataset load_dataset_cache(const std::string& path, const DatasetOptions& options = {}) {
  if (options.memory_budget() > 0)
    check_memory_budget(estimate_dataset_memory(path), options.memory_budget(), "dataset cache " + path);
  const c10::IValue value = detail::load_pickle_mapped(path, detail::ArchiveChecksums::Required);
  if (!value.isGenericDict()) throw InputError(path, 0, 0, "", "not a rectrain dataset cache");
  const auto dict = value.toGenericDict();
  const auto format = dict.find("format");
  if (format == dict.end() || !format->value().isString() ||
      format->value().toStringRef() != detail::dataset_cache_format)
    throw InputError(path, 0, 0, "", "not a rectrain dataset cache (or an incompatible version)");
  Dataset ds;
  // Only the interactions (nearly all of the file) stay in the mapping; the
  // rest is copied, so that a program that drops or replaces the
  // interactions (a training subset, say) releases the whole mapping.
  ds.user_ids = IdMap::from_sorted_unique(detail::cache_tensor(dict, "user_ids", path).clone());
  ds.item_ids = IdMap::from_sorted_unique(detail::cache_tensor(dict, "item_ids", path).clone());
  ds.source_ids = IdMap::from_sorted_unique(detail::cache_tensor(dict, "source_ids", path).clone());
  ds.interactions = detail::take_table(dict, "interactions", path, /*copy=*/false);
  ds.users = detail::take_table(dict, "users", path, /*copy=*/true);
  ds.items = detail::take_table(dict, "items", path, /*copy=*/true);
  ds.candidates = detail::take_table(dict, "candidates", path, /*copy=*/true);
  return ds;
}

/// load_dataset_cache for a file (a save_dataset_cache cache), load_dataset
/// for a directory.
inline Dataset load_dataset_or_cache(const std::string& path, const DatasetOptions& options = {}) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return load_dataset_cache(path, options);
  return load_dataset(path, options);
}

} // namespace rectrain
