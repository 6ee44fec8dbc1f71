#!/usr/bin/env bash
# GossipRateLimiter across hosts: admissions per window over the limit,
# against the sync interval (1, 10, 100 ms) and the number of hosts (2, 3,
# 5), with share_remaining off and on; then the bytes a host publishes at
# 100,000 decisions per second. Every host is a limiter in one process of
# build/bench/gossip_bench, peered over PUB/SUB on loopback; nothing else
# is started. Writes a Markdown table, the raw lines and a PNG (gnuplot).
#   bench/gossip_overadmission.sh   (BUILD_DIR=build OUT=/tmp RATE=10000 LIMIT=1000 WINDOWS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
out=${OUT:-/tmp}
rate=${RATE:-10000}
limit=${LIMIT:-1000}
windows=${WINDOWS:-5}
bench="$build/bench/gossip_bench"
[ -x "$bench" ] || { echo "gossip_overadmission: build $bench first (cmake --build $build --target gossip_bench)" >&2; exit 2; }
mkdir -p "$out"
raw="$out/gossip_overadmission.tsv"
: >"$raw"

echo "over-admission: $rate decisions/s in all on one key, limit $limit per 1 s window, $windows windows per row"
for share in off on; do
  for hosts in 2 3 5; do
    for interval in 1 10 100; do
      flag=$([ "$share" = on ] && echo --share || true)
      "$bench" --hosts "$hosts" --interval-ms "$interval" --rate "$rate" --limit "$limit" --window-ms 1000 \
        --windows "$windows" $flag | tee -a "$raw" >/dev/null
      printf '.'
    done
  done
done
echo

table="$out/gossip_overadmission.md"
{
  echo "| hosts | interval | share_remaining | admitted per window (median, max) | over L (median, max) | bound R(I)(H-1)/H |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s ms | %s | %s, %s | %.1f%%, %.1f%% | %s |\n", $1, $2, $3, $7, $8, $9, $10, $11 }' "$raw"
} >"$table"
cat "$table"

echo
echo "wire: payload each host publishes at 100,000 decisions/s in all, 3 hosts, 10 ms (each peer receives it)"
for keys in 1 1000 10000; do
  line=$("$bench" --hosts 3 --interval-ms 10 --rate 100000 --limit 1000000000 --window-ms 1000 --windows 3 --keys "$keys")
  echo "$line" | awk -F'\t' -v k="$keys" '{ printf "  %6d keys: %8.0f bytes/s per host\n", k, $12 }'
done

if command -v gnuplot >/dev/null; then
  png="$out/gossip_overadmission.png"
  gnuplot <<EOF
set terminal pngcairo size 900,560 noenhanced
set output '$png'
set title 'GossipRateLimiter: admitted over the limit per window ($rate/s, limit $limit/s, median of $windows windows)'
set xlabel 'sync interval (ms)'
set ylabel 'over the limit (%)'
set logscale x
set xtics (1, 10, 100)
set key top left
set grid
plot for [h in "2 3 5"] '$raw' using (\$1==h+0 && strcol(3) eq "off" ? \$2 : 1/0):9 with linespoints title h.' hosts', \
     for [h in "2 3 5"] '$raw' using (\$1==h+0 && strcol(3) eq "on" ? \$2 : 1/0):9 with linespoints dashtype 2 title h.' hosts, share_remaining'
EOF
  echo "plot: $png"
else
  echo "gnuplot not found (apt-get install gnuplot-nox): no plot" >&2
fi
