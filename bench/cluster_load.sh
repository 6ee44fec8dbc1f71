#!/usr/bin/env bash
# The cluster's figures on loopback: throughput of a 3- and a 5-node cluster
# (replication 3, strong and eventual) against one cachetd, by the same load
# generator (bench/cachet_load.cc) with the same clients and op mix; then the
# unavailability the clients see when a primary is killed under that load.
# Starts its own etcd and nodes on free loopback ports and stops them when
# done (or interrupted). Each setup runs REPEAT times, in turn, and the table
# shows medians and the ratio to the single node measured in the same runs.
# With NETNS=1 (root) etcd and every node run in a network namespace of
# their own, on a bridge, each with its own address, and the load comes from
# the host: the cluster's traffic crosses veth pairs as between hosts.
#
#   bench/cluster_load.sh     (BUILD_DIR=build SECONDS_PER_RUN=5 REPEAT=3 CLIENTS=32 MIX=get=80,set=20 OUT=/tmp NETNS=0)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
seconds=${SECONDS_PER_RUN:-5}
repeat=${REPEAT:-3}
clients=${CLIENTS:-32}
mix=${MIX:-get=80,set=20}
out=${OUT:-/tmp}
netns=${NETNS:-0}
load="$build/bench/cachet-load"
cachetd="$build/daemon/cachetd"
cachectl="$build/cli/cachectl"

command -v etcd >/dev/null || { echo "cluster_load: etcd missing: apt-get install etcd-server" >&2; exit 2; }
for f in "$load" "$cachetd" "$cachectl"; do
  [ -x "$f" ] || { echo "cluster_load: $f missing: build first" >&2; exit 2; }
done

work=$(mktemp -d /tmp/cachet-cluster-bench.XXXXXX)
pids=()
segments=()
namespaces=()
bridge=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for s in "${segments[@]}"; do rm -f "/dev/shm/$s" "/dev/shm/$s.lock" "/dev/shm/$s.ratelimit"; done
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  [ -n "$bridge" ] && ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

. bench/lib.sh  # free_port (the scripts run from the checkout's root)

wait_for() {  # wait_for FILE TEXT: until FILE contains TEXT (10 s at most)
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.05; done
  echo "cluster_load: '$2' never appeared in $1" >&2; tail -5 "$1" >&2; exit 1
}

# Hosts: in loopback mode every process is on 127.0.0.1 with a port of its
# own; with NETNS=1 host i is namespace $ns-i at $net.i, and every process
# on it uses the standard ports. host_addr[i], host_run[i] (a command prefix).
declare -A host_addr host_run
if [ "$netns" = 1 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "cluster_load: NETNS=1 needs root (ip netns)" >&2; exit 2; }
  net="10.$((20 + RANDOM % 200)).$((RANDOM % 250))"
  ns="cb$$"
  bridge="cbr$$"
  ip link add "$bridge" type bridge
  ip addr add "$net.254/24" dev "$bridge"
  ip link set "$bridge" up
  for i in 1 2 3 4 5 6; do
    ip netns add "$ns-$i"
    namespaces+=("$ns-$i")
    ip link add "vh$$-$i" type veth peer name "vn$$-$i"
    ip link set "vn$$-$i" netns "$ns-$i"
    ip link set "vh$$-$i" master "$bridge" up
    ip netns exec "$ns-$i" ip addr add "$net.$i/24" dev "vn$$-$i"
    ip netns exec "$ns-$i" ip link set "vn$$-$i" up
    ip netns exec "$ns-$i" ip link set lo up
    host_addr[$i]="$net.$i"
    host_run[$i]="ip netns exec $ns-$i"
  done
fi
port_on() {  # port_on HOST STANDARD: the port a process on HOST listens on
  if [ "$netns" = 1 ]; then echo "$2"; else free_port; fi
}
addr_of() { if [ "$netns" = 1 ]; then echo "${host_addr[$1]}"; else echo 127.0.0.1; fi; }
run_on() { if [ "$netns" = 1 ]; then echo "${host_run[$1]}"; fi; }

# etcd on host 1.
etcd_port=$(port_on 1 2379)
etcd_peer=$(port_on 1 2380)
etcd_url="http://$(addr_of 1):$etcd_port"
$(run_on 1) etcd --name bench --data-dir "$work/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://$(addr_of 1):$etcd_peer" --initial-advertise-peer-urls "http://$(addr_of 1):$etcd_peer" \
  --initial-cluster "bench=http://$(addr_of 1):$etcd_peer" --log-level error > "$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do "$cachectl" cluster --etcd "$etcd_url" --cluster probe status >/dev/null 2>&1 && break; sleep 0.05; done

# node NAME CLUSTER HOST [cachetd options]: starts a node on HOST (2..6),
# records its pid and endpoint in node_pid[NAME], node_endpoint[NAME].
declare -A node_pid node_endpoint
node() {
  local name=$1 cluster=$2 host=$3
  shift 3
  local segment="cbench-$$-$cluster-$name"
  local endpoint="tcp://$(addr_of "$host"):$(port_on "$host" 7379)"
  segments+=("$segment")
  $(run_on "$host") "$cachetd" --segment "$segment" --ipc "" --tcp "$endpoint" --capacity 256MiB \
    --log-file "$work/$cluster-$name.log" "$@" &
  node_pid[$name]=$!
  node_endpoint[$name]=$endpoint
  pids+=($!)
  wait_for "$work/$cluster-$name.log" " ready: "
}

# cluster NAME NODES CONSISTENCY: a cluster of NODES nodes with 3 copies of each shard.
cluster() {
  local name=$1 count=$2 consistency=$3
  for i in $(seq 1 "$count"); do
    node "n$i" "$name" $((i + 1)) --cluster "$name" --node-id "n$i" --etcd "$etcd_url" \
      --replication 3 --consistency "$consistency"
  done
  for i in $(seq 2 "$count"); do
    "$cachectl" cluster --etcd "$etcd_url" --cluster "$name" --timeout 30000 add-node "n$i" > /dev/null
  done
}

stop_nodes() {
  for n in "${!node_pid[@]}"; do kill "${node_pid[$n]}" 2>/dev/null || true; wait "${node_pid[$n]}" 2>/dev/null || true; done
  node_pid=()
  node_endpoint=()
}

json_field() { sed -n "s/^  \"$1\": \\([0-9.]*\\).*/\\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

run_load() {  # run_load TAG ARGS...: one run, its JSON kept as $work/TAG.json
  local tag=$1
  shift
  "$load" "$@" --clients "$clients" --duration "$seconds" --mix "$mix" --keys 100000 --json --quiet > "$work/$tag.json"
}

setups=(single c3strong c3eventual c5strong)
where="on loopback"
[ "$netns" = 1 ] && where="each node in a network namespace of its own"
echo "throughput: $clients clients, mix $mix, $seconds s per run, $repeat runs of each setup in turn, $where"
for r in $(seq 1 "$repeat"); do
  for s in "${setups[@]}"; do
    case $s in
      single) node one single 2; run_load "$s-$r" --endpoint "${node_endpoint[one]}" ;;
      c3strong) cluster "$s$r" 3 strong; run_load "$s-$r" --etcd "$etcd_url" --cluster "$s$r" ;;
      c3eventual) cluster "$s$r" 3 eventual; run_load "$s-$r" --etcd "$etcd_url" --cluster "$s$r" ;;
      c5strong) cluster "$s$r" 5 strong; run_load "$s-$r" --etcd "$etcd_url" --cluster "$s$r" ;;
    esac
    stop_nodes
  done
done

single_ops=$(for r in $(seq 1 "$repeat"); do json_field ops_per_s < "$work/single-$r.json"; done | median)
printf '\n%-34s %12s %8s %10s %10s %8s\n' setup ops/s ratio p50_us p99_us errors
for s in "${setups[@]}"; do
  ops=$(for r in $(seq 1 "$repeat"); do json_field ops_per_s < "$work/$s-$r.json"; done | median)
  p50=$(for r in $(seq 1 "$repeat"); do json_field p50_us < "$work/$s-$r.json"; done | median)
  p99=$(for r in $(seq 1 "$repeat"); do json_field p99_us < "$work/$s-$r.json"; done | median)
  errors=$(for r in $(seq 1 "$repeat"); do json_field errors < "$work/$s-$r.json"; done | median)
  case $s in
    single) label="one cachetd" ;;
    c3strong) label="3 nodes, 3 copies, strong" ;;
    c3eventual) label="3 nodes, 3 copies, eventual" ;;
    c5strong) label="5 nodes, 3 copies, strong" ;;
  esac
  printf '%-34s %12.0f %8.2f %10.1f %10.1f %8.0f\n' "$label" "$ops" "$(echo "$ops / $single_ops" | bc -l)" "$p50" "$p99" "$errors"
done

# Failover under load: a 3-node strong cluster, the primary of one shard
# killed a third of the way through a run; what the clients saw.
fail_seconds=$((seconds * 3))
cluster failover 3 strong
"$load" --etcd "$etcd_url" --cluster failover --clients "$clients" --duration "$fail_seconds" --mix "$mix" \
  --keys 100000 --json --quiet --csv "$out/cachet-failover.csv" --png "$out/cachet-failover.png" > "$work/failover.json" &
load_pid=$!
sleep "$seconds"
victim=$("$cachectl" cluster --etcd "$etcd_url" --cluster failover --json status |
  sed -n 's/.*"primary": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$victim" ] || victim=n1
kill -9 "${node_pid[$victim]}"
wait "$load_pid"
echo
echo "failover: killed primary $victim at ${seconds} s of a ${fail_seconds} s run ($clients clients)"
echo "  longest stretch with no op succeeding: $(json_field longest_gap_ms < "$work/failover.json") ms"
echo "  errors: $(json_field errors < "$work/failover.json") of $(json_field ops < "$work/failover.json") ops"
echo "  per-second figures: $out/cachet-failover.csv, plot: $out/cachet-failover.png"
