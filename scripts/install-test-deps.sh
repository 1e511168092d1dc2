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
  "chromium|command -v chromium"
  "nodejs|command -v node"
  "npm|command -v npm"
)

missing() {
  local out=()
  for c in "${checks[@]}"; do
    local pkg=${c%%|*} probe=${c#*|}
    bash -c "$probe" >/dev/null 2>&1 || out+=("$pkg")
  done
  echo "${out[@]}"
}

# The web page's browser test drives chromium with playwright-core, pinned
# by tests/web/package-lock.json (npm is a test dependency only; the page
# itself has no build step).
node_modules() {
  [ -d tests/web/node_modules/playwright-core ] && return 0
  [ -f tests/web/package-lock.json ] || return 0
  command -v npm >/dev/null || return 1
  echo "install-test-deps: npm ci in tests/web" >&2
  npm ci --prefix tests/web --no-audit --no-fund >&2
}

cd "$(dirname "$0")/.."
need=$(missing)
if [ -z "$need" ]; then
  node_modules
  exit
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-test-deps: installing $need" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  { apt-get update -qq && apt-get install -y -qq $need; } >&2 || true
  need=$(missing)
  if [ -z "$need" ]; then
    node_modules
    exit
  fi
fi
echo "install-test-deps: missing Debian packages: $need" >&2
echo "install-test-deps: as root, run: apt-get install $need" >&2
exit 1
