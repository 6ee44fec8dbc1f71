#!/usr/bin/env bash
# Side-by-side: cachetd and Debian's redis-server, started here on loopback
# and unix sockets, loaded by the same generator (bench/wire_bench) with the
# same 1,000,000 keys of 16 bytes and values of 100 bytes. Each scenario runs
# REPEAT times, alternating the two servers; the table shows medians and the
# ratio cachet / redis. Stops both servers when done (or interrupted).
#
#   bench/compare_redis.sh            (BUILD_DIR=build SECONDS_PER_RUN=5 REPEAT=3 KEYS=1000000 HUGE_PAGES=0)
#
# HUGE_PAGES=1 puts cachetd's segment on huge pages, as an operator would
# (docs/operations.md, "Huge pages"): the script mounts a hugetlbfs of its
# own in its work folder and raises vm.nr_hugepages by what the segment
# needs (root only), and puts both back when done.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
seconds=${SECONDS_PER_RUN:-5}
repeat=${REPEAT:-3}
keys=${KEYS:-1000000}
bench="$build/bench/wire_bench"

for tool in redis-server redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "compare_redis: $tool missing: apt-get install redis-server redis-tools" >&2; exit 2; }
done
[ -x "$bench" ] || { echo "compare_redis: $bench missing: build first" >&2; exit 2; }

work=$(mktemp -d /tmp/cachet-bench.XXXXXX)
segment="cachet-bench-$$"
pids=()
old_pool=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if mountpoint -q "$work/huge" 2>/dev/null; then umount "$work/huge"; fi
  [ -z "$old_pool" ] || echo "$old_pool" > /proc/sys/vm/nr_hugepages
  rm -rf "$work" "/dev/shm/$segment"
}
trap cleanup EXIT INT TERM

huge_args=()
if [ "${HUGE_PAGES:-0}" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "compare_redis: HUGE_PAGES=1 needs root (mount, vm.nr_hugepages)" >&2; exit 2; }
  pages=400  # 800 MiB: the 512 MiB cache's segment (logs and index) with room to spare
  mkdir "$work/huge"
  mount -t hugetlbfs -o pagesize=2M none "$work/huge"
  old_pool=$(cat /proc/sys/vm/nr_hugepages)
  echo $((old_pool + pages)) > /proc/sys/vm/nr_hugepages
  huge_args=(--huge-pages on --huge-pages-dir "$work/huge")
fi

. bench/lib.sh  # free_port (the scripts run from the checkout's root)

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
  --save "" --appendonly no --logfile "$work/redis.log" --daemonize no &
pids+=($!)
cachet_port=$(free_port)
stream_port=$(free_port)
"$build/daemon/cachetd" --segment "$segment" --ipc "ipc://$work/cachetd.sock" --tcp "tcp://127.0.0.1:$cachet_port" \
  --stream "127.0.0.1:$stream_port" \
  --capacity 512MiB --log-file "$work/cachetd.log" "${huge_args[@]}" &
pids+=($!)
for _ in $(seq 1 200); do
  [ -S "$work/redis.sock" ] && grep -q " ready: " "$work/cachetd.log" 2>/dev/null && break
  sleep 0.05
done

grep -q " ready: " "$work/cachetd.log" || { echo "compare_redis: cachetd did not start:" >&2; cat "$work/cachetd.log" >&2; exit 1; }
grep -E "created segment|huge pages" "$work/cachetd.log" | sed 's/^.*cachetd\[[0-9]*\] //'
ipc="ipc://$work/cachetd.sock"
tcp="tcp://127.0.0.1:$cachet_port"
stream="stream://127.0.0.1:$stream_port"
echo "filling both servers with $keys keys ..."
"$bench" --target cachet --endpoint "$tcp" --mode fill --keys "$keys"
"$bench" --target redis --endpoint "unix:$work/redis.sock" --mode fill --keys "$keys"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# run NAME CACHET_ENDPOINT REDIS_ENDPOINT MODE CLIENTS PIPELINE [TIMING_BATCH]
run() {
  local name=$1 cep=$2 rep=$3 mode=$4 clients=$5 pipe=$6 tb=${7:-1} i
  : > "$work/c" ; : > "$work/r"
  for i in $(seq 1 "$repeat"); do
    "$bench" --target cachet --endpoint "$cep" --mode "$mode" --clients "$clients" --pipeline "$pipe" \
      --seconds "$seconds" --keys "$keys" --timing-batch "$tb" >> "$work/c"
    "$bench" --target redis --endpoint "$rep" --mode "$mode" --clients "$clients" --pipeline "$pipe" \
      --seconds "$seconds" --keys "$keys" >> "$work/r"
  done
  local c_ops r_ops c50 r50 c99 r99
  c_ops=$(field ops_per_s < "$work/c" | median); r_ops=$(field ops_per_s < "$work/r" | median)
  c50=$(field p50_ns < "$work/c" | median); r50=$(field p50_ns < "$work/r" | median)
  c99=$(field p99_ns < "$work/c" | median); r99=$(field p99_ns < "$work/r" | median)
  printf '| %s | %.0f | %.0f | %.2fx | %.0f / %.0f | %.0f / %.0f |\n' "$name" "$c_ops" "$r_ops" \
    "$(echo "$c_ops / $r_ops" | bc -l)" "$c50" "$r50" "$c99" "$r99"
}

echo
echo "$repeat runs of ${seconds}s each, medians; latency is per round trip (a batch when pipelined)."
echo
echo "| scenario | cachet ops/s | redis ops/s | cachet/redis | p50 ns cachet / redis | p99 ns cachet / redis |"
echo "|---|---|---|---|---|---|"
# Shared-memory GETs take about as long as reading the clock: cachet's are
# timed 16 at a time (the sample is their mean), redis's one at a time.
run "GET same host, 1 client (cachet: shared memory; redis: unix socket)" "$ipc" "unix:$work/redis.sock" get 1 1 16
run "SET same host, 1 client (cachet: shared memory; redis: unix socket)" "$ipc" "unix:$work/redis.sock" set 1 1
run "PING same host, 1 client: the bare round trip over the ipc socket" "$ipc" "unix:$work/redis.sock" ping 1 1
# cachet's two tcp endpoints: the stream endpoint (plain TCP, as redis
# speaks) and the ZeroMQ one (CURVE, clusters).
run "GET tcp loopback, 50 clients (cachet: stream endpoint)" "$stream" "127.0.0.1:$redis_port" get 50 1
run "SET tcp loopback, 50 clients (cachet: stream endpoint)" "$stream" "127.0.0.1:$redis_port" set 50 1
run "GET tcp loopback, 50 clients (cachet: ZeroMQ tcp endpoint)" "$tcp" "127.0.0.1:$redis_port" get 50 1
run "SET tcp loopback, 50 clients (cachet: ZeroMQ tcp endpoint)" "$tcp" "127.0.0.1:$redis_port" set 50 1
run "GET tcp, 50 clients, 16 per round trip (cachet MGET, stream; redis pipeline)" "$stream" "127.0.0.1:$redis_port" get 50 16
run "SET tcp, 50 clients, 16 per round trip (cachet MSET, stream; redis pipeline)" "$stream" "127.0.0.1:$redis_port" set 50 16
run "GET tcp, 50 clients, 16 per round trip (cachet MGET, ZeroMQ tcp; redis pipeline)" "$tcp" "127.0.0.1:$redis_port" get 50 16
run "SET tcp, 50 clients, 16 per round trip (cachet MSET, ZeroMQ tcp; redis pipeline)" "$tcp" "127.0.0.1:$redis_port" set 50 16

echo
echo "redis-benchmark -P 16 on the same redis-server, for reference (50 clients, 100-byte values):"
redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 50 -n 1000000 -P 16 -d 100 -r "$keys" -t get,set -q 2>&1 |
  tr '\r' '\n' | grep 'requests per second'
