#!/usr/bin/env bash
# Quick start: install what is missing, build rectrain-vk, write a small
# synthetic dataset, score the baselines on it and train the recipe
# (3 seeds, 5 frozen + 1 unfrozen epochs). Outputs go to DIR (default
# /tmp/rectrain-quickstart): data/, baseline.csv, out/ (models, metrics.jsonl,
# learning_curve.png, predictions.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/rectrain-quickstart}
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target rectrain-vk
threads=$(nproc)
export OMP_NUM_THREADS=$threads
vk="./build/examples/vk_ranker/rectrain-vk --threads $threads"
$vk synth --scale 0.003 --seed 1 --out "$dir/data"
$vk baseline --data "$dir/data" --predictions "$dir/baseline.csv"
$vk train --data "$dir/data" --out "$dir/out" --overwrite  # a rerun replaces the last one
