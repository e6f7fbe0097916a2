#!/usr/bin/env bash
# One block of docs/retrieval.md's results table: on one positives file
# (user_id,item_id), a per-user 80/20 split (seed 1), then popularity, ALS,
# and matrix factorisation trained with each negative sampler, 3 seeds each;
# prints a markdown table of the final epoch's P@10, NDCG@20 and Recall@20
# (mean and spread over seeds) and the training seconds.
#
#   bash scripts/retrieval-results.sh POSITIVES.csv OUT_DIR [train flags...]
#
# SAMPLERS and SEEDS override the lists; EPOCHS the epochs (default 20).
# Builds rectrain-retrieval if needed. Logs and outputs stay in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/retrieval-results.sh POSITIVES.csv OUT_DIR [train flags...]" >&2
  exit 2
fi
input=$1
out=$2
shift 2
bin=build/examples/retrieval/rectrain-retrieval
[ -x "$bin" ] || { cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build --target rectrain-retrieval; }
threads=${THREADS:-$(nproc)}
samplers=${SAMPLERS:-"uniform popularity in-batch dynamic augmented"}
seeds=${SEEDS:-"1 2 3"}
epochs=${EPOCHS:-20}
mkdir -p "$out"
r() { "$bin" --threads "$threads" "$@"; }

r split --input "$input" --train-out "$out/train.csv" --test-out "$out/test.csv" --seed 1 >"$out/split.log" 2>&1
# metric NAME FILE: the value on the last line that has NAME.
metric() { grep -o "$1 [0-9.e-]*" "$2" | tail -1 | awk '{print $2}'; }
row() {  # row LABEL SECONDS FILES...: mean ± half-range over the files
  local label=$1 seconds=$2
  shift 2
  local cells=""
  for m in precision@10 ndcg@20 recall@20; do
    local values=""
    for f in "$@"; do values="$values $(metric "$m" "$f")"; done
    cells="$cells | $(echo "$values" | awk '{s=0; lo=1e9; hi=-1e9; for(i=1;i<=NF;i++){s+=$i; if($i<lo)lo=$i; if($i>hi)hi=$i} printf "%.4f", s/NF; if (NF>1) printf " ± %.4f", (hi-lo)/2}')"
  done
  echo "| $label$cells | $seconds |"
}

echo "$(cat "$out/split.log")"
echo "| model | P@10 | NDCG@20 | Recall@20 | train s (mean) |"
echo "|---|---|---|---|---|"
r popularity --train "$out/train.csv" --test "$out/test.csv" >"$out/popularity.log" 2>&1
row "popularity" "-" "$out/popularity.log"
r als --train "$out/train.csv" --test "$out/test.csv" --out "$out/als" --dim 64 --regularization 0.1 >"$out/als.log" 2>&1
row "ALS (f 64, λ 0.1, 15 it.)" "$(grep -o '[0-9.]* s$' "$out/als.log" | awk '{print $1}')" "$out/als.log"
for s in $samplers; do
  files=()
  total=0
  for seed in $seeds; do
    log="$out/mf-$s-$seed.log"
    r train --train "$out/train.csv" --test "$out/test.csv" --negatives "$s" --epochs "$epochs" --seed "$seed" \
      --out "$out/mf-$s-$seed" "$@" >"$log" 2>&1
    files+=("$log")
    total=$(awk -v t="$total" '/of training/ {print t + $2}' "$log")
  done
  row "MF, $s" "$(awk -v t="$total" -v n="${#files[@]}" 'BEGIN {printf "%.1f", t / n}')" "${files[@]}"
done
