#!/usr/bin/env bash
# Gitea, the git host the webhook and commit-status tests push to: built from
# its Go module (crates/e2e/go/gitea, a wrapper module repeating Gitea's own
# replace directives) with SQLite (cgo), into a cache folder keyed by its
# pins: $TETHER_CACHE/gitea-<key>/bin/gitea. Gitea has no embedded assets:
# its templates and locales are read from the module's source folder, which
# the build leaves in Go's module cache and this script links as
# $TETHER_CACHE/gitea-<key>/share/gitea. Prints the bin folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"
# Not in versions.sh: that file keys the cluster binaries cache.
GITEA_VERSION=v1.26.0

mod="$root/crates/e2e/go/gitea"
key=$(cat "$here/gitea.sh" "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)
top="$TETHER_CACHE/gitea-$key"
bin="$top/bin"
if [ -x "$bin/gitea" ] && [ -d "$top/share/gitea/templates" ]; then
  echo "gitea: up to date in $bin" >&2
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$top/share"
echo "gitea: building $GITEA_VERSION from Go modules (about 3 minutes)" >&2
(cd "$mod" && CGO_ENABLED=1 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false" go build \
  -tags "sqlite sqlite_unlock_notify" -ldflags "-s -w" -o "$bin/gitea.tmp" code.gitea.io/gitea)
src=$(cd "$mod" && go list -m -f '{{.Dir}}' code.gitea.io/gitea)
# The module cache is read-only and may be cleaned: keep a copy of what
# Gitea reads at run time.
rm -rf "$top/share/gitea.tmp"
mkdir -p "$top/share/gitea.tmp"
cp -r "$src/templates" "$src/options" "$top/share/gitea.tmp/"
[ -d "$src/public" ] && cp -r "$src/public" "$top/share/gitea.tmp/"
chmod -R u+w "$top/share/gitea.tmp"
rm -rf "$top/share/gitea"
mv "$top/share/gitea.tmp" "$top/share/gitea"
mv "$bin/gitea.tmp" "$bin/gitea"
echo "$bin"
