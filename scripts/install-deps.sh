#!/usr/bin/env bash
# Installs the Debian 12 packages cachet needs to build and test, only those
# missing. Runs apt-get through sudo when not root. Safe to run repeatedly.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config      # build
  clang libclang-rt-14-dev              # fuzzing (tests/fuzz/run.sh): clang 14, libFuzzer and its sanitizer runtimes
  ccache                                # faster rebuilds (CMake uses it when present)
  libboost-dev                          # Boost.Interprocess (segments)
  libexpected-dev                       # tl::expected (Result<T>)
  libxxhash-dev                         # key hashing
  libzmq3-dev cppzmq-dev                # ZeroMQ transport
  libmsgpack-cxx-dev                    # wire encoding
  libspdlog-dev                         # daemon logs
  libboost-program-options-dev          # daemon configuration
  libgtest-dev libbenchmark-dev         # tests and benchmarks
  libhiredis-dev redis-server redis-tools bc  # side-by-side benchmark against Redis
  libcpp-httplib-dev                    # the HTTP example in front of the rate limiter
  nlohmann-json3-dev                    # cachectl --json, etcd's JSON gateway
  etcd-server etcd-client               # the cluster's control plane (tests start their own etcd)
  nginx-light                           # auth_request test (tests start their own nginx)
  wrk                                   # bench/wrk_http_service.sh
  tcpdump                               # curve_test: a capture of its own loopback port
  iproute2                              # cluster tests: network namespaces, veths and a bridge (ip)
  gnuplot-nox                           # cachet-load --png: latency and throughput over time
  dpkg-dev file                         # cpack -G DEB: dpkg-shlibdeps finds the package's dependencies
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
# redis-server, nginx-light and etcd-server are here for the tests and
# benchmarks, which start their own on loopback. Debian would start their
# system services on install (and fail the install if port 6379, 80 or 2379
# is taken): a policy-rc.d forbids that while apt runs, unless the machine
# already has one.
servers=()
for p in "${missing[@]}"; do
  case "$p" in redis-server | nginx-light | etcd-server) servers+=("$p") ;; esac
done
policy=/usr/sbin/policy-rc.d
if [ ${#servers[@]} -gt 0 ] && [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# install-deps (cachet): no service starts while it installs packages\nexit 101\n' |
    "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Keep them from starting at the next boot too, where systemd runs.
if [ ${#servers[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
  for p in "${servers[@]}"; do
    case "$p" in
      nginx-light) unit=nginx ;; # nginx-light installs nginx.service
      etcd-server) unit=etcd ;;  # and etcd-server etcd.service
      *) unit=$p ;;
    esac
    "${as_root[@]}" systemctl disable --quiet "$unit" 2>/dev/null || true
  done
  echo "install-deps: left the ${servers[*]} system services disabled; cachet's tests start their own"
fi
