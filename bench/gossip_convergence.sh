#!/usr/bin/env bash
# GossipRateLimiter after a partition heals: the time from the heal until
# every host sees a key's true count (p50, p99, max over TRIALS trials), for
# 2, 3 and 5 hosts with the connections cut (reset and refused), and for 3
# hosts with a blackhole (bytes dropped, connections kept). Every host is a
# limiter in one process of build/bench/gossip_bench, each link through a
# TCP proxy that makes the cut; nothing else is started. Writes a Markdown
# table and the raw lines. With TRIALS=50 it takes about 5 minutes.
#   bench/gossip_convergence.sh   (BUILD_DIR=build OUT=/tmp TRIALS=30 SYNC_MS=10 SNAPSHOT_MS=1000 HOSTS="2 3 5")
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
out=${OUT:-/tmp}
trials=${TRIALS:-30}
sync_ms=${SYNC_MS:-10}
snapshot_ms=${SNAPSHOT_MS:-1000}
hosts_list=${HOSTS:-2 3 5}
bench="$build/bench/gossip_bench"
[ -x "$bench" ] || { echo "gossip_convergence: build $bench first (cmake --build $build --target gossip_bench)" >&2; exit 2; }
mkdir -p "$out"
raw="$out/gossip_convergence.tsv"
: >"$raw"

echo "convergence after a heal: $trials trials per row, sync $sync_ms ms, snapshot $snapshot_ms ms"
run() {  # hosts cut
  "$bench" convergence --trials "$trials" --hosts "$1" --cut "$2" --sync-interval-ms "$sync_ms" \
    --snapshot-interval-ms "$snapshot_ms" | tee -a "$raw" >/dev/null
  printf '.'
}
for hosts in $hosts_list; do run "$hosts" refuse; done
run 3 drop
echo

table="$out/gossip_convergence.md"
{
  echo "| hosts | cut | sync | snapshot | trials | p50 | p99 | max | mean | cut-off host p50 | others p50 | not converged in 5 s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s ms | %s ms | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s |\n",
                $1, $4, $2, $3, $5, $7, $8, $9, $10, $11, $12, $6 }' "$raw"
} >"$table"
cat "$table"
echo "raw: $raw"
