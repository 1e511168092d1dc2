#!/usr/bin/env bash
# The test command: formatting, lints, every test in the workspace, the fuzz
# targets' build and corpus replay, then a summary of every test that did
# not run (skipped for a missing client, or ignored with a reason).
#
# Missing clients are installed first where we can (as root, with apt) or
# named (scripts/install-test-deps.sh). With LODESTONE_STRICT=1 (`.ci/run`
# sets it) or CI=true, a test whose client is missing fails instead of
# skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing in the tests may reach beyond this machine unless it says so
# (the test helpers set this too; here it covers every other spawn).
export LODESTONE_LOCAL_ONLY=1

mkdir -p target
export LODESTONE_SKIP_LOG="$PWD/target/skipped-tests.log"
: >"$LODESTONE_SKIP_LOG"
log="$PWD/target/test-output.log"

deps_ok=1
./scripts/install-test-deps.sh || deps_ok=0

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings

status=0
{
  cargo test --workspace --locked --no-fail-fast 2>&1 || echo "lodestone-test-status: failed"
  # Every fuzz target builds, and every input in its corpus and its
  # regressions folder is replayed (a crash found once stays fixed).
  cargo build --manifest-path fuzz/Cargo.toml --bins --locked 2>&1 || echo "lodestone-test-status: failed"
  cargo test --manifest-path fuzz/Cargo.toml --locked 2>&1 || echo "lodestone-test-status: failed"
} | tee "$log"
grep -q '^lodestone-test-status: failed' "$log" && status=1

# ---- what did not run ----
# libtest prints "test NAME ... ignored, REASON"; cargo names the binary
# on the "Running" line before it.
ignored=$(awk '
  /^ *Running / {
    bin = $0; sub(/^ *Running /, "", bin); sub(/ \(.*$/, "", bin)
    exe = $NF; sub(/^.*\//, "", exe); sub(/-[0-9a-f]+\)$/, "", exe)
    bin = exe " (" bin ")"
  }
  /^ *Doc-tests / { bin = "doc-tests " $2 }
  /^test .* \.\.\. ignored/ { sub(/^test /, ""); print "  " bin ": " $0 }
' "$log")
skipped=$(sed 's/^/  /' "$LODESTONE_SKIP_LOG")
echo
echo "==== tests that did not run ===="
if [ -z "$ignored$skipped" ]; then
  echo "  none: every test ran"
else
  [ -n "$skipped" ] && { echo "skipped (a client or privilege is missing):"; echo "$skipped"; }
  [ -n "$ignored" ] && { echo "ignored (#[ignore] with its reason):"; echo "$ignored"; }
fi
[ "$deps_ok" = 1 ] || echo "  (scripts/install-test-deps.sh named missing packages above)"
echo "================================"
if [ -n "$skipped" ] && { [ "${LODESTONE_STRICT:-}" = 1 ] || [ "${CI:-}" = true ]; }; then
  echo "strict mode: skips are failures" >&2
  status=1
fi
exit "$status"
