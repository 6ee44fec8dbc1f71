#!/usr/bin/env bash
# Rate-limit decisions per second: in process (cachet::RateLimiter) against
# a Redis Lua limiter (cachet::RedisRateLimiter: one EVALSHA per decision over
# a unix socket), fixed window, measured by build/bench/limiter_bench in one
# run; cachetd's RATELIMIT op over ipc (cachet::DaemonRateLimiter); and,
# when etcd is installed, strict mode: the same op over tcp to the key's
# owner in a one-node cluster (DaemonRateLimiter::ConnectCluster).
# Starts and stops its own redis-server, cachetd, etcd and cluster node.
#   bench/compare_limiter.sh          (BUILD_DIR=build REPEAT=5; FILTER=regex picks benchmarks;
#                                      CACHETD=path runs another cachetd binary)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
repeat=${REPEAT:-5}
command -v redis-server >/dev/null || { echo "compare_limiter: apt-get install redis-server" >&2; exit 2; }
work=$(mktemp -d /tmp/cachet-limiter-bench.XXXXXX)
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
  --logfile "$work/redis.log" --daemonize no &
redis_pid=$!
printf '[tier.regular]\nper_minute = 1000000000/1m fixed_window\n' >"$work/policy.ini"
"${CACHETD:-$build/daemon/cachetd}" --segment "cachet-bench-$$" --ipc "ipc://$work/cachetd.sock" --tcp "" --capacity 8MiB \
  --rate-limit-policy "$work/policy.ini" --rate-limit-capacity 4194304 --remove-segment-on-exit true \
  --log-file "$work/cachetd.log" &
cachetd_pid=$!
pids="$redis_pid $cachetd_pid"
trap 'kill $pids 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT INT TERM
for _ in $(seq 1 200); do [ -S "$work/redis.sock" ] && grep -q " ready: " "$work/cachetd.log" 2>/dev/null && break; sleep 0.05; done

. bench/lib.sh  # free_port (the scripts run from the checkout's root)
cluster_seed=""
if command -v etcd >/dev/null; then
  etcd_port=$(free_port) peer_port=$(free_port)
  etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" --initial-cluster "bench=http://127.0.0.1:$peer_port" \
    >"$work/etcd.log" 2>&1 &
  pids="$pids $!"
  for _ in $(seq 1 200); do grep -q "ready to serve client requests" "$work/etcd.log" && break; sleep 0.05; done
  "${CACHETD:-$build/daemon/cachetd}" --segment "cachet-bench-node-$$" --ipc "" --tcp "tcp://127.0.0.1:*" \
    --capacity 8MiB --rate-limit-policy "$work/policy.ini" --rate-limit-capacity 4194304 --remove-segment-on-exit true \
    --cluster "bench-$$" --node-id n1 --etcd "http://127.0.0.1:$etcd_port" --log-file "$work/node.log" &
  pids="$pids $!"
  for _ in $(seq 1 200); do grep -q " ready: " "$work/node.log" 2>/dev/null && break; sleep 0.05; done
  cluster_seed=$(sed -n 's/.*listening on \(tcp:\/\/[0-9.:]*\).*/\1/p' "$work/node.log" | head -1)
  [ -n "$cluster_seed" ] || { echo "compare_limiter: the cluster node did not start:" >&2; cat "$work/node.log" >&2; }
fi

CACHET_BENCH_REDIS="unix:$work/redis.sock" CACHET_BENCH_DAEMON="ipc://$work/cachetd.sock" CACHET_BENCH_CLUSTER="$cluster_seed" \
  "$build/bench/limiter_bench" \
  --benchmark_filter="${FILTER:-BM_Check/algorithm:1|BM_ShmCheck|BM_RedisCheck|BM_DaemonCheck|BM_StrictCheck|BM_ClockRead}" --benchmark_repetitions="$repeat" \
  --benchmark_report_aggregates_only=true --benchmark_format=console 2>/dev/null | tee "$work/out.txt" | grep median

median_rate() { grep "$1" "$work/out.txt" | grep median | sed -n 's/.*items_per_second=\([0-9.]*\)\([kMG]*\)\/s.*/\1 \2/p' |
  awk '{m=1; if ($2=="k") m=1e3; if ($2=="M") m=1e6; if ($2=="G") m=1e9; print $1*m}'; }
[ -z "${FILTER:-}" ] || exit 0  # the ratios below need the default set
local_hot=$(median_rate 'BM_Check/algorithm:1/keys:1/')
redis_hot=$(median_rate 'BM_RedisCheck/keys:1/')
shm_hot=$(median_rate 'BM_ShmCheck/algorithm:1/keys:1/')
echo
echo "in-process / redis decisions per second, one hot key: $(echo "$local_hot / $redis_hot" | bc -l | xargs printf '%.0fx')"
echo "shared memory / redis decisions per second, one hot key: $(echo "$shm_hot / $redis_hot" | bc -l | xargs printf '%.0fx')"
