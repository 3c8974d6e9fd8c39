#!/usr/bin/env bash
# The observability back ends the tests check Tether against, built from
# their Go modules into a cache folder keyed by their pins:
#   $TETHER_CACHE/observability-<key>/bin/{jaeger,promtool}
# jaeger: Jaeger v2 (crates/e2e/go/jaeger), an OpenTelemetry back end with
# in-memory storage that receives OTLP and answers trace queries.
# promtool: Prometheus's (crates/e2e/go/promtool), which checks /metrics.
# A second run is a no-op. Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

jaeger="$root/crates/e2e/go/jaeger"
promtool="$root/crates/e2e/go/promtool"
key=$(cat "$here/observability-tools.sh" "$jaeger/go.mod" "$jaeger/go.sum" "$promtool/go.mod" "$promtool/go.sum" | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/observability-$key/bin"
log() { echo "observability-tools: $*" >&2; }
if [ -x "$bin/jaeger" ] && [ -x "$bin/promtool" ]; then
  log "up to date in $bin"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
if [ ! -x "$bin/promtool" ]; then
  log "building promtool (about 2 minutes on 2 cores)"
  (cd "$promtool" && go build -ldflags "-s -w" -o "$bin/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool)
  mv "$bin/promtool.tmp" "$bin/promtool"
fi
if [ ! -x "$bin/jaeger" ]; then
  log "building Jaeger v2 (about 4 minutes on 2 cores)"
  (cd "$jaeger" && go build -ldflags "-s -w" -o "$bin/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv "$bin/jaeger.tmp" "$bin/jaeger"
fi
echo "$bin"
