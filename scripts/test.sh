#!/usr/bin/env bash
# The test command: formatting, lints, then every test in the workspace.
# Interop tests need python3-libtorrent, aria2 and transmission-cli
# (`.ci/run` installs them); outside CI=true they skip loudly when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing in the tests may reach beyond this machine unless it says so
# (the test helpers set this too; here it covers every other spawn).
export LODESTONE_LOCAL_ONLY=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
