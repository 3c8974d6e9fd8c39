#!/usr/bin/env bash
# Builds the OCI images of kas and agentk without a container daemon and
# checks them with Debian's skopeo and umoci:
#   1. static (musl) release binaries;
#   2. an OCI image layout each under target/images/<name> (scripts/oci-image.py:
#      the binary on a minimal base; kas also gets git and ssh, ssh-keygen
#      and gpg that git verifies commit and tag signatures with, and helm and
#      kustomize from scripts/render-tools.sh to render charts with);
#   3. skopeo inspects each image, umoci unpacks it, and each program runs
#      --version inside its own unpacked root (chroot as root), so a missing
#      library fails here, not in a cluster.
# Push with: skopeo copy oci:target/images/kas:<version> docker://registry/tether/kas:<version>
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  echo "build-images: musl-gcc missing: run scripts/install-services.sh" >&2
  exit 1
fi
cargo build --release --locked --target "$target" -p kas -p agentk
bin="target/$target/release"
for program in kas agentk; do
  if ! file "$bin/$program" | grep -q "statically linked\|static-pie linked"; then
    echo "build-images: $bin/$program is not static: $(file "$bin/$program")" >&2
    exit 1
  fi
done

# The tools kas renders charts and kustomizations with, static both.
tools=$(bash scripts/render-tools.sh)
for tool in helm kustomize; do
  if ! file -L "$tools/$tool" | grep -q "statically linked\|static-pie linked"; then
    echo "build-images: $tools/$tool is not static: $(file -L "$tools/$tool")" >&2
    exit 1
  fi
done

rm -rf target/images
python3 scripts/oci-image.py --name kas --version "$version" --binary "$bin/kas" --out target/images/kas --with-git \
  --tool "$tools/helm" --tool "$tools/kustomize"
python3 scripts/oci-image.py --name agentk --version "$version" --binary "$bin/agentk" --out target/images/agentk

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for program in kas agentk; do
  image="oci:target/images/$program:$version"
  skopeo inspect "$image" > "$work/$program.json"
  python3 - "$work/$program.json" "$program" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
assert info["Architecture"] == "amd64" and info["Os"] == "linux", info
assert info["Labels"]["org.opencontainers.image.title"] == sys.argv[2], info
print(f"skopeo: {sys.argv[2]} {info['Digest']} ({len(info['Layers'])} layer)")
PY
  umoci unpack --rootless --image "target/images/$program:$version" "$work/$program" >/dev/null
  rootfs="$work/$program/rootfs"
  if [ "$(id -u)" -eq 0 ]; then
    # A container runtime provides /dev; this check provides /dev/null.
    mkdir -p "$rootfs/dev"
    mknod -m 666 "$rootfs/dev/null" c 1 3 2>/dev/null || touch "$rootfs/dev/null"
    chroot "$rootfs" "/usr/local/bin/$program" --version
    if [ "$program" = kas ]; then
      chroot "$rootfs" /usr/bin/git --version
      chroot "$rootfs" /usr/bin/ssh -V
      # ssh-keygen has no --version: it fingerprints a key made here instead.
      ssh-keygen -q -t ed25519 -N "" -C build-images -f "$work/check-key"
      cp "$work/check-key.pub" "$rootfs/tmp/check-key.pub"
      chroot "$rootfs" /usr/bin/ssh-keygen -l -f /tmp/check-key.pub
      rm "$rootfs/tmp/check-key.pub"
      chroot "$rootfs" /usr/bin/gpg --version | sed -n 1p
      chroot "$rootfs" /usr/local/bin/helm version --short
      chroot "$rootfs" /usr/local/bin/kustomize version
    fi
  else
    "$rootfs/usr/local/bin/$program" --version
  fi
done
du -sh target/images/* | sed 's/^/build-images: /'
