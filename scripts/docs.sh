#!/usr/bin/env bash
# Builds the documentation book (docs/) and checks its links and the
# top-level Markdown files' links.
#
#   scripts/docs.sh          regenerate the reference pages, build, check
#   scripts/docs.sh --check  the same, and fail if a generated page in the
#                            repository is out of date (CI runs this)
#
# The CLI and REST API references are generated from the kas binary itself
# (`kas docs cli`, `kas docs api`), so they list exactly what it parses and
# what openapi.yaml documents.
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1:-}" = "--check" ] && check=true

mdbook="$(bash scripts/mdbook.sh)/mdbook"
cargo build -q -p kas --bin kas
kas=target/debug/kas
reference=docs/src/reference
mkdir -p "$reference"
for page in cli api; do
    generated=$(mktemp)
    "$kas" docs "$page" > "$generated"
    if $check && ! cmp -s "$generated" "$reference/$page.md"; then
        diff -u "$reference/$page.md" "$generated" | head -40 >&2 || true
        echo "docs: $reference/$page.md is out of date: run scripts/docs.sh and commit it" >&2
        rm -f "$generated"
        exit 1
    fi
    mv "$generated" "$reference/$page.md"
done
rm -rf docs/book
"$mdbook" build docs
python3 scripts/check-links.py docs/book README.md ARCHITECTURE.md BENCHMARKS.md \
    RELIABILITY.md CHANGELOG.md docs/src
echo "docs: built docs/book/index.html"
