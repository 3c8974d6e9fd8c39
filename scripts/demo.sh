#!/usr/bin/env bash
# The main job for a person: builds everything, starts a local cluster, kas and
# agentk, prints what runs, and stops all of it on Ctrl-C.
#   scripts/demo.sh          run until Ctrl-C
#   scripts/demo.sh --check  start, print, verify, stop (CI smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1:-}" = "--check" ] && check=true

demo=target/demo
kas_api=${DEMO_KAS_API:-127.0.0.1:8150}
kas_admin=${DEMO_KAS_ADMIN:-127.0.0.1:8151}
kas_agent=${DEMO_KAS_AGENT:-127.0.0.1:8152}
agentk_probes=${DEMO_AGENTK_PROBES:-127.0.0.1:8153}
kas_proxy=${DEMO_KAS_PROXY:-127.0.0.1:8154}
mkdir -p "$demo"

TETHER_KUBE_BIN=$(bash scripts/cluster-binaries.sh)
export TETHER_KUBE_BIN
echo "demo: building Tether"
cargo build --workspace --bins --locked

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Polls a condition until a deadline; fails the demo with the log on timeout.
wait_for() { # what timeout-seconds log command...
  local what=$1 timeout=$2 log=$3; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "demo: $what did not happen within ${timeout}s; end of $log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

rm -f "$demo/cluster/kubeconfig"
target/debug/tether-cluster --dir "$demo/cluster" >"$demo/cluster.log" 2>&1 &
pids+=($!)
wait_for "cluster start" 180 "$demo/cluster.log" grep -q "press Ctrl-C" "$demo/cluster.log"
kubeconfig="$demo/cluster/kubeconfig"

rm -rf "$demo/kas"
target/debug/kas serve --data-dir "$demo/kas" --api-listen "$kas_api" --admin-listen "$kas_admin" \
  --agent-listen "$kas_agent" --k8s-proxy-listen "$kas_proxy" >"$demo/kas.log" 2>&1 &
pids+=($!)
wait_for "kas /readyz" 30 "$demo/kas.log" curl -sf "http://$kas_admin/readyz"

# Register an agent the way a person would, with the kas CLI.
kas_cli() { target/debug/kas --server "http://$kas_api" --admin-token-file "$demo/kas/admin-token" "$@"; }
# The agent's configuration project: a git repository with its config file.
repo="$demo/config-repo"
rm -rf "$repo"
mkdir -p "$repo/.gitlab/agents/demo"
git init -q -b main "$repo"
cat >"$repo/.gitlab/agents/demo/config.yaml" <<'EOF'
observability:
  logging:
    level: info
gitops:
  manifest_projects:            # no id: this same project
    - default_namespace: demo
      paths:
        - glob: 'manifests/*.yaml'
user_access:                    # kas users who are members of demo/config
  access_as: { user: {} }       # run as tether:user:<name>, so RBAC applies
  projects: [{ id: demo/config }]
EOF
mkdir -p "$repo/manifests"
cat >"$repo/manifests/app.yaml" <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello from git}
---
# What the demo user may do through kas: read the demo namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: demo-user-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "tether:user:demo-user"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
EOF
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@tether.invalid commit -qm "agent config"
kas_cli project add demo/config --url "$repo" >/dev/null
kas_cli agent create demo --project demo/config >/dev/null
kas_cli token create demo --name demo | tail -n 1 >"$demo/agent-token"

target/debug/agentk --kubeconfig "$kubeconfig" --kas-address "grpcs://$kas_agent" \
  --token-file "$demo/agent-token" --ca-cert "$demo/kas/agent-ca.crt" \
  --observability-listen "$agentk_probes" >"$demo/agentk.log" 2>&1 &
pids+=($!)
wait_for "agentk connecting to kas" 60 "$demo/agentk.log" grep -q "connected to kas" "$demo/agentk.log"
wait_for "agentk readiness" 10 "$demo/agentk.log" curl -sf "http://$agentk_probes/readiness"
wait_for "agentk applying its config from git" 20 "$demo/agentk.log" grep -q "applied configuration" "$demo/agentk.log"
wait_for "the manifests to be synced" 60 "$demo/agentk.log" grep -q "synced commit" "$demo/agentk.log"
all_current() { kas_cli agent gitops demo | grep -q Current && ! kas_cli agent gitops demo | grep -qE 'InProgress|Unknown'; }
wait_for "the synced objects to become Current" 60 "$demo/agentk.log" all_current

# A user reaches the cluster through kas, with kubectl and a kubeconfig kas writes.
kas_cli user create demo-user --member-of demo/config >/dev/null
kas_cli user token create demo-user --name laptop | tail -n 1 >"$demo/user-token"
tunnels_up() { kas_cli agent show demo -o json | grep -q '"tunnels": 2'; }
wait_for "agentk's tunnels" 20 "$demo/kas.log" tunnels_up
kas_cli kubeconfig --agent demo --token-file "$demo/user-token" --out "$demo/user-kubeconfig" >/dev/null
proxied=("$TETHER_KUBE_BIN/kubectl" --kubeconfig "$demo/user-kubeconfig")
wait_for "kubectl through kas" 20 "$demo/kas.log" "${proxied[@]}" get configmap settings -n demo

kubectl=("$TETHER_KUBE_BIN/kubectl" --kubeconfig "$kubeconfig")
echo
sed -n '1,/press Ctrl-C/p' "$demo/cluster.log" | grep -v "press Ctrl-C"
echo "kas     pid ${pids[1]}  API http://$kas_api (admin token in $demo/kas/admin-token)  readyz: $(curl -sf "http://$kas_admin/readyz")"
echo "agentk  pid ${pids[2]}  $(grep -o 'server_version=[^ ]*' "$demo/agentk.log" | head -1), connected to kas at grpcs://$kas_agent, readiness: $(curl -sf "http://$agentk_probes/readiness")"
echo "config  $repo/.gitlab/agents/demo/config.yaml at $(git -C "$repo" rev-parse --short HEAD), applied by agentk; commit a change and run: target/debug/kas --server http://$kas_api --admin-token-file $demo/kas/admin-token project refresh demo/config"
echo
echo "kas agent list:"
kas_cli agent list
echo
echo "kas agent gitops demo (manifests/app.yaml, synced by agentk):"
kas_cli agent gitops demo
echo
"${kubectl[@]}" get nodes
echo
echo "through kas as a user (${proxied[*]}):"
"${proxied[@]}" auth whoami
"${proxied[@]}" get deployments -n demo
echo
echo "logs: $demo/*.log; kubectl: ${kubectl[*]}"
if $check; then
  echo "demo: check passed"
  exit 0
fi
echo "press Ctrl-C to stop"
wait "${pids[0]}"
