#!/usr/bin/env bash
# The soak (bench/soak.cc, cachet-soak) against a cachetd started here, on a
# free loopback port and a segment of its own, with a small rate-limit
# policy (one fixed_window rule, which cachet-soak checks decisions
# against); the daemon is stopped at the end. DURATION seconds of mixed, checked load
# with reconnecting clients; the per-second figures (ops/s, p99, cachetd's
# VmRSS) go to OUT.csv and OUT.png. Exits with cachet-soak's code: 0 passed,
# 1 a wrong reply, an error or memory past the bound, 2 bad set-up.
#
#   bench/soak.sh    (DURATION=600 BUILD_DIR=build CLIENTS=8 KEYS=1000 RSS_BOUND_MIB=16 OUT=$BUILD_DIR/soak SAME_HOST=0 STREAM=0)
#
# SAME_HOST=1 connects the clients over ipc:// instead of tcp://: they read
# and write the segment themselves (same-host writes), sharing its writer
# lock with each other and with the daemon's own writes (INCR's ttl sweep,
# RATELIMIT's table is apart), while the daemon answers the rest. STREAM=1
# connects them to the daemon's stream endpoint (plain TCP, no ZeroMQ).
#
duration=${DURATION:-600}
[ "$duration" -gt 0 ] 2>/dev/null || duration=600
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
clients=${CLIENTS:-8}
keys=${KEYS:-1000}
rss_bound=${RSS_BOUND_MIB:-16}
out=${OUT:-$build/soak}
cachetd="$build/daemon/cachetd"
soak="$build/bench/cachet-soak"
for f in "$cachetd" "$soak"; do
  [ -x "$f" ] || { echo "soak: $f missing: build first" >&2; exit 2; }
done

work=$(mktemp -d /tmp/cachet-soak.XXXXXX)
segment="cachet-soak-$$"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work" "/dev/shm/$segment" "/dev/shm/$segment-ratelimit" "/dev/shm/$segment.lock"
}
trap cleanup EXIT INT TERM

# 20 per second: a thread's own key is denied most of each second (it asks
# about 100 times), so both answers and the window's turn are checked.
cat > "$work/limits.ini" <<'INI'
[tier.soak]
per_second = 20/1s fixed_window
INI

. bench/lib.sh  # free_port (the scripts run from the checkout's root)
port=$(free_port) || exit 2
stream_port=$(free_port) || exit 2
# 64 MiB holds the soak's keys (CLIENTS x KEYS values of at most 512 bytes,
# and as many counters) many times over: nothing is evicted, so a miss is
# an expiry or a bug.
endpoint="tcp://127.0.0.1:$port"
ipc=""
if [ "${SAME_HOST:-0}" = 1 ]; then
  ipc="ipc://$work/cachetd.sock"
  endpoint=$ipc
fi
[ "${STREAM:-0}" = 1 ] && endpoint="stream://127.0.0.1:$stream_port"
"$cachetd" --segment "$segment" --ipc "$ipc" --tcp "tcp://127.0.0.1:$port" --stream "127.0.0.1:$stream_port" \
  --capacity 64MiB \
  --rate-limit-policy "$work/limits.ini" --log-file "$work/cachetd.log" &
pid=$!
for _ in $(seq 1 200); do
  grep -q " ready: " "$work/cachetd.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
grep -q " ready: " "$work/cachetd.log" 2>/dev/null || {
  echo "soak: cachetd did not start:" >&2
  cat "$work/cachetd.log" >&2
  exit 2
}

echo "soak: cachetd pid $pid, clients on $endpoint, $duration s, $clients clients; figures in $out.csv, $out.png"
status=0
"$soak" --endpoint "$endpoint" --pid "$pid" --duration "$duration" --clients "$clients" --keys "$keys" \
  --limit 20 --window 1000 --rss-bound "$rss_bound" --csv "$out.csv" --png "$out.png" || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "soak: cachetd died during the run; its log:" >&2
  cat "$work/cachetd.log" >&2
  [ "$status" != 0 ] || status=1
fi
exit "$status"
