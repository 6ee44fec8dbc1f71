#!/usr/bin/env bash
# Line coverage of the suite: builds the project with --coverage in a tree of
# its own, runs the whole suite, and prints gcovr's report for the project's
# sources (shm/, libclient/, daemon/, cli/, cluster/; not tests, benchmarks or
# examples), ending with the total line figure. gcovr comes from Debian and
# is installed on demand.
#
#   scripts/coverage.sh [--build-dir DIR] [--html FILE] [-- ctest args...]
#
#   --build-dir  where to build (default: build-coverage)
#   --html       also write a detailed HTML report (one page per file)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build-coverage
html=""
ctest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --html) html=$2; shift 2 ;;
    --) shift; ctest_args=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "coverage: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v gcovr > /dev/null; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "coverage: installing gcovr (Debian package)"
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq gcovr > /dev/null
fi

# Debug without optimisation, so lines map to code; counters updated
# atomically, because the tests run threads and processes side by side.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCACHET_BUILD_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS="--coverage -fprofile-update=atomic" -DCMAKE_EXE_LINKER_FLAGS=--coverage \
  -DCMAKE_SHARED_LINKER_FLAGS=--coverage > /dev/null
cmake --build "$build_dir" -j 2
find "$build_dir" -name '*.gcda' -delete
# A failing test still leaves its coverage: report it, but exit non-zero.
status=0
ctest --test-dir "$build_dir" -j 2 --output-on-failure "${ctest_args[@]}" || status=$?

report=(gcovr --root . --object-directory "$build_dir" --filter 'shm/' --filter 'libclient/' --filter 'daemon/'
        --filter 'cli/' --filter 'cluster/' --exclude-unreachable-branches --print-summary)
[ -z "$html" ] || report+=(--html-details "$html")
"${report[@]}"
[ "$status" -eq 0 ] || echo "coverage: the suite failed (ctest exit $status); the figures cover the run as it went" >&2
exit "$status"
