#!/usr/bin/env bash
# The GPU check, in one run of under 8 minutes: on a machine with CUDA and
# PyTorch's LibTorch, builds this tree against that LibTorch and runs
#   1. the [cuda] tests (two ranks on CUDA tensors among them: Gloo on one
#      GPU, NCCL with two),
#   2. als_bench (TensorOps backend), model_bench, retrieval_bench and, with two GPUs,
#      dist_bench (NCCL) on cuda,
#   3. a short `rectrain-vk train --device cuda` on a 0.05-scale synthetic set.
# Eigen, Catch2 and CLI11 need not be installed there: their headers and
# CMake files are taken from .deps/ (ignored by git), which
# `scripts/test-cuda.sh --pack` fills on a machine that has them (Debian:
# libeigen3-dev, catch2, libcli11-dev).
# Figures go to stdout and to $OUT/cuda-report.txt when OUT is set.
# On a machine without CUDA it says so and exits 0; any failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
deps="$repo/.deps"

if [ "${1:-}" = "--pack" ]; then
  rm -rf "$deps" && mkdir -p "$deps/include" "$deps/share/eigen3" "$deps/lib/cmake" "$deps/share/cmake"
  # Their CMake package files find the headers relative to themselves.
  cp -r /usr/include/eigen3 /usr/include/catch2 /usr/include/CLI "$deps/include/"
  cp -r /usr/share/eigen3/cmake "$deps/share/eigen3/"
  cp -r /usr/lib/cmake/Catch2 "$deps/lib/cmake/" && cp /usr/lib/libCatch2WithMain.a "$deps/lib/"
  cp -r "$(dirname "$(dpkg -L libcli11-dev | grep -m1 'CLI11Config.cmake$')")" "$deps/share/cmake/"
  echo "test-cuda: packed Eigen, Catch2 and CLI11 into $deps ($(du -sh "$deps" | cut -f1))"
  exit 0
fi

report=${OUT:+$OUT/cuda-report.txt}
say() { echo "$@"; if [ -n "$report" ]; then echo "$@" >>"$report"; fi; }
run_logged() {  # command..., its output to stdout and the report
  if [ -n "$report" ]; then "$@" 2>&1 | tee -a "$report"; return "${PIPESTATUS[0]}"; else "$@" 2>&1; fi
}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
has_cuda=$(python3 -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ -z "$torch_prefix" ] || [ "$has_cuda" != 1 ]; then
  say "test-cuda: no CUDA here (PyTorch's LibTorch with a visible GPU is needed); nothing tested"
  exit 0
fi
say "test-cuda: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
say "test-cuda: PyTorch $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

# PyTorch's wheels keep nccl.h in the nvidia-nccl package, off LibTorch's
# include path: rectrain/dist finds NCCL (and its CMake check passes) with it.
nccl_include=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null || true)
extra_flags=""
if [ -n "$nccl_include" ] && [ -f "$nccl_include/nccl.h" ]; then extra_flags="-isystem $nccl_include"; fi
prefix="$torch_prefix"
if [ -d "$deps" ]; then prefix="$prefix;$deps"; fi
# File by file (no unity build): the machine has many cores for one unit each.
cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DRECTRAIN_BUILD_TESTS=ON -DRECTRAIN_BUILD_EXAMPLES=ON -DRECTRAIN_UNITY_BUILD=OFF -DRECTRAIN_NATIVE_ARCH=OFF ${CMAKE_GENERATOR:+-G "$CMAKE_GENERATOR"} \
  ${extra_flags:+"-DCMAKE_CXX_FLAGS=$extra_flags"} \
  >build-cuda.log 2>&1 || { tail -40 build-cuda.log; exit 1; }
cmake --build build-cuda -j "$(nproc)" --target rectrain_tests rectrain-vk rectrain-bench >>build-cuda.log 2>&1 ||
  { grep -E 'error|Error' build-cuda.log | head -40; exit 1; }
say "test-cuda: built in $(elapsed) s; $(grep -m1 'distributed backends' build-cuda.log || echo 'distributed backends: not reported')"

bin=build-cuda/examples
status=0
say "== [cuda] tests"
run_logged build-cuda/tests/rectrain_tests '[cuda]' || status=1

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
run_logged "$bin/vk_ranker/rectrain-vk" --threads 4 synth --scale 0.05 --seed 7 --out "$data/d" | tail -2
say "== als_bench on cuda (the 0.05 synthetic set's interactions)"
# One row per (user, item) pair, as als_bench expects.
python3 - "$data/d/interactions.csv" "$data/pairs.csv" <<'PY'
import csv, sys
seen = set()
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    r = csv.DictReader(f)
    out.write("user_id,item_id\n")
    for row in r:
        key = (row["user_id"], row["item_id"])
        if key not in seen:
            seen.add(key)
            out.write(f"{key[0]},{key[1]}\n")
PY
for f in 64 256; do
  for c in 1 10; do
    run_logged timeout 120 "$bin/bench/als_bench" --input "$data/pairs.csv" --factors $f --iterations 4 --threads 4 \
      --confidence $c --backend tensor --device cuda | grep -E 'device|factors|seconds_per|loss' || status=1
  done
done
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then
  say "== dist_bench on cuda (NCCL, 2 ranks)"
  run_logged timeout 240 "$bin/bench/dist_bench" --device cuda --nproc 2 --threads 4 --runs 5 | grep -vE '^#' || status=1
else
  say "== dist_bench on cuda skipped: $gpus GPU (NCCL needs one per rank)"
fi
say "== model_bench on cuda"
run_logged timeout 180 "$bin/bench/model_bench" --part all --device cuda --runs 5 | grep -vE '^#' || status=1
say "== retrieval_bench on cuda (1M interactions; evaluation of 100k users x 300k items)"
run_logged timeout 240 "$bin/bench/retrieval_bench" --device cuda --interactions 1000000 --users 100000 --items 300000 \
  --steps 30 --threads 4 | grep -vE '^#' || status=1
say "== rectrain-vk train on cuda (0.05 scale, one frozen and one unfrozen epoch)"
run_logged timeout 180 "$bin/vk_ranker/rectrain-vk" --threads 4 train --data "$data/d" --out "$data/out" --device cuda \
  --frozen-epochs 1 --unfrozen-epochs 1 --seeds 1 --als-iterations 3 || status=1
say "test-cuda: done in $(elapsed) s, $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
