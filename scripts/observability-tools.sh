#!/usr/bin/env bash
# The observability back ends the tests check Tether against, built from
# their Go modules into a cache folder keyed by their pins:
#   $TETHER_CACHE/observability-<key>/bin/{jaeger,promtool}
#   $TETHER_CACHE/observability-<key>/share/crds/*.yaml
# jaeger: Jaeger v2 (crates/e2e/go/jaeger), an OpenTelemetry back end with
# in-memory storage that receives OTLP and answers trace queries.
# promtool: Prometheus's (crates/e2e/go/promtool), which checks /metrics.
# crds: the Prometheus operator's ServiceMonitor, PodMonitor and
# PrometheusRule definitions, from its Go module, which the Helm charts'
# monitoring objects are checked against.
# A second run is a no-op. Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

jaeger="$root/crates/e2e/go/jaeger"
promtool="$root/crates/e2e/go/promtool"
# The Prometheus operator whose CRDs the charts' objects are checked against.
operator_version=v0.85.0
key=$(cat "$here/observability-tools.sh" "$jaeger/go.mod" "$jaeger/go.sum" "$promtool/go.mod" "$promtool/go.sum" | sha256sum | cut -c1-12)
bin="$TETHER_CACHE/observability-$key/bin"
crds="$TETHER_CACHE/observability-$key/share/crds"
log() { echo "observability-tools: $*" >&2; }
if [ -x "$bin/jaeger" ] && [ -x "$bin/promtool" ] && [ -s "$crds/monitoring.coreos.com_prometheusrules.yaml" ]; then
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
if [ ! -s "$crds/monitoring.coreos.com_prometheusrules.yaml" ]; then
  log "fetching the Prometheus operator's CRDs ($operator_version)"
  src=$(cd "$promtool" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$operator_version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$crds.tmp"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$crds.tmp/"
  done
  rm -rf "$crds" && mv "$crds.tmp" "$crds"
fi
echo "$bin"
