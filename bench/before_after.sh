#!/usr/bin/env bash
# Interleaved before/after of the in-process figures: the store's rows of
# cache_bench, the limiter's of limiter_bench (in process and shared
# memory), and the hit ratios. Each round runs BEFORE's binaries, then
# AFTER's, so that the drift of a noisy host falls on both; each row's figure
# is the median over rounds of each build's median of 3 repetitions.
# hit_ratio is deterministic for its seed: its tables must be identical.
#
#   bench/before_after.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR     (ROUNDS=3)
#
# To build a BEFORE: git worktree add /tmp/old REV && cmake -S /tmp/old -B
# /tmp/old-build -G Ninja && ninja -C /tmp/old-build cache_bench limiter_bench hit_ratio
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/before_after.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR" >&2; exit 2; }
rounds=${ROUNDS:-3}
for dir in "$1" "$2"; do
  for tool in cache_bench limiter_bench hit_ratio; do
    [ -x "$dir/bench/$tool" ] || { echo "before_after: $dir/bench/$tool missing: build it first" >&2; exit 2; }
  done
done
work=$(mktemp -d /tmp/cachet-before-after.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

store='BM_(GetHit|GetMiss|Set)/hot:(0|1)/real_time/threads:1$'
limiter='BM_(Check|ShmCheck)/algorithm:(1|3)/keys:(1|1000000)/'

# medians NAME BUILD_DIR TOOL FILTER: appends "row ns" lines to $work/NAME
# (JSON, one field a line: the CSV reporter refuses rows whose counters differ.)
medians() {
  "$2/bench/$3" --benchmark_filter="$4" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_format=json 2>/dev/null |
    awk -F'"' '$2 == "name" { name = $4 } $2 == "real_time" && name ~ /_median$/ {
      sub(/_median$/, "", name); v = $3; gsub(/[ :,]/, "", v); printf "%s %.3f\n", name, v; name = "" }' >> "$work/$1"
}

for r in $(seq 1 "$rounds"); do
  echo "round $r of $rounds ..." >&2
  for side in before after; do
    dir=$1
    [ "$side" = after ] && dir=$2
    medians "$side" "$dir" cache_bench "$store"
    medians "$side" "$dir" limiter_bench "$limiter"
  done
done

median_of() {  # ROW FILE
  awk -v row="$1" '$1 == row { print $2 }' "$2" | sort -n |
    awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}
echo
echo "| row | before ns | after ns | after / before |"
echo "|---|---|---|---|"
awk '{print $1}' "$work/before" | awk '!seen[$0]++' | while read -r row; do
  b=$(median_of "$row" "$work/before")
  a=$(median_of "$row" "$work/after")
  [ -n "$b" ] && [ -n "$a" ] || continue  # a row only one side has
  printf '| %s | %.1f | %.1f | %.2f |\n' "$row" "$b" "$a" "$(echo "$a / $b" | bc -l)"
done

"$1/bench/hit_ratio" --requests 2000000 > "$work/hit_before"
"$2/bench/hit_ratio" --requests 2000000 > "$work/hit_after"
echo
if cmp -s "$work/hit_before" "$work/hit_after"; then
  echo "hit ratios: identical ($(grep -c '^| zipf' "$work/hit_after") rows)"
else
  echo "hit ratios differ:"
  diff "$work/hit_before" "$work/hit_after" || true
  exit 1
fi
