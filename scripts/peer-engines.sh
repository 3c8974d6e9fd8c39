#!/usr/bin/env bash
# The peers' apply engines, as small commands for the engines benchmark
# (crates/e2e/benches/engines.rs), into a cache folder keyed by their pins:
#   $TETHER_CACHE/engines-<key>/bin/{cliutils-apply,fluxssa-apply}
# cliutils-apply is the GitLab agent's engine (sigs.k8s.io/cli-utils v0.37.2:
# applier with inventory, prune and status wait); fluxssa-apply is Flux's
# (github.com/fluxcd/pkg/ssa v0.78.0: ApplyAllStaged, WaitForSet). Both are
# built from Go modules (crates/e2e/go/*). Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

mods="$root/crates/e2e/go"
key=$(cat "$here/peer-engines.sh" "$mods"/{cliutils,fluxssa}/{go.mod,go.sum,*.go} | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/engines-$key/bin"
log() { echo "peer-engines: $*" >&2; }

if [ -x "$bin/cliutils-apply" ] && [ -x "$bin/fluxssa-apply" ]; then
  log "up to date in $bin"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
for engine in cliutils fluxssa; do
  log "building $engine-apply"
  (cd "$mods/$engine" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" \
    go build -ldflags "-s -w" -o "$bin/$engine-apply.tmp" . && mv "$bin/$engine-apply.tmp" "$bin/$engine-apply")
done
echo "$bin"
