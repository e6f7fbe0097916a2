#pragma once

#define RECTRAIN_VERSION_MAJOR 0
#define RECTRAIN_VERSION_MINOR 1
#define RECTRAIN_VERSION_PATCH 0

namespace rectrain {
inline constexpr const char* version_string = "0.1.0";
} // namespace rectrain
