#!/usr/bin/env bash
# One client flooding cachetd while another sends one request at a time:
# the quiet client's p99 alone and beside the flood (bench/flood_bench),
# over a cachetd started here on a free loopback port and stopped at the
# end. Each run alternates quiet and flooded rounds; the table gives each
# run's medians, and the median ratio over runs.
#
#   bench/flood_fairness.sh        (BUILD_DIR=build REPEAT=5 WINDOW=256)
#   STREAM=1 bench/flood_fairness.sh   (both clients on the stream endpoint)
#   CACHETD=/path/to/cachetd ...       (another build's daemon, for A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
repeat=${REPEAT:-5}
window=${WINDOW:-256}
bench="$build/bench/flood_bench"
cachetd=${CACHETD:-$build/daemon/cachetd}
[ -x "$bench" ] || { echo "flood_fairness: $bench missing: build first" >&2; exit 2; }

work=$(mktemp -d /tmp/cachet-flood.XXXXXX)
segment="cachet-flood-$$"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work" "/dev/shm/$segment"
}
trap cleanup EXIT INT TERM

. bench/lib.sh  # free_port (the scripts run from the checkout's root)
port=$(free_port) || exit 1
endpoint="tcp://127.0.0.1:$port"
stream_args=()
if [ "${STREAM:-0}" = 1 ]; then
  stream_port=$(free_port) || exit 1
  stream_args=(--stream "127.0.0.1:$stream_port")
  endpoint="stream://127.0.0.1:$stream_port"
fi
"$cachetd" --segment "$segment" --ipc "" --tcp "tcp://127.0.0.1:$port" "${stream_args[@]}" \
  --log-file "$work/cachetd.log" &
pid=$!
for _ in $(seq 1 200); do
  grep -q " ready: " "$work/cachetd.log" 2>/dev/null && break
  sleep 0.05
done

echo "flood_fairness: $endpoint, $window GETs in flight"
printf '%-4s %14s %16s %7s %14s\n' run "quiet p99 us" "flooded p99 us" ratio "flood replies/s"
ratios=()
for run in $(seq 1 "$repeat"); do
  line=$("$bench" --endpoint "$endpoint" --window "$window")
  get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$line"; }
  printf '%-4s %14s %16s %7s %14s\n' "$run" "$(get quiet_p99_us)" "$(get flooded_p99_us)" "$(get ratio)" \
    "$(get flood_per_s)"
  ratios+=("$(get ratio)")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "median ratio flooded/quiet p99 over $repeat runs: $median (the bound is 2)"
