#!/usr/bin/env bash
# Builds the Debian package of this build (cpack -G DEB), checks its control
# data, unpacks it into a scratch root with dpkg -x (nothing is installed on
# the machine, no maintainer script runs), checks that every file is where
# the package promises, and runs the unpacked cachetd with the packaged
# configuration on its own endpoints and segment: cachectl ping, set, get,
# a reload by SIGHUP (the unit's ExecReload), then SIGTERM.
set -euo pipefail
build_dir=$1 cpack=$2

work=$(mktemp -d /tmp/cachet-deb-test.XXXXXX)
name="cachet-deb-$$"
cleanup() {
  [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work" "/dev/shm/$name" "/dev/shm/$name-ratelimit" "/dev/shm/$name.lock"
}
trap cleanup EXIT
fail() { echo "$*" >&2; exit 1; }

"$cpack" -G DEB --config "$build_dir/CPackConfig.cmake" -B "$work/cpack" > "$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
debs=("$work"/cpack/cachet_*.deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then fail "cpack made no single cachet_*.deb: ${debs[*]}"; fi
deb=${debs[0]}
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

# Control data: name, dependencies worked out by dpkg-shlibdeps, the
# configuration as a conffile, maintainer scripts that parse.
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = cachet ] || fail "Package is '$(field Package)', not cachet"
[ -n "$(field Maintainer)" ] || fail "the package has no Maintainer"
depends=$(field Depends)
for dep in adduser libc6 libzmq5; do
  grep -q "\(^\|, \)$dep\( \|,\|$\)" <<<"$depends" || fail "Depends lacks $dep: $depends"
done
dpkg-deb -e "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/cachet/cachetd.conf ] ||
  fail "conffiles is not /etc/cachet/cachetd.conf: $(cat "$work/control/conffiles")"
grep -q '^activate-noawait ldconfig$' "$work/control/triggers" || fail "no ldconfig trigger"
grep -q '^libcachet 0 cachet' "$work/control/shlibs" || fail "shlibs does not name libcachet.so.0"
for script in postinst prerm postrm; do
  [ -x "$work/control/$script" ] || fail "$script is missing or not executable"
  sh -n "$work/control/$script" || fail "$script does not parse"
done
grep -q 'adduser --system --group .* cachet' "$work/control/postinst" || fail "postinst makes no cachet system user"

dpkg -x "$deb" "$work/root"
root=$work/root
for f in usr/bin/cachetd usr/bin/cachectl; do
  [ -x "$root/$f" ] || fail "/$f is missing or not executable"
done
for f in usr/lib/libcachet.so.0 usr/lib/libcachet_shm.so.0 usr/lib/libcachet_limiter.so.0 \
  usr/lib/libcachet_daemon_limiter.so.0 usr/lib/libcachet_etcd_http.so usr/lib/libcachet.so \
  usr/include/cachet/client.h usr/include/cachet/rate_limiter.h \
  usr/lib/pkgconfig/cachet.pc usr/lib/pkgconfig/cachet-limiter.pc usr/lib/pkgconfig/cachet-daemon-limiter.pc \
  usr/lib/cmake/cachet/cachetConfig.cmake usr/lib/cmake/cachet/cachetConfigVersion.cmake \
  usr/lib/systemd/system/cachetd.service etc/cachet/cachetd.conf usr/share/doc/cachet/operations.md; do
  [ -e "$root/$f" ] || fail "/$f is missing from the package"
done
if dpkg-deb -c "$deb" | grep -q ' \./usr/local/\| \./usr/etc/'; then
  fail "the package has files under /usr/local or /usr/etc: $(dpkg-deb -c "$deb" | grep ' \./usr/local/\| \./usr/etc/')"
fi
# The unit: the key lines, and systemd's own check where systemd is installed.
unit=$root/usr/lib/systemd/system/cachetd.service
# shellcheck disable=SC2016 # $MAINPID is systemd's, not the shell's
for line in 'User=cachet' 'Group=cachet' 'ExecStart=/usr/bin/cachetd --config /etc/cachet/cachetd.conf' \
  'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' 'RuntimeDirectory=cachet' 'RemoveIPC=no' \
  'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' \
  'WantedBy=multi-user.target'; do
  grep -qxF "$line" "$unit" || fail "cachetd.service lacks the line '$line'"
done
if command -v systemd-analyze >/dev/null; then
  # verify wants ExecStart's program to exist: the unpacked one stands in.
  mkdir "$work/unit"
  sed "s|^ExecStart=/usr/bin/cachetd|ExecStart=$root/usr/bin/cachetd|" "$unit" > "$work/unit/cachetd.service"
  systemd-analyze verify "$work/unit/cachetd.service" || fail "systemd-analyze verify rejects cachetd.service"
  echo "systemd-analyze verify: ok"
fi
# The packaged configuration serves its socket in the unit's runtime folder.
conf=$root/etc/cachet/cachetd.conf
grep -qx 'ipc = ipc:///run/cachet/cachetd.sock' "$conf" || fail "the packaged configuration's ipc is not in /run/cachet"
# ...open to the unit's group, whose members are the same-host clients.
grep -qx 'access-mode = 0660' "$conf" || fail "the packaged configuration's access-mode is not 0660"
grep -qx 'access-group = cachet' "$conf" || fail "the packaged configuration's access-group is not cachet"
# ...and serves its metrics on loopback.
grep -qx 'metrics = 127.0.0.1:9379' "$conf" || fail "the packaged configuration's metrics are not on 127.0.0.1:9379"
# ...and its stream endpoint on loopback.
grep -qx 'stream = 127.0.0.1:7378' "$conf" || fail "the packaged configuration's stream endpoint is not on 127.0.0.1:7378"

# The unpacked programs use the unpacked libraries (their run path), not
# any installed on the machine.
for binary in cachetd cachectl; do
  lib=$(ldd "$root/usr/bin/$binary" | awk '$1 == "libcachet_shm.so.0" { print $3 }')
  if [ -z "$lib" ] || [ "$(realpath "$lib")" != "$(realpath "$root/usr/lib/libcachet_shm.so.0")" ]; then
    fail "$binary loads libcachet_shm from '$lib', not the package"
  fi
done

# The unpacked daemon with the packaged configuration; only the endpoints
# (metrics and stream on free ports), segment and size are its own, so it disturbs
# nothing on the machine, and the group is this user's (the package's
# postinst makes group cachet).
"$root/usr/bin/cachetd" --config "$conf" --segment "$name" --ipc "ipc://$work/cachetd.sock" \
  --tcp tcp://127.0.0.1:0 --metrics 127.0.0.1:0 --stream 127.0.0.1:0 --capacity 8MiB --max-value-size 64KiB --access-group "$(id -gn)" \
  2> "$work/cachetd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do grep -q " ready: " "$work/cachetd.log" && break; sleep 0.05; done
grep -q " ready: " "$work/cachetd.log" || { cat "$work/cachetd.log" >&2; fail "the packaged cachetd did not start"; }
tcp=$(sed -n 's/.*listening on \(tcp:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/cachetd.log" | head -n 1)
[ -n "$tcp" ] || { cat "$work/cachetd.log" >&2; fail "no tcp endpoint in the log"; }
grep -q "metrics on http://127.0.0.1:[0-9]*/metrics" "$work/cachetd.log" ||
  { cat "$work/cachetd.log" >&2; fail "the packaged configuration serves no metrics"; }

cachectl=$root/usr/bin/cachectl
out=$("$cachectl" --endpoint "$tcp" ping)
echo "cachectl ping ($tcp): $out"
[ "$out" = PONG ] || fail "ping answered '$out'"
"$cachectl" --endpoint "ipc://$work/cachetd.sock" set greeting "hello from the package" > /dev/null
out=$(CACHET_ENDPOINT="ipc://$work/cachetd.sock" "$cachectl" get greeting)
echo "cachectl get: $out"
[ "$out" = "hello from the package" ] || fail "get answered '$out'"
stream=$(sed -n 's/.*listening on \(stream:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/cachetd.log" | head -n 1)
[ -n "$stream" ] || { cat "$work/cachetd.log" >&2; fail "no stream endpoint in the log"; }
out=$("$cachectl" --endpoint "$stream" get greeting)
echo "cachectl get ($stream): $out"
[ "$out" = "hello from the package" ] || fail "get over the stream endpoint answered '$out'"

# systemctl reload sends SIGHUP: the packaged configuration reloads.
kill -HUP "$daemon_pid"
for _ in $(seq 1 100); do grep -q "configuration reloaded" "$work/cachetd.log" && break; sleep 0.05; done
grep -q "configuration reloaded" "$work/cachetd.log" || { cat "$work/cachetd.log" >&2; fail "SIGHUP did not reload"; }

kill "$daemon_pid"
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
[ "$status" -eq 0 ] || { cat "$work/cachetd.log" >&2; fail "cachetd exited with status $status on SIGTERM"; }
echo "debian package: ok"
