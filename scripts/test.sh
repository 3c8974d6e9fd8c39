#!/usr/bin/env bash
# The whole test suite: builds the cluster binaries (cached), runs every test,
# then fails if any cluster process started by the tests is still running.
set -euo pipefail
cd "$(dirname "$0")/.."

TETHER_KUBE_BIN=$(bash scripts/cluster-binaries.sh)
export TETHER_KUBE_BIN

# End-to-end tests run one package's binary from another's tests (agentk
# from kas's), so every binary must exist first.
cargo build --workspace --bins --locked

status=0
log=$(mktemp)
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Every process of a test cluster has its temporary folder in its arguments.
# Anything still running with one is an orphan: a harness bug, not a flake.
orphans=$(pgrep -af -- '/tether-testenv-[0-9]+-' || true)
if [ -n "$orphans" ]; then
  echo "test.sh: cluster processes outlived the tests:" >&2
  echo "$orphans" >&2
  status=1
else
  echo "test.sh: no cluster process outlived the tests"
fi
# One closing line for the whole run: cargo prints one summary per test
# binary, and the last of them is often an empty doc-test run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
       if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
exit $status
