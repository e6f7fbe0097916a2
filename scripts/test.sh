#!/usr/bin/env bash
# Builds everything (library, examples, benchmarks, tests) and runs the
# whole test suite with ctest. Tests that need ../shared/data or a GPU skip
# cleanly without them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRECTRAIN_BUILD_TESTS=ON -DRECTRAIN_BUILD_EXAMPLES=ON >/dev/null
cmake --build build
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd build
# The consumer projects (compiles) build while the suite runs.
ctest --output-on-failure -j "$(nproc)" "$@"
