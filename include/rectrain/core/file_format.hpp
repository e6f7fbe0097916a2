#pragma once
// What a file that rectrain cannot read looks like, for the error message:
// a compressed file, a legacy torch.save file, another binary format, or a
// text file with another delimiter. Only the first bytes are looked at.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

namespace rectrain {
namespace detail {

/// Says what a file starting with [data, data + size) is and what to do,
/// when its magic bytes are those of a format rectrain does not read;
/// empty otherwise.
inline std::string describe_foreign_format(const char* data, size_t size) {
  auto starts = [&](const char* magic, size_t n) { return size >= n && std::memcmp(data, magic, n) == 0; };
  if (starts("\x1f\x8b", 2)) return "it is gzip-compressed; decompress it first (gunzip)";
  if (starts("\x28\xb5\x2f\xfd", 4)) return "it is zstd-compressed; decompress it first (unzstd)";
  if (starts("BZh", 3)) return "it is bzip2-compressed; decompress it first (bunzip2)";
  if (starts("\xfd\x37\x7a\x58\x5a\x00", 6)) return "it is xz-compressed; decompress it first (unxz)";
  // torch.save before PyTorch 1.6 (or with _use_new_zipfile_serialization=False):
  // a pickle of the magic number 0x1950a86a20f9469cfc6c.
  if (starts("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14))
    return "it is in the legacy torch.save format (PyTorch < 1.6, or _use_new_zipfile_serialization=False), "
           "which LibTorch cannot read; load it in Python and save it again with torch.save(obj, path)";
  if (size >= 2 && static_cast<unsigned char>(data[0]) == 0x80 && data[1] >= 2 && data[1] <= 5)
    return "it is a plain Python pickle, not a torch.save archive; save the object with torch.save(obj, path)";
  if (starts("\x93NUMPY", 6)) return "it is a NumPy .npy array; convert it with torch.save({name: torch.from_numpy(a)}, path)";
  if (starts("PAR1", 4)) return "it is a Parquet file; convert it to CSV or to a torch.save dict of tensors";
  if (starts("ARROW1", 6)) return "it is an Arrow/Feather file; convert it to CSV or to a torch.save dict of tensors";
  if (starts("\x89HDF", 4)) return "it is an HDF5 file; convert it to CSV or to a torch.save dict of tensors";
  return "";
}

/// For a CSV line (or field) that is one field or split wrongly: a hint
/// naming the delimiter it seems to use instead of commas; empty when none.
inline std::string delimiter_hint(const std::string& line, const char* what = "line") {
  struct Candidate {
    char c;
    const char* name;
    const char* style;
  };
  const size_t commas = static_cast<size_t>(std::count(line.begin(), line.end(), ','));
  for (const Candidate& d : {Candidate{'\t', "tabs", "tab-separated"}, Candidate{';', "semicolons", "semicolon-separated"},
                             Candidate{'|', "'|' bars", "bar-separated"}}) {
    const size_t n = static_cast<size_t>(std::count(line.begin(), line.end(), d.c));
    if (n > commas)
      return std::string(" (the ") + what + " has " + std::to_string(n) + " " + d.name + " and " + std::to_string(commas) +
             " commas: the file looks " + d.style + "; rectrain reads comma-separated CSV)";
  }
  return "";
}

} // namespace detail
} // namespace rectrain
