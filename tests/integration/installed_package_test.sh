#!/usr/bin/env bash
# Installs this build into a private prefix, builds examples/client_example.cc
# against it as a user's project would (find_package and pkg-config), and runs
# both builds against a cachetd started here on its own endpoints.
set -euo pipefail
build_dir=$1 source_dir=$2 cachetd=$3
extra_flags=${4:-}   # a sanitizer build's flags: the user's program must match the library

work=$(mktemp -d /tmp/cachet-install-test.XXXXXX)
name="cachet-install-$$"
cleanup() {
  [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work" "/dev/shm/$name" "/tmp/$name.sock"
}
trap cleanup EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
test -f "$work/prefix/lib/cmake/cachet/cachetConfig.cmake"
test -f "$work/prefix/include/cachet/client.h"
# The service's files name the prefix they were installed to.
grep -qxF "ExecStart=$work/prefix/bin/cachetd --config $work/prefix/etc/cachet/cachetd.conf" \
  "$work/prefix/lib/systemd/system/cachetd.service"
grep -qx 'ipc = ipc:///run/cachet/cachetd.sock' "$work/prefix/etc/cachet/cachetd.conf"

# The client library and cachectl need no cluster library at run time:
# cpp-httplib is the cluster's HTTP module's (loaded only when a cluster is
# configured) and cachetd's, for its metrics endpoint (docs/design.md,
# "Metrics").
for binary in "$work/prefix/lib/libcachet.so" "$work/prefix/bin/cachectl"; do
  if ldd "$binary" | grep -q httplib; then
    echo "$binary needs cpp-httplib at run time:" >&2
    ldd "$binary" >&2
    exit 1
  fi
done
# The installed cachetd finds the installed module: with cluster settings it
# gets as far as etcd (nothing listens on port 1) rather than failing to
# load the module.
cluster_out=$("$work/prefix/bin/cachetd" --segment "$name" --ipc "" --tcp tcp://127.0.0.1:0 --cluster c --node-id n1 \
  --etcd http://127.0.0.1:1 2>&1 || true)
rm -f "/dev/shm/$name"
if ! grep -q "etcd at http://127.0.0.1:1: POST /v3/lease/grant: cannot connect" <<<"$cluster_out"; then
  echo "the installed cachetd did not reach etcd with cluster settings:" >&2
  echo "$cluster_out" >&2
  exit 1
fi
echo "libcachet and cachectl: no cpp-httplib; cluster: the module loads"

cmake -S "$source_dir/examples/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$extra_flags" > "$work/configure.log"
cmake --build "$work/consumer" > "$work/build.log"

# shellcheck disable=SC2086
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" c++ $extra_flags -o "$work/client_example_pc" "$source_dir/examples/client_example.cc" \
  $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs cachet) -Wl,-rpath,"$work/prefix/lib"

# The limiter and the cache client are separate libraries: neither needs the
# other, and a program that only limits loads no cache client.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
if needed "$work/prefix/lib/libcachet_limiter.so" | grep -q '^libcachet\.so'; then
  echo "libcachet_limiter.so needs the cache client (libcachet.so)" >&2; exit 1
fi
if needed "$work/prefix/lib/libcachet.so" | grep -q '^libcachet_limiter'; then
  echo "libcachet.so needs the limiter (libcachet_limiter.so)" >&2; exit 1
fi
if needed "$work/consumer/limiter_example" | grep -q '^libcachet\.so'; then
  echo "limiter_example (cachet::limiter only) needs libcachet.so:" >&2; needed "$work/consumer/limiter_example" >&2; exit 1
fi
printf '[tier.regular]\nper_minute = 3/1m\n' > "$work/limits.ini"
out=$("$work/consumer/limiter_example" "$work/limits.ini" regular alice 5)
echo "find_package limiter build: $out"
[ "$out" = "allowed=3 denied=2" ]
# shellcheck disable=SC2086
c++ $extra_flags -o "$work/limiter_example_pc" "$source_dir/examples/limiter_example.cc" \
  $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs cachet-limiter) -Wl,-rpath,"$work/prefix/lib"
out=$("$work/limiter_example_pc" "$work/limits.ini" regular alice 4)
echo "pkg-config limiter build: $out"
[ "$out" = "allowed=3 denied=1" ]
# The daemon limiter's pkg-config file brings both libraries.
libs=$(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --libs cachet-daemon-limiter)
for lib in -lcachet_daemon_limiter -lcachet -lcachet_limiter; do
  grep -q -- "$lib\( \|$\)" <<<"$libs" || { echo "pkg-config cachet-daemon-limiter lacks $lib: $libs" >&2; exit 1; }
done

"$cachetd" --segment "$name" --ipc "ipc:///tmp/$name.sock" --tcp "" --capacity 8MiB --max-value-size 64KiB \
  --log-file "$work/cachetd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do grep -q " ready: " "$work/cachetd.log" 2>/dev/null && break; sleep 0.05; done

out=$("$work/consumer/client_example" "ipc:///tmp/$name.sock")
echo "find_package build: $out"
[ "$out" = "value=hello from cachet visits=1 shared_memory_reads=yes" ]
out=$("$work/client_example_pc" "ipc:///tmp/$name.sock")
echo "pkg-config build: $out"
[ "$out" = "value=hello from cachet visits=2 shared_memory_reads=yes" ]
# cachetd stops cleanly on SIGTERM (its stderr, with any sanitizer report,
# is this script's, which the test's runner checks).
kill "$daemon_pid"
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
[ "$status" -eq 0 ] || { echo "cachetd exited with status $status on SIGTERM" >&2; exit 1; }
echo "installed package: ok"
