#!/usr/bin/env bash
# The OCI registry the tests push Helm charts to (distribution v3, built from
# its Go module in crates/e2e/go/registry), into a cache folder keyed by its
# pins: $TETHER_CACHE/registry-<key>/bin/registry. Prints the bin folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

mod="$root/crates/e2e/go/registry"
key=$(cat "$here/oci-registry.sh" "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/registry-$key/bin"
if [ -x "$bin/registry" ]; then
  echo "oci-registry: up to date in $bin" >&2
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
echo "oci-registry: building distribution's registry (about a minute)" >&2
(cd "$mod" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" go build \
  -ldflags "-s -w" -o "$bin/registry.tmp" github.com/distribution/distribution/v3/cmd/registry)
mv "$bin/registry.tmp" "$bin/registry"
echo "$bin"
