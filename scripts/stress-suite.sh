#!/usr/bin/env bash
# Runs the test suite again and again while busy loops load every CPU, and
# reports each test that failed in any run (with the run's output kept).
# A test that passes idle but fails here depends on timing: fix it at its
# cause. Bounded by a count of runs and by time; exits 1 if anything failed.
#
#   scripts/stress-suite.sh [--build-dir DIR] [--runs N] [--minutes M]
#                           [--load K] [--jobs J] [-- ctest args...]
#
#   --build-dir  a configured, built tree (default: build)
#   --runs       most suite runs (default: 10)
#   --minutes    stop starting new runs after this long (default: 60)
#   --load       busy loops beside the tests (default: the number of CPUs)
#   --jobs       tests run in parallel (default: 2)
#   after --     passed to ctest, e.g. -R 'Restart|Redis' or -L integration
set -euo pipefail

build_dir=build
runs=10
minutes=60
load=$(nproc)
jobs=2
ctest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --) shift; ctest_args=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stress-suite: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$build_dir/CTestTestfile.cmake" ] || { echo "stress-suite: '$build_dir' is not a built tree" >&2; exit 2; }

logs=$(mktemp -d /tmp/cachet-stress.XXXXXX)
loaders=()
stop_load() {
  for pid in "${loaders[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${loaders[@]}"; do wait "$pid" 2>/dev/null || true; done
  loaders=()
}
trap stop_load EXIT INT TERM

# The load: stress-ng when installed (it also stirs the caches), else shell
# busy loops. Each is killed by its own pid at exit.
if command -v stress-ng > /dev/null; then
  stress-ng --cpu "$load" --timeout "$((minutes + 30))m" --quiet &
  loaders+=($!)
else
  for _ in $(seq 1 "$load"); do
    bash -c 'while :; do :; done' &
    loaders+=($!)
  done
fi

declare -A failures=()
deadline=$(($(date +%s) + minutes * 60))
done_runs=0
failed_runs=0
for run in $(seq 1 "$runs"); do
  [ "$(date +%s)" -lt "$deadline" ] || break
  log="$logs/run-$run.log"
  start=$(date +%s)
  if ctest --test-dir "$build_dir" -j "$jobs" --output-on-failure "${ctest_args[@]}" > "$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed_runs=$((failed_runs + 1))
    # ctest names the failed tests in Testing/Temporary/LastTestsFailed.log ("N:name").
    while IFS=: read -r _ name; do
      failures[$name]="${failures[$name]:-} $run"
    done < "$build_dir/Testing/Temporary/LastTestsFailed.log"
  fi
  done_runs=$run
  printf 'run %d: %s in %ds (load: %s busy loops; %s)\n' "$run" "$result" "$(($(date +%s) - start))" "$load" \
    "$(uptime | sed 's/.*load average/load average/')"
done
stop_load

echo
echo "stress-suite: $done_runs runs, $failed_runs failed, $load busy loops, ctest -j $jobs ${ctest_args[*]}"
if [ ${#failures[@]} -eq 0 ]; then
  rm -rf "$logs"
  exit 0
fi
for name in "${!failures[@]}"; do
  echo "  FAILED $name in run(s)${failures[$name]}"
done
echo "outputs of the runs: $logs"
exit 1
