#!/usr/bin/env bash
# Installs mdBook (from crates.io, built once and cached) and prints the
# folder holding its binary. Without its server and file watcher: the book
# is only built, never served, here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.sh
root="$TETHER_CACHE/mdbook-$MDBOOK_VERSION"
if [ ! -x "$root/bin/mdbook" ]; then
    echo "mdbook: building $MDBOOK_VERSION into $root" >&2
    cargo install mdbook --version "$MDBOOK_VERSION" --locked \
        --no-default-features --features search --root "$root.tmp" >&2
    rm -rf "$root"
    mv "$root.tmp" "$root"
fi
echo "$root/bin"
