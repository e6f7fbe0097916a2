#!/usr/bin/env bash
# Runs every libFuzzer target of a build (RECTRAIN_BUILD_FUZZERS=ON) for
# SECONDS each, over a scratch copy of its seed corpus in tests/fuzz/corpus.
# The targets run side by side (libFuzzer uses one core each). Fails on a
# crash, hang (10 s per input), leak or out-of-memory (3 GB) in any of
# them; the input that did it is kept in <build>/fuzz-findings.
#   scripts/fuzz.sh [build dir] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-sanitize}
seconds=${2:-60}
findings="$build/fuzz-findings"
targets=(fuzz_csv fuzz_tensor_file fuzz_checkpoint)
mkdir -p "$findings"
pids=()
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target"
  rm -rf "$corpus" && mkdir -p "$corpus"
  cp tests/fuzz/corpus/$target/* "$corpus"/
  echo "fuzz: $target for ${seconds}s"
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3000 \
    -print_final_stats=1 -artifact_prefix="$findings/$target-" "$corpus" > "$build/$target.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  if ! wait "${pids[$i]}"; then
    tail -60 "$build/$target.log"
    echo "fuzz: $target found a problem; the input is in $findings (add it to tests/fuzz/regressions/$target)"
    failed=1
    continue
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/$target.log" | sed "s/^/fuzz: $target /"
done
exit $failed
