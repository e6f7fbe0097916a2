#!/usr/bin/env bash
# Quick start: install what is missing, build rectrain-vk, run its demo
# (synthetic data -> group sampler and batch pipeline -> baselines' GAUC).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target rectrain-vk
threads=$(nproc)
export OMP_NUM_THREADS=$threads
./build/examples/vk_ranker/rectrain-vk --threads "$threads" demo "$@"
