#!/usr/bin/env bash
# What the tests need beyond Rust: the real clients of the interop tests and
# the tools of the namespace, tracker and full-disk tests. As root, missing
# Debian packages are installed with apt; otherwise they are named, and the
# tests that need them record a skip (listed at the end of scripts/test.sh).
# Exit status: 0 when everything is present afterwards, 1 when something is
# still missing.
set -uo pipefail

# package  probe
checks=(
  "python3-libtorrent|/usr/bin/python3 -c 'import libtorrent'"
  "aria2|command -v aria2c"
  "transmission-cli|command -v transmission-cli"
  "transmission-daemon|command -v transmission-daemon"
  "prometheus|command -v promtool"
  "systemd|command -v systemd-analyze"
  "opentracker|command -v opentracker"
  "socat|command -v socat"
  "openssl|command -v openssl"
  "iproute2|command -v ip"
  "util-linux|command -v unshare"
)

missing() {
  local out=()
  for c in "${checks[@]}"; do
    local pkg=${c%%|*} probe=${c#*|}
    bash -c "$probe" >/dev/null 2>&1 || out+=("$pkg")
  done
  echo "${out[@]}"
}

need=$(missing)
if [ -z "$need" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-test-deps: installing $need" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  { apt-get update -qq && apt-get install -y -qq $need; } >&2 || true
  need=$(missing)
  [ -z "$need" ] && exit 0
fi
echo "install-test-deps: missing Debian packages: $need" >&2
echo "install-test-deps: as root, run: apt-get install $need" >&2
exit 1
