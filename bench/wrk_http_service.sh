#!/usr/bin/env bash
# Requests per second of the example HTTP service (examples/http_service)
# under wrk: /api/items (the API: a decision and a JSON body) against /auth
# (nginx's auth_request: a decision and an empty 204), both keep-alive, each
# round measuring one then the other in one run; prints every round and the
# medians, of the rates and of the per-round ratio. Starts its own service on
# a free loopback port, with limits no run reaches, and stops it.
#   bench/wrk_http_service.sh     (BUILD_DIR=build ROUNDS=5 SECONDS_EACH=5 THREADS=2 CONNECTIONS=2)
# wrk comes from scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
rounds=${ROUNDS:-5}
seconds=${SECONDS_EACH:-5}
threads=${THREADS:-2}
connections=${CONNECTIONS:-2}
command -v wrk >/dev/null || { echo "wrk_http_service: wrk is missing; run scripts/install-deps.sh" >&2; exit 2; }
[ -x "$build/examples/http_service" ] || { echo "wrk_http_service: build $build/examples/http_service first" >&2; exit 2; }

work=$(mktemp -d /tmp/cachet-wrk.XXXXXX)
service_pid=
cleanup() {
  if [ -n "$service_pid" ]; then kill -TERM "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
printf '[tier.anonymous]\nper_second = 1000000000/1s fixed_window\n' >"$work/limits.ini"
# One service thread per open connection (cpp-httplib), plus one to spare.
"$build/examples/http_service" --policy "$work/limits.ini" --host 127.0.0.1 --port 0 \
  --threads $((connections + 1)) >"$work/service.out" 2>&1 &
service_pid=$!
port=
for _ in $(seq 1 200); do
  port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$work/service.out")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "wrk_http_service: the service did not start:" >&2; cat "$work/service.out" >&2; exit 1; }

rate() {  # requests/s of one wrk run on path $1
  wrk -t"$threads" -c"$connections" -d"${seconds}s" "http://127.0.0.1:$port$1" | tee -a "$work/wrk.txt" |
    awk '/^Requests\/sec:/ {print $2}'
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "wrk -t$threads -c$connections -d${seconds}s, $rounds rounds, http_service on 127.0.0.1:$port"
printf '%-6s %12s %12s %8s\n' round "/api req/s" "/auth req/s" "api/auth"
: >"$work/rounds.txt"
for r in $(seq 1 "$rounds"); do
  api=$(rate /api/items)
  auth=$(rate /auth)
  ratio=$(awk -v a="$api" -v b="$auth" 'BEGIN {printf "%.3f", a / b}')
  echo "$api $auth $ratio" >>"$work/rounds.txt"
  printf '%-6s %12.0f %12.0f %8s\n' "$r" "$api" "$auth" "$ratio"
done
printf '%-6s %12.0f %12.0f %8s\n' median "$(cut -d' ' -f1 "$work/rounds.txt" | median)" \
  "$(cut -d' ' -f2 "$work/rounds.txt" | median)" "$(cut -d' ' -f3 "$work/rounds.txt" | median)"
# wrk reports non-2xx answers and socket errors; there must be none (the
# limits are out of reach), or the rates above measure something else.
if grep -q "Non-2xx\|Socket errors" "$work/wrk.txt"; then
  echo "wrk_http_service: failed requests:" >&2
  grep "Non-2xx\|Socket errors" "$work/wrk.txt" >&2
  exit 1
fi
