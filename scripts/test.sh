#!/usr/bin/env bash
# The whole test suite: builds the cluster binaries (cached), runs every test,
# then fails if any cluster process started by the tests is still running.
set -euo pipefail
cd "$(dirname "$0")/.."

TETHER_KUBE_BIN=$(bash scripts/cluster-binaries.sh)
export TETHER_KUBE_BIN

status=0
cargo test --workspace --locked "$@" || status=$?

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
exit $status
