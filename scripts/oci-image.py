#!/usr/bin/env python3
"""Writes an OCI image layout for one of Tether's programs, without a
container daemon: one layer holding the program (a static binary), the
files it needs at run time (CA certificates, a passwd entry for the
non-root user; for kas, git and ssh, and ssh-keygen and gpg that git
verifies commit and tag signatures with, with their shared libraries,
copied from this Debian machine), and a config that runs it as 65532:65532.

The layer is reproducible: entries sorted, times zero, owners root (the
data folder excepted), gzip without a timestamp.

Usage: oci-image.py --name kas --version 0.1.0 --binary PATH --out DIR
                    [--with-git] [--tool PATH]...

--tool adds a static program beside the main one (kas renders charts and
kustomizations with helm and kustomize).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

NONROOT = 65532
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"


def shared_libraries(program):
    """The shared libraries `program` loads, and the loader, by ldd."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def git_files():
    """git (with https and ssh transports), the programs `git verify-commit`
    and `git verify-tag` run (ssh-keygen for SSH signatures, gpg for OpenPGP
    ones), and what they load."""
    programs = ["/usr/bin/git", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/gpg"]
    core = "/usr/lib/git-core"
    for name in ["git", "git-remote-http", "git-remote-https", "git-upload-pack"]:
        path = os.path.join(core, name)
        if os.path.exists(path):
            programs.append(path)
    files = set(programs)
    for program in programs:
        files.update(shared_libraries(program))
    return sorted(files)


class Layer:
    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, kind, mode, uid=0):
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type = kind
        info.mode = mode
        info.uid = info.gid = uid
        info.mtime = 0
        info.uname = info.gname = ""
        return info

    def directory(self, path, mode=0o755, uid=0):
        path = path.rstrip("/")
        if not path or path in self.dirs:
            return
        self.directory(os.path.dirname(path))
        self.dirs.add(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode, uid))

    def file(self, path, data, mode=0o644):
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def copy(self, source, path=None):
        # Symlinks are followed: the image holds the file under each name.
        with open(source, "rb") as f:
            data = f.read()
        mode = os.stat(source).st_mode & 0o777
        self.file(path or source, data, mode)

    def finish(self):
        self.tar.close()
        return self.buffer.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--with-git", action="store_true")
    parser.add_argument("--tool", action="append", default=[])
    args = parser.parse_args()

    entries = []
    layer = Layer()
    program = f"/usr/local/bin/{args.name}"
    layer.copy(args.binary, program)
    entries.append(program)
    for tool in args.tool:
        layer.copy(os.path.realpath(tool), "/usr/local/bin/" + os.path.basename(tool))
    for path in ["/etc/ssl/certs/ca-certificates.crt"]:
        layer.copy(path)
    layer.file(
        "/etc/passwd",
        f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n".encode(),
    )
    layer.file("/etc/group", f"root:x:0:\nnonroot:x:{NONROOT}:\n".encode())
    layer.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.directory("/home/nonroot", 0o700, NONROOT)
    layer.directory("/tmp", 0o1777)
    if args.with_git:
        for path in git_files():
            layer.copy(path)
        entries.append("/usr/bin/git")
        layer.directory("/var/lib/kas", 0o700, NONROOT)
    tar = layer.finish()
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    compressed = gzip.compress(tar, mtime=0)

    out = args.out
    os.makedirs(out, exist_ok=True)
    layer_digest, layer_size = blob(out, compressed)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{NONROOT}:{NONROOT}",
            "Entrypoint": [program],
            "Env": [PATH_ENV, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "HOME=/home/nonroot"],
            "WorkingDir": "/home/nonroot",
            "Labels": {
                "org.opencontainers.image.title": args.name,
                "org.opencontainers.image.version": args.version,
                "org.opencontainers.image.description": "Tether " + args.name,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "scripts/oci-image.py " + args.name}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest, config_size = blob(out, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest, manifest_size = blob(out, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": args.version},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{args.name}:{args.version}: {manifest_digest}, layer {layer_size / 1e6:.1f} MB compressed")


if __name__ == "__main__":
    sys.exit(main())
