#!/usr/bin/env bash
# Runs every libFuzzer target of a build (RECTRAIN_BUILD_FUZZERS=ON) for
# SECONDS each, over a scratch copy of its seed corpus in tests/fuzz/corpus.
# Fails on the first crash, hang (10 s per input), leak or out-of-memory
# (3 GB); the input that did it is kept in <build>/fuzz-findings.
#   scripts/fuzz.sh [build dir] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-sanitize}
seconds=${2:-60}
findings="$build/fuzz-findings"
mkdir -p "$findings"
for target in fuzz_csv fuzz_tensor_file fuzz_checkpoint; do
  corpus="$build/fuzz-corpus/$target"
  rm -rf "$corpus" && mkdir -p "$corpus"
  cp tests/fuzz/corpus/$target/* "$corpus"/
  echo "fuzz: $target for ${seconds}s"
  if ! "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3000 \
       -print_final_stats=1 -artifact_prefix="$findings/$target-" "$corpus" > "$build/$target.log" 2>&1; then
    tail -60 "$build/$target.log"
    echo "fuzz: $target found a problem; the input is in $findings (add it to tests/fuzz/regressions/$target)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/$target.log" | sed "s/^/fuzz: $target /"
done
