#!/usr/bin/env bash
# Picks among named presets of rectrain-vk train by validation GAUC only:
# trains each preset (3 seeds by default), reads every seed's validation
# GAUC after its last epoch from metrics.jsonl, and names the preset with
# the best mean. The candidates' GAUC, when candidates.csv has targets, is
# printed beside it for information and never used to choose.
#
#   bash scripts/sweep.sh ../shared/data/mlsmall out/sweep-mlsmall [preset ...]
#
# Presets (all when none is named): recipe (the defaults), history
# (--history 16 --history-similarity), history+attention (the same with
# --history-attention), history-similarities (the same with
# --no-history-vectors), statistics (--statistics), cross (--cross-layers
# 2), experts (--experts 4), history+statistics, content
# (--content-affinity) and history+content; the content presets are skipped
# on data without content vectors.
# EXTRA="--seeds 4,5,6" adds flags to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/sweep.sh DATA_DIR OUT_DIR [preset ...]" >&2
  exit 2
fi
data=$1
out=$2
shift 2

declare -A presets=(
  [recipe]=""
  [history]="--history 16 --history-similarity"
  [history+attention]="--history 16 --history-similarity --history-attention"
  [history-similarities]="--history 16 --history-similarity --no-history-vectors"
  [statistics]="--statistics"
  [cross]="--cross-layers 2"
  [experts]="--experts 4"
  [history+statistics]="--history 16 --history-similarity --statistics"
  [content]="--content-affinity"
  [history+content]="--history 16 --history-similarity --content-affinity"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(recipe history history+attention history-similarities statistics cross experts history+statistics content history+content)
for name in "${names[@]}"; do
  [ -n "${presets[$name]+set}" ] || { echo "sweep: unknown preset '$name' (known: ${!presets[*]})" >&2; exit 2; }
done

vk=build/examples/vk_ranker/rectrain-vk
[ -x "$vk" ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build --target rectrain-vk; }
threads=${THREADS:-$(nproc)}
export OMP_NUM_THREADS=$threads
mkdir -p "$out"

best="" best_valid=""
printf '%-20s %-12s %-12s %s\n' preset "valid GAUC" "candidates" flags
for name in "${names[@]}"; do
  dir="$out/$name"
  # shellcheck disable=SC2086  # the preset's flags are words
  "$vk" --threads "$threads" train --data "$data" --out "$dir" --overwrite ${presets[$name]} ${EXTRA:-} \
    >"$dir.log" 2>"$dir.err" || {
    if [[ "${presets[$name]}" == *--content-affinity* ]] && grep -q "content vectors" "$dir.err"; then
      printf '%-20s %-12s %-12s %s\n' "$name" "-" "-" "skipped: the data has no content vectors"
      continue
    fi
    echo "sweep: preset $name failed; see $dir.log and $dir.err" >&2
    exit 1
  }
  # The last record of each seed holds its final validation GAUC.
  valid=$(awk -F'"valid_gauc":' 'NF > 1 {split($1, a, "\"seed\":"); split(a[2], b, ","); split($2, c, ","); last[b[1]] = c[1]}
    END {n = 0; s = 0; for (k in last) {s += last[k]; n++}; if (n) printf "%.6f", s / n}' "$dir/metrics.jsonl")
  [ -n "$valid" ] || { echo "sweep: no validation GAUC in $dir/metrics.jsonl" >&2; exit 1; }
  candidates=$(sed -n 's/^\(ensemble\|model\): candidates GAUC \([0-9.]*\).*/\2/p' "$dir.log")
  printf '%-20s %-12s %-12s %s\n' "$name" "$valid" "${candidates:--}" "${presets[$name]:-(defaults)}"
  if [ -z "$best_valid" ] || awk -v a="$valid" -v b="$best_valid" 'BEGIN {exit !(a > b)}'; then
    best=$name best_valid=$valid
  fi
done
[ -n "$best" ] || { echo "sweep: no preset could run on $data" >&2; exit 1; }
echo "sweep: best by validation GAUC: $best ($best_valid); its predictions: $out/$best/predictions.csv"
