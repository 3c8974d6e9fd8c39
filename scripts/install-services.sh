#!/usr/bin/env bash
# Installs the services the tests run for real, from Debian's packages:
# PostgreSQL (the replicated kas's store), HAProxy (the load balancer in
# front of kas replicas), skopeo and umoci (to check the OCI images),
# musl-tools and file (to build and check the static binaries in them),
# Chromium and its WebDriver (the web UI's browser tests), gpg and
# ssh-keygen (gnupg, openssh-client: they sign the commits of the
# signed-commit tests, and git verifies them with them). A no-op when
# they are there.
# Needs root (apt-get) only when something is missing.
set -euo pipefail

missing=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# git: the tests make repositories with it, and kas clones remote bases with it.
for tool in git haproxy skopeo umoci file; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    missing+=("$tool")
  fi
done
if ! command -v musl-gcc >/dev/null 2>&1; then
  missing+=(musl-tools)
fi
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v chromedriver >/dev/null 2>&1; then
  missing+=(chromium-driver)
fi
if ! command -v gpg >/dev/null 2>&1; then
  missing+=(gnupg)
fi
if ! command -v ssh-keygen >/dev/null 2>&1; then
  missing+=(openssh-client)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-services: up to date"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-services: ${missing[*]} missing; run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "install-services: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package would start a cluster of its own where it can; the tests
# start theirs, on free ports.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-services: installed ${missing[*]}"
