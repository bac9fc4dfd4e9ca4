#!/usr/bin/env bash
# Install the system tools Rempart needs, only when they are missing.
#
#   .ci/install-deps.sh              build + test tools (make deps)
#   .ci/install-deps.sh --bench      the same, plus nginx, haproxy, wrk, h2load and python3 (make
#                                    bench; openssl, for its s_time, is in the first list)
#
# Each tool is checked with `command -v`; apt-get (update + install) runs only when at least one
# is missing, so a machine that has everything never touches the network.
set -euo pipefail

# command:debian-package
tools=(
  cmake:cmake             # pingora's zlib-ng (libz-ng-sys) is built with CMake
  cc:gcc                  # ring, zstd-sys and zlib-ng build C code
  pkg-config:pkg-config
  curl:curl               # the demo tour and health probes by hand
  openssl:openssl         # dev certificates; `openssl s_time` for bench/scenarios.sh
  ip:iproute2             # failover tests (network namespaces, addresses)
  iptables:iptables       # failover tests (dropping a datacenter's packets)
  chromium:chromium       # the dashboard test renders the admin page in headless Chromium
  promtool:prometheus     # deploy test: promtool check/test rules on deploy/prometheus/ (the
                          # package brings the Prometheus service too; only promtool is used)
)
if [ "${1:-}" = "--bench" ]; then
  tools+=(
    nginx:nginx
    haproxy:haproxy
    wrk:wrk
    h2load:nghttp2-client
    python3:python3       # the benchmarks read the admin API's JSON and h2-attack's
  )
fi

missing=()
for t in "${tools[@]}"; do
  cmd=${t%%:*} pkg=${t#*:}
  # iptables and ip live in /usr/sbin, which a non-root PATH may not include.
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
    missing+=("$pkg")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all tools present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps: not root and no sudo; please install: ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: no apt-get on this machine; please install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
