#pragma once
// Catch2 v2 (Debian bookworm) or v3, whichever the build found. The tests
// are written against v2's names; v3 spells two of them differently.
#if defined(RECTRAIN_CATCH2_V3)
#include <catch2/catch_all.hpp>
namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text) {
  return Matchers::ContainsSubstring(text);
}
} // namespace Catch
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
