#!/usr/bin/env bash
# Benchmarks whose figures go into BENCHMARKS.md.
#   scripts/bench.sh               warm cluster-binaries run, cluster start/stop
#   scripts/bench.sh --cold-build  also a cold build of the cluster binaries,
#                                  with empty Go build and module caches (~10 min)
set -euo pipefail
cd "$(dirname "$0")/.."
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

if [ "${1:-}" = "--cold-build" ]; then
  tmp=$(mktemp -d)
  t0=$(now)
  GOCACHE=$tmp/go-build GOMODCACHE=$tmp/go-mod TETHER_CACHE=$tmp/tether \
    bash scripts/cluster-binaries.sh >/dev/null
  echo "cluster binaries, cold (empty Go build and module caches, downloads included): $(secs "$t0" "$(now)") s"
  chmod -R u+w "$tmp" && rm -rf "$tmp"
fi

bash scripts/cluster-binaries.sh >/dev/null 2>&1
t0=$(now)
TETHER_KUBE_BIN=$(bash scripts/cluster-binaries.sh 2>/dev/null)
echo "cluster binaries, warm (already built): $(secs "$t0" "$(now)") s"
export TETHER_KUBE_BIN

cargo bench -q -p tether-testenv --bench cluster_start

# The benches (tether-e2e) run kas and agentk from target/release.
cargo build -q --release --bins

# Agents per kas: N = 100, 1000, 5000.
cargo bench -q -p tether-e2e --bench agents

# GitOps against kubectl on the same cluster.
cargo bench -q -p tether-e2e --bench gitops

# Helm charts: render against helm template alone; push-to-applied.
TETHER_RENDER_BIN=$(bash scripts/render-tools.sh)
export TETHER_RENDER_BIN
cargo bench -q -p tether-render --bench render
cargo bench -q -p tether-e2e --bench charts

# Apply engines: cli-utils (GitLab agent) and fluxcd/pkg/ssa (Flux) against
# Tether on the same 1,000 objects.
cargo bench -q -p tether-e2e --bench engines

# Image updates: registry push to Deployment updated (distribution, skopeo,
# Gitea), with notifications and with polling; the cost of scanning 1,000
# repositories of 500 tags.
TETHER_REGISTRY_BIN=$(bash scripts/oci-registry.sh)
TETHER_GITEA_BIN=$(bash scripts/gitea.sh)
export TETHER_REGISTRY_BIN TETHER_GITEA_BIN
cargo bench -q -p tether-e2e --bench images
cargo bench -q -p tether-images --bench scan

# The Kubernetes API proxy against direct access, on the same cluster.
cargo bench -q -p tether-e2e --bench proxy

# kas replicas: routed vs local, 1,000 simulated agents on 3 replicas behind
# HAProxy (PostgreSQL at rest, kill -9 failover).
bash scripts/install-services.sh
cargo bench -q -p tether-e2e --bench replicas -- 1000

# Fleet rollouts: 1,000 simulated agents in 10 waves vs all at once (PostgreSQL).
cargo bench -q -p tether-e2e --bench rollouts -- 1000

# What tracing costs: push to applied with a real agentk, and one commit to
# 1,000 simulated agents, off against the default sampler and every trace
# (Jaeger v2 as the back end).
TETHER_OBSERVABILITY_BIN=$(bash scripts/observability-tools.sh)
export TETHER_OBSERVABILITY_BIN
cargo bench -q -p tether-e2e --bench tracing
# Signed commits and SOPS: against git verify-commit and sops --decrypt.
cargo bench -q -p tether-git --bench verify
cargo bench -q -p tether-sops --bench decrypt
cargo bench -q -p tether-e2e --bench rollouts -- 1000 --tracing=off,default,all,off
