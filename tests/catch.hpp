#pragma once
// Catch2 v2 (Debian bookworm) or v3, whichever the build found. The tests
// are written against v2's names; v3 keeps the string matchers in
// Catch::Matchers and calls Contains ContainsSubstring.
#if defined(RECTRAIN_CATCH2_V3)
#include <catch2/catch_all.hpp>
namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text) {
  return Matchers::ContainsSubstring(text);
}
using Matchers::EndsWith;
using Matchers::StartsWith;
} // namespace Catch
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
