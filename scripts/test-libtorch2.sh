#!/usr/bin/env bash
# Builds and tests rectrain against LibTorch 2.x (Debian trixie's libtorch-dev,
# with Catch2 v3) inside a debootstrap chroot, as root: the library, the
# tests (which build rectrain-vk) and the find_package consumer, at -O1 (the
# benchmark programs, the custom_head example and the add_subdirectory
# consumer are built against LibTorch 1.13 only, in the first pass, to keep
# CI under 30 minutes). The chroot
# (1.8 GB, about two minutes to make) is kept outside the clone, in
# $RECTRAIN_TRIXIE_ROOT (default /var/cache/rectrain/trixie), and reused by
# later runs and clones; only the sources and the build inside it are new
# each time. Exits 0 with a note when the Debian mirror cannot
# be reached (nothing was tested); any build or test failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
root=${RECTRAIN_TRIXIE_ROOT:-/var/cache/rectrain/trixie}
mirror=${RECTRAIN_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
  echo "test-libtorch2: needs root (debootstrap and chroot); skipped"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mounted=()
cleanup() {
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ ! -x "$root/usr/bin/cmake" ]; then
  rm -rf "$root" && mkdir -p "$(dirname "$root")"
  if ! debootstrap --variant=minbase trixie "$root" "$mirror" >"$repo/build-trixie.log" 2>&1; then
    echo "test-libtorch2: debootstrap of trixie failed (mirror unreachable?); skipped. See build-trixie.log"
    rm -rf "$root"
    exit 0
  fi
fi
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
if ! chroot "$root" /bin/bash -c "dpkg -s libtorch-dev catch2 libcli11-dev gnuplot-nox libgloo-dev >/dev/null 2>&1" ; then
  if ! chroot "$root" /bin/bash -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends cmake ninja-build g++ libtorch-dev libeigen3-dev gnuplot-nox \
          catch2 libcli11-dev libopenblas0-openmp libgloo-dev" >>"$repo/build-trixie.log" 2>&1; then
    echo "test-libtorch2: installing LibTorch 2.x in the chroot failed (mirror unreachable?); skipped"
    exit 0
  fi
fi

# The working tree (tracked and untracked, not ignored files) and ../shared.
rm -rf "$root/src" && mkdir -p "$root/src/main"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$root/src/main"
if [ -d "$repo/../shared" ]; then
  mkdir -p "$root/src/shared" && mount --bind "$repo/../shared" "$root/src/shared" && mounted+=("$root/src/shared")
fi
chroot "$root" /bin/bash -c "echo test-libtorch2: \$(dpkg-query -W -f='\${Package} \${Version} ' libtorch-dev catch2)
  cd /src/main && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release '-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG' \
    -DRECTRAIN_BUILD_TESTS=ON -DRECTRAIN_BUILD_EXAMPLES=OFF -DRECTRAIN_BUILD_BENCHMARKS=OFF >/dev/null &&
  cmake --build build && cd build && OMP_NUM_THREADS=2 ctest --output-on-failure -j \$(nproc) -E '^consumer_add_subdirectory\$'"
