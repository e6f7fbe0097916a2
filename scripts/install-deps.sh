#!/usr/bin/env bash
# Installs the Debian packages rectrain builds, tests and runs with (as root,
# or through sudo). Does nothing when they are all present already.
set -euo pipefail

packages=(
  cmake ninja-build g++
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-openmp     # without it LibTorch falls back to reference BLAS (~20x slower GEMM)
  libeigen3-dev catch2 libcli11-dev
  libgloo-dev             # the Gloo headers LibTorch's ProcessGroupGloo needs (multi-process training on CPU)
  gnuplot-nox             # rectrain-vk train draws its learning curve with it
  python3-torch           # only for the test that reads a file written by Python's torch.save
)

# `install-deps.sh sanitizers`: also clang-14 and its sanitizer and libFuzzer
# runtimes (scripts/test-sanitizers.sh).
if [ "${1:-}" = "sanitizers" ]; then
  packages+=(clang-14 libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "rectrain: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
