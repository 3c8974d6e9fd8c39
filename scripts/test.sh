#!/usr/bin/env bash
# The whole test suite: builds the cluster binaries (cached), runs every test,
# then fails if any cluster process started by the tests is still running.
set -euo pipefail
cd "$(dirname "$0")/.."

TETHER_KUBE_BIN=$(bash scripts/cluster-binaries.sh)
export TETHER_KUBE_BIN
# helm and kustomize, which kas renders charts and kustomizations with.
TETHER_RENDER_BIN=$(bash scripts/render-tools.sh)
export TETHER_RENDER_BIN
# An OCI registry (distribution's), for the oci:// chart test.
TETHER_REGISTRY_BIN=$(bash scripts/oci-registry.sh)
export TETHER_REGISTRY_BIN
# Gitea, the git host of the push webhook test.
TETHER_GITEA_BIN=$(bash scripts/gitea.sh)
export TETHER_GITEA_BIN
# Jaeger v2 and promtool: the OpenTelemetry back end of the tracing test,
# and the checker of both programs' /metrics.
TETHER_OBSERVABILITY_BIN=$(bash scripts/observability-tools.sh)
export TETHER_OBSERVABILITY_BIN
# sops and age, which encrypt the secrets of the SOPS tests.
TETHER_SIGNING_BIN=$(bash scripts/signing-tools.sh)
export TETHER_SIGNING_BIN
# PostgreSQL for the store suite and kas on a shared database.
bash scripts/install-services.sh

# End-to-end tests run one package's binary from another's tests (agentk
# from kas's), so every binary must exist first.
cargo build --workspace --bins --locked

status=0
log=$(mktemp)
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Every process of a test cluster has its folder, tether-testenv-<pid>-…, in
# its arguments, where <pid> is the test process that owns it. One whose owner
# is gone is an orphan: a harness bug, not a flake. (A cluster whose owner
# still runs belongs to another test run on this machine.) The kernel kills
# children when their owner dies; give that a few seconds to land.
find_orphans() {
  { pgrep -af -- '/tether-testenv-[0-9]+-' || true; } | while read -r pid cmd; do
    owner=$(printf '%s' "$cmd" | grep -o 'tether-testenv-[0-9]*' | head -n 1 | cut -d- -f3)
    [ -n "$owner" ] && [ -d "/proc/$owner" ] && continue
    echo "$pid $cmd"
  done
}
orphans=$(find_orphans)
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ -z "$orphans" ] && break
  sleep 0.5
  orphans=$(find_orphans)
done
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
