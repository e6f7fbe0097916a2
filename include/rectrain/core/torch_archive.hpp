#pragma once
// Checks a torch.save archive (a zip holding data.pkl, tensor records and a
// version record) before LibTorch reads it. LibTorch trusts what it reads:
// a length in a pickle is allocated before it is read (a 4-byte length can
// ask for 4 GiB), a memo index grows a table to that size, a storage's size
// comes from the pickle, not from its record, and PyTorchStreamReader leaks
// its zip state when its constructor throws (LibTorch 1.13). The fuzzers
// (tests/fuzz) found each of these; the checks here turn them into an
// InputError naming the file and what is wrong with it.

#include <rectrain/core/checksum.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/file_format.hpp>

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>

#include <cctype>
#include <cstdint>
#include <functional>
#include <cstring>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace rectrain {
namespace detail {

/// One stored entry of the archive, its name without the archive's folder.
struct ArchiveRecord {
  uint64_t offset = 0;  ///< of the record's bytes in the file
  uint64_t size = 0;
  bool stored = true;  ///< not compressed
  uint32_t crc = 0;    ///< CRC-32 of the uncompressed bytes, as the writer recorded it
  uint64_t directory_entry = 0;  ///< offset of its zip central-directory entry
};

/// The archive's directory, checked against the file's bounds.
struct TorchArchiveIndex {
  std::string folder;  ///< the archive's top folder (LibTorch's "archive name")
  std::map<std::string, ArchiveRecord> records;

  const ArchiveRecord* find(const std::string& name) const {
    const auto it = records.find(name);
    return it == records.end() ? nullptr : &it->second;
  }
};

namespace zip {
inline uint64_t le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
} // namespace zip

/// Reads the central directory of the zip in [data, data + size) and the
/// records LibTorch's reader needs before it builds anything: every entry
/// inside the file, a first entry in a folder, a version record holding a
/// version this LibTorch reads.
inline TorchArchiveIndex index_torch_archive(const char* data, uint64_t size, const std::string& path) {
  auto fail = [&](const std::string& what) -> void {
    throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: ", what));
  };
  auto need = [&](uint64_t offset, uint64_t bytes, const char* what) {
    if (offset > size || bytes > size - offset) fail(concat(what, " lies outside the file (", size, " bytes)"));
  };
  using zip::le;
  // Not a zip at all: say what it is, when its first bytes tell.
  const std::string foreign = describe_foreign_format(data, static_cast<size_t>(size));
  if (!foreign.empty()) fail(foreign);
  // End of central directory: 22 bytes plus a comment of up to 65535.
  if (size < 22) fail("too short for a zip archive");
  uint64_t eocd = size - 22;
  const uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  while (le(data + eocd, 4) != 0x06054b50) {
    if (eocd == lowest) fail("no zip end-of-directory record (a truncated or damaged file?)");
    --eocd;
  }
  uint64_t entries = le(data + eocd + 10, 2), dir_size = le(data + eocd + 12, 4), dir_offset = le(data + eocd + 16, 4);
  // Zip64 (PyTorch writes it always): a locator just before the record
  // above, pointing at a record whose values LibTorch's miniz then uses,
  // whether or not the ones above overflowed. Read it the same way.
  bool zip64 = false;
  if (eocd >= 20 && le(data + eocd - 20, 4) == 0x07064b50) {
    const uint64_t at = le(data + eocd - 20 + 8, 8);
    if (at <= size && size - at >= 56 && le(data + at, 4) == 0x06064b50) {
      zip64 = true;
      entries = le(data + at + 32, 8);
      dir_size = le(data + at + 40, 8);
      dir_offset = le(data + at + 48, 8);
    }
  }
  if (!zip64 && (entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF))
    fail("zip64 archive without its directory record");
  need(dir_offset, dir_size, "the zip directory");
  if (entries == 0) fail("the archive holds no files");
  if (entries > dir_size / 46) fail(concat("the zip directory claims ", entries, " entries in ", dir_size, " bytes"));

  TorchArchiveIndex index;
  uint64_t p = dir_offset;
  const uint64_t dir_end = dir_offset + dir_size;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p > dir_end || dir_end - p < 46 || le(data + p, 4) != 0x02014b50) fail(concat("bad zip directory entry ", e));
    const uint64_t flags = le(data + p + 8, 2), method = le(data + p + 10, 2);
    const uint64_t attributes = le(data + p + 38, 4);
    const auto crc = static_cast<uint32_t>(le(data + p + 16, 4));
    uint64_t packed = le(data + p + 20, 4), unpacked = le(data + p + 24, 4);
    const uint64_t name_len = le(data + p + 28, 2), extra_len = le(data + p + 30, 2), comment_len = le(data + p + 32, 2);
    uint64_t local = le(data + p + 42, 4);
    if (dir_end - p - 46 < name_len + extra_len + comment_len) fail(concat("zip directory entry ", e, " overruns the directory"));
    const std::string name(data + p + 46, static_cast<size_t>(name_len));
    // Zip64 sizes and offset, in this order, for the fields that overflowed.
    for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint64_t id = le(data + x, 2), len = le(data + x + 2, 2);
      if (x + 4 + len > p + 46 + name_len + extra_len) fail(concat("bad extra field in zip entry '", name, "'"));
      if (id == 1) {
        uint64_t q = x + 4;
        for (uint64_t* field : {&unpacked, &packed, &local})
          if (*field == 0xFFFFFFFF) {
            if (q + 8 > x + 4 + len) fail(concat("short zip64 field in zip entry '", name, "'"));
            *field = le(data + q, 8);
            q += 8;
          }
      }
      x += 4 + len;
    }
    need(local, 30, "a zip entry's local header");
    if (le(data + local, 4) != 0x04034b50) fail(concat("bad local header of zip entry '", name, "'"));
    const uint64_t start = local + 30 + le(data + local + 26, 2) + le(data + local + 28, 2);
    need(start, packed, concat("zip entry '", name, "'").c_str());
    if (method == 0 && packed != unpacked) fail(concat("stored zip entry '", name, "' has two sizes"));
    // What miniz will not extract (LibTorch then reads an unfilled buffer).
    if (method != 0 && method != 8) fail(concat("zip entry '", name, "' uses compression method ", method));
    // Deflate expands at most 1032-fold: a larger claim would only make
    // LibTorch allocate it.
    if (method == 8 && unpacked / 1032 > packed + 1)
      fail(concat("zip entry '", name, "' claims ", unpacked, " bytes from ", packed, " compressed"));
    if (flags & 0x61) fail(concat("zip entry '", name, "' is encrypted or patched"));
    if ((attributes & 0x10) || (!name.empty() && name.back() == '/'))
      fail(concat("zip entry '", name, "' is marked as a directory"));
    if (e == 0) {
      const size_t slash = name.find('/');
      if (slash == std::string::npos) fail(concat("first file '", name, "' is not in a folder"));
      index.folder = name.substr(0, slash);
    }
    const std::string prefix = index.folder + "/";
    if (name.compare(0, prefix.size(), prefix) == 0 &&
        !index.records.emplace(name.substr(prefix.size()), ArchiveRecord{start, unpacked, method == 0, crc, p}).second)
      fail(concat("two zip entries named '", name, "'"));
    p += 46 + name_len + extra_len + comment_len;
  }

  // LibTorch reads one or the other, by version: both must hold a version it reads.
  if (!index.find(".data/version") && !index.find("version")) fail("no version record");
  for (const char* name : {".data/version", "version"}) {
    const ArchiveRecord* version = index.find(name);
    if (!version) continue;
    if (!version->stored || version->size == 0 || version->size > 20) fail("unreadable version record");
    const char* v = data + version->offset;
    uint64_t value = 0;
    uint64_t k = 0;
    for (; k < version->size && v[k] >= '0' && v[k] <= '9'; ++k) value = value * 10 + static_cast<uint64_t>(v[k] - '0');
    for (uint64_t j = k; j < version->size; ++j)
      if (v[j] != '\n' && v[j] != '\r' && v[j] != ' ') fail("the version record is not a number");
    if (k == 0) fail("the version record is not a number");
    if (value < caffe2::serialize::kMinSupportedFileFormatVersion ||
        value > caffe2::serialize::kMaxSupportedFileFormatVersion)
      fail(concat("format version ", value, "; this LibTorch reads ", caffe2::serialize::kMinSupportedFileFormatVersion,
                  " to ", caffe2::serialize::kMaxSupportedFileFormatVersion));
  }
  return index;
}

/// Walks a pickle the way LibTorch's unpickler will, without building
/// anything (see check_pickle).
class PickleWalker {
 public:
  PickleWalker(const char* bytes, uint64_t length, const std::string& file, const std::string& record_name,
               const TorchArchiveIndex& archive)
      : data(bytes), size(length), path(file), record(record_name), index(archive) {}

  /// Walks the whole pickle; throws at the first problem.
  void run() {
    while (true) {
      if (p >= size) fail(p, "no STOP");
      const uint64_t at = p;
      const auto op = static_cast<unsigned char>(data[p++]);
      switch (op) {
        case 0x80: arg(at, 1); break;                                  // PROTO
        case 0x95: arg(at, 8); break;                                  // FRAME
        case '(': marks.push_back(stack.size()); break;                // MARK
        case '.': pop(at, 1); return;                                  // STOP
        case '0': pop(at, 1); break;                                   // POP
        case '1': pop_mark(at); break;                                 // POP_MARK
        case '2': { auto v = pop(at, 1); stack.push_back(v[0]); stack.push_back(v[0]); break; }  // DUP
        case 'K': push(Value::Int, static_cast<int64_t>(arg(at, 1))); break;                       // BININT1
        case 'M': push(Value::Int, static_cast<int64_t>(arg(at, 2))); break;                       // BININT2
        case 'J': push(Value::Int, static_cast<int32_t>(arg(at, 4))); break;                       // BININT
        case 'G': arg(at, 8); push(Value::Other); break;               // BINFLOAT
        case 0x8a: {                                                   // LONG1
          const uint64_t n = arg(at, 1);
          if (n > size - p) fail(at, "truncated");
          int64_t v = 0;
          if (n >= 1 && n <= 8) {
            v = static_cast<int64_t>(zip::le(data + p, static_cast<int>(n)) << (64 - 8 * n)) >> (64 - 8 * n);
          }
          p += n;
          push(n <= 8 ? Value::Int : Value::Other, v);
          break;
        }
        case 0x8b: text(at, arg(at, 4)); stack.back().kind = Value::Other; break;  // LONG4
        case 'U': case 'C': case 0x8c: text(at, arg(at, 1)); break;    // SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE
        case 'T': case 'B': case 'X': text(at, arg(at, 4)); break;     // BINSTRING, BINBYTES, BINUNICODE
        case 0x8d: case 0x8e: text(at, arg(at, 8)); break;             // BINUNICODE8, BINBYTES8
        case 'N': case 0x88: case 0x89: case ']': case '}': case 0x8f: push(Value::Other); break;
        case ')': tuple({}); break;                                    // EMPTY_TUPLE
        case 0x85: tuple(pop(at, 1)); break;                           // TUPLE1
        case 0x86: tuple(pop(at, 2)); break;                           // TUPLE2
        case 0x87: tuple(pop(at, 3)); break;                           // TUPLE3
        case 't': tuple(pop_mark(at)); break;                          // TUPLE
        case 'l': case 0x91: pop_mark(at); push(Value::Other); break;  // LIST, FROZENSET
        case 'd': {                                                    // DICT
          if (!marks.empty() && (stack.size() - marks.back()) % 2 != 0) fail(at, "DICT needs key-value pairs");
          pop_mark(at);
          push(Value::Other);
          break;
        }
        case 'a': pop(at, 1); pop(at, 1); push(Value::Other); break;   // APPEND
        case 's': pop(at, 2); ordered_dict(at, pop(at, 1)[0]); push(Value::Other); break;  // SETITEM
        case 'e': case 0x90: case 'u': {                               // APPENDS, ADDITEMS, SETITEMS
          if (op == 'u' && !marks.empty() && (stack.size() - marks.back()) % 2 != 0)
            fail(at, "SETITEMS needs key-value pairs");
          pop_mark(at);
          ordered_dict(at, pop(at, 1)[0]);
          push(Value::Other);
          break;
        }
        case 'c': {                                                    // GLOBAL
          const std::string module = line(at);
          const std::string name = line(at);
          push(Value::Global);
          if (module.size() + name.size() <= 256) stack.back().text = module + "\n" + name;
          break;
        }
        case 0x93: pop(at, 2); push(Value::Other); break;              // STACK_GLOBAL
        case 'R': {                                                    // REDUCE
          const auto call = pop(at, 2);
          push(call[0].kind == Value::Global && call[0].text == "collections\nOrderedDict" ? Value::OrderedDict
                                                                                          : Value::Other);
          break;
        }
        case 'b': case 0x81: pop(at, 2); push(Value::Other); break;    // BUILD, NEWOBJ
        case 0x92: pop(at, 3); push(Value::Other); break;              // NEWOBJ_EX
        case 'Q': { const auto id = pop(at, 1); storage(at, id[0]); push(Value::Other); break; }  // BINPERSID
        case 'q': put(at, arg(at, 1)); break;                          // BINPUT
        case 'r': put(at, arg(at, 4)); break;                          // LONG_BINPUT
        case 0x94: put(at, memo.size()); break;                        // MEMOIZE
        case 'h': get(at, arg(at, 1)); break;                          // BINGET
        case 'j': get(at, arg(at, 4)); break;                          // LONG_BINGET
        default: return;  // LibTorch decides
      }
    }
  }

 private:
  // Values only as far as a persistent id needs them.
  struct Value {
    enum Kind : uint8_t { Other, Int, Str, Global, Tuple, OrderedDict } kind = Other;
    int64_t number = 0;
    std::string text;
    std::vector<Value> items;
  };

  [[noreturn]] void fail(uint64_t at, const std::string& what) const {
    throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: ", record, " byte ", at, ": ", what));
  }
  uint64_t arg(uint64_t at, uint64_t bytes) {
    if (bytes > size - p) fail(at, "truncated");
    const uint64_t v = zip::le(data + p, static_cast<int>(bytes));
    p += bytes;
    return v;
  }
  void text(uint64_t at, uint64_t bytes) {
    if (bytes > size - p) fail(at, concat("a length of ", bytes, " with ", size - p, " bytes left"));
    Value v;
    v.kind = Value::Str;
    if (bytes <= 256) v.text.assign(data + p, static_cast<size_t>(bytes));
    p += bytes;
    stack.push_back(std::move(v));
  }
  void push(Value::Kind kind, int64_t number = 0) {
    Value v;
    v.kind = kind;
    v.number = number;
    stack.push_back(std::move(v));
  }
  std::vector<Value> pop(uint64_t at, size_t n) {
    const size_t floor = marks.empty() ? 0 : marks.back();
    if (stack.size() < floor + n) fail(at, "the stack holds too few values");
    std::vector<Value> out(std::make_move_iterator(stack.end() - static_cast<std::ptrdiff_t>(n)),
                           std::make_move_iterator(stack.end()));
    stack.resize(stack.size() - n);
    return out;
  }
  std::vector<Value> pop_mark(uint64_t at) {
    if (marks.empty()) fail(at, "no MARK to pop to");
    const size_t n = stack.size() - marks.back();
    marks.pop_back();
    return pop(at, n);
  }
  void tuple(std::vector<Value> items) {
    Value v;
    v.kind = Value::Tuple;
    // One level, five items at most (a storage id): copies through the memo
    // can then never grow faster than the input.
    if (items.size() <= 5) {
      for (auto& item : items) item.items.clear();
      v.items = std::move(items);
    }
    stack.push_back(std::move(v));
  }
  std::string line(uint64_t at) {
    const void* nl = std::memchr(data + p, '\n', static_cast<size_t>(size - p));
    if (!nl) fail(at, "unterminated line");
    const auto* e = static_cast<const char*>(nl);
    std::string out(data + p, e);
    p = static_cast<uint64_t>(e - data) + 1;
    return out;
  }
  void put(uint64_t at, uint64_t id) {
    if (stack.empty()) fail(at, "nothing to memoize");
    if (id > memo.size()) fail(at, concat("memo index ", id, " skips ahead of ", memo.size()));
    if (id == memo.size()) memo.push_back(stack.back());
    else memo[static_cast<size_t>(id)] = stack.back();
  }
  void get(uint64_t at, uint64_t id) {
    if (id >= memo.size()) fail(at, concat("memo index ", id, " was never set"));
    stack.push_back(memo[static_cast<size_t>(id)]);
  }
  // Python's torch.save pickles an empty OrderedDict beside every tensor
  // (its backward hooks), which LibTorch reads as None; filled, as the
  // file's own dict, LibTorch fails on an internal assert.
  void ordered_dict(uint64_t at, const Value& target) const {
    if (target.kind == Value::OrderedDict)
      fail(at, "the file holds a collections.OrderedDict, which LibTorch cannot read; save a plain dict "
               "instead: torch.save(dict(d), path)");
  }
  // ('storage', torch.<Type>Storage, key, location, numel): its record must
  // hold numel elements.
  void storage(uint64_t at, const Value& id) const {
    if (id.kind != Value::Tuple || id.items.size() != 5 || id.items[0].text != "storage") return;
    const Value &type = id.items[1], &key = id.items[2], &numel = id.items[4];
    static const std::map<std::string, int64_t> item_bytes{
        {"torch\nFloatStorage", 4}, {"torch\nDoubleStorage", 8}, {"torch\nHalfStorage", 2},
        {"torch\nBFloat16Storage", 2}, {"torch\nLongStorage", 8}, {"torch\nIntStorage", 4},
        {"torch\nShortStorage", 2}, {"torch\nCharStorage", 1}, {"torch\nByteStorage", 1},
        {"torch\nBoolStorage", 1}, {"torch\nComplexFloatStorage", 8}, {"torch\nComplexDoubleStorage", 16}};
    const auto bytes = item_bytes.find(type.text);
    if (type.kind != Value::Global || bytes == item_bytes.end()) return;  // LibTorch checks the type
    if (key.kind != Value::Str || numel.kind != Value::Int) fail(at, "malformed storage id");
    const ArchiveRecord* r = index.find("data/" + key.text);
    if (!r) fail(at, concat("storage '", key.text, "' has no record"));
    if (numel.number < 0 || static_cast<uint64_t>(numel.number) > r->size / static_cast<uint64_t>(bytes->second))
      fail(at, concat("storage '", key.text, "' claims ", numel.number, " elements of ", bytes->second,
                      " bytes; its record holds ", r->size, " bytes"));
  }

  const char* data;
  uint64_t size;
  const std::string& path;
  const std::string& record;
  const TorchArchiveIndex& index;
  std::vector<Value> stack, memo;
  std::vector<size_t> marks;
  uint64_t p = 0;
};

/// Walks a pickle the way LibTorch's unpickler will, without building
/// anything: every length within the bytes, every memo index assigned in
/// order, no opcode popping more than the stack holds (or across a MARK), a
/// STOP at the end, and every tensor storage (a persistent id) no larger
/// than its record. Opcodes it does not know end the walk: LibTorch rejects
/// them itself.
inline void check_pickle(const char* data, uint64_t size, const std::string& path, const std::string& record,
                         const TorchArchiveIndex& index) {
  PickleWalker(data, size, path, record, index).run();
}

/// Throws unless every element `t` views lies inside its storage (LibTorch's
/// unpickler sets sizes and strides as the pickle says, unchecked).
inline void check_tensor_extent(const at::Tensor& t, const std::string& path, const std::string& name) {
  if (!t.defined() || !t.has_storage() || t.numel() == 0) return;
  uint64_t last = static_cast<uint64_t>(t.storage_offset());
  bool ok = t.storage_offset() >= 0;
  for (int64_t d = 0; d < t.dim() && ok; ++d) {
    if (t.stride(d) < 0) ok = false;
    else last += static_cast<uint64_t>(t.size(d) - 1) * static_cast<uint64_t>(t.stride(d));
  }
  if (!ok || (last + 1) * t.element_size() > t.storage().nbytes())
    throw InputError(path, 0, 0, name,
                     concat("not a readable torch.save archive: a tensor of shape ", t.sizes(), ", strides ",
                            t.strides(), " and offset ", t.storage_offset(), " reaches past its storage of ",
                            t.storage().nbytes(), " bytes"));
}

/// Calls `fn(tensor)` for every tensor inside `value` (containers and
/// objects included).
template <typename Fn>
void for_each_tensor(const c10::IValue& value, Fn&& fn, int depth = 0) {
  if (depth > 100) return;  // unpickled values are trees of bounded depth in practice
  if (value.isTensor()) {
    fn(value.toTensor());
  } else if (value.isGenericDict()) {
    for (const auto& e : value.toGenericDict()) {
      for_each_tensor(e.key(), fn, depth + 1);
      for_each_tensor(e.value(), fn, depth + 1);
    }
  } else if (value.isList()) {
    for (const auto& e : value.toListRef()) for_each_tensor(e, fn, depth + 1);
  } else if (value.isTuple()) {
    for (const auto& e : value.toTupleRef().elements()) for_each_tensor(e, fn, depth + 1);
  } else if (value.isObject()) {
    for (const auto& e : value.toObjectRef().slots()) for_each_tensor(e, fn, depth + 1);
  }
}

/// Checks that a TorchScript code record holds only what
/// torch::serialize::OutputArchive writes: `class Module(Module):` blocks of
/// attribute declarations with simple types. LibTorch compiles this text
/// when it loads the archive, and its compiler crashes on some malformed
/// input (found by tests/fuzz/fuzz_checkpoint).
inline void check_module_code(const char* data, uint64_t size, const std::string& path, const std::string& record) {
  auto fail = [&](uint64_t line, const std::string& text) -> void {
    throw InputError(path, 0, 0, "",
                     concat("not a rectrain checkpoint: ", record, " line ", line, " is not an attribute declaration: '",
                            text.substr(0, 80), "'"));
  };
  auto ident = [](const std::string& t, size_t& i) {
    const size_t start = i;
    while (i < t.size() && (std::isalnum(static_cast<unsigned char>(t[i])) || t[i] == '_')) ++i;
    return i > start && !std::isdigit(static_cast<unsigned char>(t[start]));
  };
  // T := Tensor | int | float | bool | str | __torch__(.name)+ | (Tuple|List|Optional|Dict)[T, ...]
  std::function<bool(const std::string&, size_t&, int)> type = [&](const std::string& t, size_t& i, int depth) {
    const size_t start = i;
    if (depth > 4 || !ident(t, i)) return false;
    const std::string head = t.substr(start, i - start);
    if (head == "Tensor" || head == "int" || head == "float" || head == "bool" || head == "str") return true;
    if (head == "__torch__") {
      bool any = false;
      while (i < t.size() && t[i] == '.') {
        ++i;
        if (!ident(t, i)) return false;
        any = true;
      }
      return any;
    }
    if (head != "Tuple" && head != "List" && head != "Optional" && head != "Dict") return false;
    if (i >= t.size() || t[i] != '[') return false;
    ++i;
    while (true) {
      if (!type(t, i, depth + 1)) return false;
      if (i < t.size() && t[i] == ']') return ++i, true;
      if (t.compare(i, 2, ", ") != 0) return false;
      i += 2;
    }
  };
  auto quoted = [](const std::string& t, size_t& i) {
    if (i >= t.size() || t[i] != '"') return false;
    const size_t close = t.find('"', i + 1);
    if (close == std::string::npos || t.find('\\', i) < close) return false;
    i = close + 1;
    return true;
  };
  auto whole = [](const std::string& t, size_t i) { return i == t.size(); };
  uint64_t number = 0;
  size_t start = 0;
  const std::string text(data, static_cast<size_t>(size));
  while (start < text.size()) {
    const size_t stop = std::min(text.find('\n', start), text.size());
    const std::string l = text.substr(start, stop - start);
    start = stop + 1;
    ++number;
    if (l.empty() || l == "class Module(Module):" || l == "  __annotations__ = []") continue;
    size_t i = 0;
    bool ok = false;
    if (l.compare(0, 19, "  __parameters__ = ") == 0 || l.compare(0, 16, "  __buffers__ = ") == 0) {
      i = l.find('[') + 1;
      ok = i > 0;
      while (ok && i < l.size() && l[i] == '"') ok = quoted(l, i) && l.compare(i, 2, ", ") == 0 && (i += 2, true);
      ok = ok && l.compare(i, 1, "]") == 0 && whole(l, i + 1);
    } else if (l.compare(0, 18, "  __annotations__[") == 0) {
      i = 18;
      ok = quoted(l, i) && l.compare(i, 4, "] = ") == 0 && (i += 4, type(l, i, 0)) && whole(l, i);
    } else if (l.compare(0, 2, "  ") == 0) {
      i = 2;
      ok = ident(l, i) && l.compare(i, 3, " : ") == 0 && (i += 3, type(l, i, 0)) && whole(l, i);
    }
    if (!ok) fail(number, l);
  }
}

/// Whether an archive's records must carry checksums.
enum class ArchiveChecksums : uint8_t {
  Required,   ///< rectrain's own files: an archive without checksums is refused
  IfPresent,  ///< files from elsewhere: verified when the writer stored them
};

/// Throws a ChecksumError naming the first record whose bytes do not match
/// the CRC-32 its zip entry recorded when it was written. `read` returns a
/// record's uncompressed bytes (compressed records only). An archive whose
/// non-empty records all record 0 was written without checksums (Python's
/// torch.serialization.set_crc32_options(False)): refused when `mode` is
/// Required, accepted unchecked otherwise.
inline void verify_archive_checksums(const TorchArchiveIndex& index, const char* data, const std::string& path,
                                     ArchiveChecksums mode,
                                     const std::function<const std::string&(const std::string&)>& read) {
  bool any_crc = false, any_data = false;
  for (const auto& entry : index.records) {
    any_data = any_data || entry.second.size > 0;
    any_crc = any_crc || entry.second.crc != 0;
  }
  if (any_data && !any_crc) {
    if (mode == ArchiveChecksums::IfPresent) return;
    throw ChecksumError(path, "", "the archive was written without checksums (every record's CRC-32 is 0), so "
                                  "damage cannot be told apart; write it again with rectrain");
  }
  for (const auto& entry : index.records) {
    const ArchiveRecord& r = entry.second;
    uint32_t actual = 0;
    if (r.stored) {
      actual = crc32_parallel(data + r.offset, static_cast<size_t>(r.size));
    } else {
      const std::string& bytes = read(entry.first);
      actual = crc32_parallel(bytes.data(), bytes.size());
    }
    if (actual != r.crc)
      throw ChecksumError(path, index.folder + "/" + entry.first,
                          concat("record '", index.folder, "/", entry.first, "' (", r.size, " bytes",
                                 r.stored ? concat(" at offset ", r.offset) : std::string(", compressed"),
                                 ") has CRC-32 ", fingerprint_hex(actual).substr(8), " but was written with ",
                                 fingerprint_hex(r.crc).substr(8),
                                 ": the file changed after it was written; restore it or write it again"));
  }
}

/// Verifies every record's checksum (verify_archive_checksums), then walks
/// every pickle of an indexed archive; with `module_code` (archives of
/// torch::serialize::OutputArchive) checks its code records too.
/// Compressed records (TorchScript compresses its code) are read with
/// `read_compressed`; without one they are refused.
inline void check_archive_records(const TorchArchiveIndex& index, const char* data, const std::string& path,
                                  ArchiveChecksums checksums, bool module_code = false,
                                  const std::function<std::string(const std::string&)>& read_compressed = nullptr) {
  auto ends_with = [](const std::string& name, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return name.size() > n && name.compare(name.size() - n, n, suffix) == 0;
  };
  std::map<std::string, std::string> inflated;
  auto read = [&](const std::string& name) -> const std::string& {
    auto it = inflated.find(name);
    if (it != inflated.end()) return it->second;
    if (!read_compressed)
      throw InputError(path, 0, 0, "", concat("not a readable torch.save archive: ", name, " is compressed"));
    return inflated.emplace(name, read_compressed(name)).first->second;
  };
  verify_archive_checksums(index, data, path, checksums, read);
  for (const auto& entry : index.records) {
    const std::string& name = entry.first;
    const bool code = module_code && name.compare(0, 5, "code/") == 0 && ends_with(name, ".py");
    const bool pickle = ends_with(name, ".pkl") || ends_with(name, "debug_pkl");
    if (!code && !pickle) continue;
    const char* bytes = data + entry.second.offset;
    uint64_t length = entry.second.size;
    if (!entry.second.stored) {
      const std::string& unpacked = read(name);
      bytes = unpacked.data();
      length = unpacked.size();
    }
    if (code) check_module_code(bytes, length, path, name);
    if (pickle) check_pickle(bytes, length, path, name, index);
  }
  if (!index.find("data.pkl"))
    throw InputError(path, 0, 0, "", "not a readable torch.save archive: no data.pkl record");
}

/// Indexes the archive and checks its records (check_archive_records).
inline TorchArchiveIndex check_torch_archive(const char* data, uint64_t size, const std::string& path,
                                             ArchiveChecksums checksums) {
  TorchArchiveIndex index = index_torch_archive(data, size, path);
  check_archive_records(index, data, path, checksums);
  return index;
}

} // namespace detail
} // namespace rectrain
