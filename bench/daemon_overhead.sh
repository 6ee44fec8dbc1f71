#!/usr/bin/env bash
# What a feature of cachetd costs it under load: the same daemon binary with
# and without FEATURE, loaded by cachet-load over tcp (every GET and SET a
# request to the daemon), runs alternating. Prints each run and the
# medians' ratios, with / without, of two figures: throughput (ops/s), which
# on a shared machine moves with whatever else runs, and the daemon's CPU
# time per request (user + system, from /proc), which moves much less.
#
# FEATURE:
#   metrics  the Prometheus endpoint, with a scraper GETting /metrics every
#            SCRAPE_EVERY seconds (default 1, more often than Prometheus's
#            usual 15 s; 0: none)
#   curve    CURVE on the tcp endpoint: keys from cachectl keygen, the
#            client's admitted, every request and reply encrypted
#   stream   the stream endpoint listening beside the tcp one, no client
#            on it: what polling its epoll descriptor among the ZeroMQ
#            sockets costs the ZeroMQ path
#
#   bench/daemon_overhead.sh metrics|curve|stream     (BUILD_DIR=build SECONDS_PER_RUN=5 REPEAT=5 CLIENTS=4
#                                               MIX=get=80,set=20 SCRAPE_EVERY=1)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
seconds=${SECONDS_PER_RUN:-5}
repeat=${REPEAT:-5}
clients=${CLIENTS:-4}
mix=${MIX:-get=80,set=20}
scrape_every=${SCRAPE_EVERY:-1}
feature=${1:-}
cachetd="$build/daemon/cachetd"
load="$build/bench/cachet-load"
cachectl="$build/cli/cachectl"
case "$feature" in
  metrics) command -v curl >/dev/null || { echo "daemon_overhead: curl missing" >&2; exit 2; } ;;
  curve | stream) ;;
  *) echo "usage: bench/daemon_overhead.sh metrics|curve|stream" >&2; exit 2 ;;
esac
for f in "$cachetd" "$load" "$cachectl"; do
  [ -x "$f" ] || { echo "daemon_overhead: $f missing: build first" >&2; exit 2; }
done

work=$(mktemp -d /tmp/cachet-overhead-bench.XXXXXX)
segment="cachet-overhead-bench-$$"
daemon_pid="" scraper_pid=""
stop_daemon() {
  [ -n "$scraper_pid" ] && kill "$scraper_pid" 2>/dev/null && wait "$scraper_pid" 2>/dev/null || true
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  daemon_pid="" scraper_pid=""
}
cleanup() { stop_daemon; rm -rf "$work" "/dev/shm/$segment" "/dev/shm/$segment.lock"; }
trap cleanup EXIT INT TERM

# The daemon's CPU time so far, in clock ticks (utime + stime).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The feature's options for cachetd and for cachet-load.
daemon_with=() load_with=()
case "$feature" in
  metrics) daemon_with=(--metrics 127.0.0.1:0) ;;
  stream) daemon_with=(--stream 127.0.0.1:0) ;;
  curve)
    "$cachectl" keygen "$work/server" >/dev/null
    "$cachectl" keygen "$work/client" >/dev/null
    echo "$(sed -n 's/^public-key = //p' "$work/client.pub") bench write" > "$work/clients.keys"
    daemon_with=(--curve-secret-key "$work/server.key" --curve-authorized-keys "$work/clients.keys")
    load_with=(--server-key "$work/server.pub" --key "$work/client.key")
    ;;
esac

# run WITH_FEATURE(0|1): prints "ops/s cpu-us-per-op" of one run.
run() {
  local extra=() client=() log="$work/cachetd.log"
  [ "$1" = 1 ] && extra=("${daemon_with[@]}") client=("${load_with[@]}")
  : > "$log"
  "$cachetd" --segment "$segment" --ipc "ipc://$work/cachetd.sock" --tcp tcp://127.0.0.1:0 --capacity 64MiB \
    --log-file "$log" "${extra[@]}" &
  daemon_pid=$!
  for _ in $(seq 1 200); do grep -q " ready: " "$log" && break; sleep 0.05; done
  local tcp url
  tcp=$(sed -n 's/.*listening on \(tcp:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$tcp" ] || { echo "daemon_overhead: cachetd did not start:" >&2; cat "$log" >&2; exit 1; }
  if [ "$1" = 1 ] && [ "$feature" = metrics ] && [ "$scrape_every" != 0 ]; then
    url=$(sed -n 's/.*metrics on \(http:[^ ]*\).*/\1/p' "$log")
    (while sleep "$scrape_every"; do curl -s -o /dev/null "$url" || true; done) &
    scraper_pid=$!
  fi
  local before after report ops ops_per_s
  before=$(cpu_ticks "$daemon_pid")
  report=$("$load" --endpoint "$tcp" --clients "$clients" --duration "$seconds" --mix "$mix" --json --quiet "${client[@]}")
  after=$(cpu_ticks "$daemon_pid")
  ops=$(sed -n 's/.*"ops": \([0-9]*\).*/\1/p' <<<"$report")
  ops_per_s=$(sed -n 's/.*"ops_per_s": \([0-9.]*\).*/\1/p' <<<"$report")
  stop_daemon
  awk -v r="$ops_per_s" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v n="$ops" \
    'BEGIN { printf "%s %.3f\n", r, t * 1e6 / hz / n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

without=() with=() cpu_without=() cpu_with=()
for i in $(seq 1 "$repeat"); do
  read -r a ca <<<"$(run 0)"
  read -r b cb <<<"$(run 1)"
  without+=("$a") with+=("$b") cpu_without+=("$ca") cpu_with+=("$cb")
  printf 'run %d: without %.0f ops/s (%s us CPU/op), with %.0f ops/s (%s us CPU/op)\n' "$i" "$a" "$ca" "$b" "$cb"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
m0=$(printf '%s\n' "${without[@]}" | median) m1=$(printf '%s\n' "${with[@]}" | median)
c0=$(printf '%s\n' "${cpu_without[@]}" | median) c1=$(printf '%s\n' "${cpu_with[@]}" | median)
printf 'median ops/s: without %.0f, with %.0f, ratio with/without %s\n' "$m0" "$m1" "$(ratio "$m1" "$m0")"
printf 'median daemon CPU per op: without %s us, with %s us, ratio with/without %s\n' "$c0" "$c1" "$(ratio "$c1" "$c0")"
