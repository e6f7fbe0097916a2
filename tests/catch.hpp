#pragma once
// Catch2 v2 (Debian bookworm) or v3, whichever the build found.
#if defined(RECTRAIN_CATCH2_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
