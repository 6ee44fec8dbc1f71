#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz and runs
# each for a bounded time on a copy of its seed corpus (corpus/<target>/)
# and of the inputs that once failed it (regressions/<target>/).
# Fails on any crash, leak, timeout or sanitizer report, keeping the input
# that caused it; prints each target's executions and coverage.
#
#   tests/fuzz/run.sh [-t SECONDS] [-j JOBS] [-s SEED] [TARGET...]
#       run; defaults: 30 s each, one at a time, seed 0 (a new random one)
#   tests/fuzz/run.sh --remake-corpus
#       rewrite corpus/ with make_corpus (regressions/ is kept)
#
# FUZZ_BUILD_DIR (default build-fuzz) is the clang tree; FUZZ_OUT (default
# $FUZZ_BUILD_DIR/fuzz-runs) gets each run's corpus, log and crash inputs.
# Replay a crash with: $FUZZ_BUILD_DIR/tests/fuzz/<target> <crash file>;
# once it is fixed, keep its input in regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
targets_all=(fuzz_wire fuzz_server fuzz_config fuzz_policy fuzz_segment)
seconds=30
jobs=1
seed=0
remake=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -s) seed=$2; shift 2 ;;
    --remake-corpus) remake=1; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    fuzz_*) targets+=("$1"); shift ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")

build=${FUZZ_BUILD_DIR:-$src/build-fuzz}
out=${FUZZ_OUT:-$build/fuzz-runs}
command -v clang++ >/dev/null || { echo "run.sh: clang++ is not installed (scripts/install-deps.sh)" >&2; exit 1; }

export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$src} CCACHE_NOHASHDIR=1
nice -n 15 cmake -S "$src" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCACHET_BUILD_FUZZERS=ON -DCACHET_BUILD_TESTS=OFF -DCACHET_BUILD_BENCHMARKS=OFF -DCACHET_BUILD_EXAMPLES=OFF >/dev/null
nice -n 15 cmake --build "$build" -j 2 --target "${targets_all[@]}" make_corpus

if [ $remake -eq 1 ]; then
  rm -rf "$src/tests/fuzz/corpus"
  "$build/tests/fuzz/make_corpus" "$src/tests/fuzz/corpus"
  find "$src/tests/fuzz/corpus" -type f | wc -l | xargs echo "run.sh: seed files written:"
  exit 0
fi

# Reports stop the run and fail it (the build has -fno-sanitize-recover=all).
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# Segments, sockets and policy files the targets name by their pid, left
# by a run that was killed or crashed.
clean_leftovers() {
  local f pid
  for f in /dev/shm/cachet-fuzz-* /tmp/cachet-fuzz-*; do
    [ -e "$f" ] || continue
    pid=$(basename "$f" | sed -n 's/^cachet-fuzz-\([a-z]*-\)\{0,1\}\([0-9]*\).*/\2/p')
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then rm -f "$f"; fi
  done
}

# run_one TARGET: fuzzes it for $seconds in $out/TARGET; 0 when it found nothing.
run_one() {
  local t=$1 dir=$out/$1
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/crashes"
  cp "$src/tests/fuzz/corpus/$t/"* "$dir/corpus/"
  # Inputs that once crashed or hung a target: replayed first, every run.
  if [ -d "$src/tests/fuzz/regressions/$t" ]; then cp "$src/tests/fuzz/regressions/$t/"* "$dir/corpus/"; fi
  # -timeout: one input taking 10 s is a hang; the outer timeout bounds a
  # wedged process.
  local rc=0
  timeout --kill-after=10 $((seconds + 120)) nice -n 15 "$build/tests/fuzz/$t" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -seed="$seed" -print_final_stats=1 -artifact_prefix="$dir/crashes/" "$dir/corpus" \
    >"$dir/log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' "$dir/log"; then
    echo "FAIL $t (exit $rc); its log: $dir/log, inputs: $dir/crashes/" >&2
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$dir/log" | head -20 >&2 || true
    return 1
  fi
}

# One line per target from libFuzzer's closing lines.
summary() {
  local t=$1 log=$out/$1/log
  local done execs rate
  done=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log")
  printf '%-13s execs %-10s exec/s %-7s %s\n' "$t" "${execs:-?}" "${rate:-?}" \
    "$(echo "$done" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*')"
}

mkdir -p "$out"
clean_leftovers
echo "run.sh: ${#targets[@]} targets, ${seconds} s each, ${jobs} at a time; output in $out"
failed=()
running=()
for t in "${targets[@]}"; do
  run_one "$t" &
  running+=("$!:$t")
  if [ ${#running[@]} -ge "$jobs" ]; then
    entry=${running[0]}
    running=("${running[@]:1}")
    wait "${entry%%:*}" || failed+=("${entry#*:}")
  fi
done
for entry in "${running[@]}"; do wait "${entry%%:*}" || failed+=("${entry#*:}"); done
clean_leftovers

for t in "${targets[@]}"; do summary "$t"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: all ${#targets[@]} targets ran ${seconds} s with no crash, leak or report"
