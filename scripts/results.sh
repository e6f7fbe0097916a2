#!/usr/bin/env bash
# One row of docs/results.md: on one dataset, the baselines' GAUC on
# candidates.csv, the ALS dot product, and rectrain-vk train with its
# defaults and the recipe's ablations (random init, never frozen), and
# without the item view-count feature rectrain-vk adds; each with 3 seeds
# (single models and their ensemble).
#
#   bash scripts/results.sh ../shared/data/mlsmall out/mlsmall [extra train flags]
#
# Builds rectrain-vk if needed. Logs and outputs stay in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/results.sh DATA_DIR OUT_DIR [train flags...]" >&2
  exit 2
fi
data=$1
out=$2
shift 2
vk=build/examples/vk_ranker/rectrain-vk
[ -x "$vk" ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build --target rectrain-vk; }
threads=${THREADS:-$(nproc)}
export OMP_NUM_THREADS=$threads
mkdir -p "$out"
start=$(date +%s)

"$vk" --threads "$threads" baseline --data "$data" --predictions "$out/baseline.csv" >"$out/baseline.log"
for variant in recipe no-als no-freeze no-popularity; do
  flag=""
  [ "$variant" = recipe ] || flag="--$variant"
  "$vk" --threads "$threads" train --data "$data" --out "$out/$variant" $flag "$@" >"$out/$variant.log" 2>/dev/null
done
factors=$(sed -n 's/.*ALS init (\([0-9]*\) + .*/\1/p' "$out/recipe.log" | head -1)
"$vk" --threads "$threads" als --data "$data" --out "$out/als" --factors "$factors" --source-factors 0 >"$out/als.log"

gauc() { awk -v name="$1" '$1 == name {print $3}' "$2"; }
# Single-seed GAUCs of a train log: "mean (min-max)"; then the ensemble's.
seeds() {
  grep -E '^seed [0-9]+: candidates GAUC' "$1" | awk '{g=$5; s+=g; n++; if(n==1||g<lo)lo=g; if(n==1||g>hi)hi=g}
    END {printf "%.4f (%.4f–%.4f)", s/n, lo, hi}'
}
ensemble() { sed -n 's/^ensemble: candidates GAUC \([0-9.]*\).*/\1/p' "$1" | awk '{printf "%.4f", $1}'; }

printf '| dataset | random | popularity | like-rate | ALS dot (f=%s) | recipe, 1 seed: mean (range of 3) | recipe, 3-seed ensemble | random init: 1 seed / ensemble | never frozen: 1 seed / ensemble | no view count: 1 seed / ensemble |\n' "$factors"
printf '|---|---|---|---|---|---|---|---|---|---|\n'
printf '| %s | %.4f | %.4f | %.4f | %.4f | %s | **%s** | %s / %s | %s / %s | %s / %s |\n' "$(basename "$data")" \
  "$(gauc random "$out/baseline.log")" "$(gauc popularity "$out/baseline.log")" "$(gauc like_rate "$out/baseline.log")" \
  "$(gauc als_dot "$out/als.log")" "$(seeds "$out/recipe.log")" "$(ensemble "$out/recipe.log")" \
  "$(seeds "$out/no-als.log" | cut -d' ' -f1)" "$(ensemble "$out/no-als.log")" \
  "$(seeds "$out/no-freeze.log" | cut -d' ' -f1)" "$(ensemble "$out/no-freeze.log")" \
  "$(seeds "$out/no-popularity.log" | cut -d' ' -f1)" "$(ensemble "$out/no-popularity.log")"
echo "($(( $(date +%s) - start )) s, $threads threads; logs in $out)"
