#!/usr/bin/env bash
# The tools of the signed-commit and SOPS tests, built from their Go modules
# (crates/e2e/go/sops) into a cache folder keyed by their pins:
#   $TETHER_CACHE/signing-<key>/bin/{sops,age,age-keygen}
# sops and age: encrypt the secrets the SOPS tests apply (age-keygen makes
# the age keys they are encrypted to).
# ssh-keygen and gpg, Debian's (scripts/install-services.sh), sign commits
# in the signed-commit tests; they are not built here.
# A second run is a no-op. Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

sops="$root/crates/e2e/go/sops"
key=$(cat "$here/signing-tools.sh" "$sops/go.mod" "$sops/go.sum" | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/signing-$key/bin"
log() { echo "signing-tools: $*" >&2; }
if [ -x "$bin/sops" ] && [ -x "$bin/age" ] && [ -x "$bin/age-keygen" ]; then
  log "up to date in $bin"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
if [ ! -x "$bin/sops" ]; then
  log "building sops (about 2 minutes on 2 cores)"
  (cd "$sops" && go build -ldflags "-s -w" -o "$bin/sops.tmp" github.com/getsops/sops/v3/cmd/sops)
  mv "$bin/sops.tmp" "$bin/sops"
fi
for tool in age age-keygen; do
  if [ ! -x "$bin/$tool" ]; then
    log "building $tool (a few seconds once sops is built)"
    (cd "$sops" && go build -ldflags "-s -w" -o "$bin/$tool.tmp" "filippo.io/age/cmd/$tool")
    mv "$bin/$tool.tmp" "$bin/$tool"
  fi
done
echo "$bin"
