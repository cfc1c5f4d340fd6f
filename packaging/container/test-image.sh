#!/usr/bin/env bash
# CI: build the image from the test build's binaries and check it.
#
# No container registry is reachable from CI machines, so the base is made
# here from Debian's mirror: Debian 13 (what the Containerfile's default
# base, debian:trixie-slim, is built from), imported as a local image.
# Containers cannot run on these machines (crun: "cgroups in hybrid mode
# not supported"; no CAP_SYS_RESOURCE for the container's limits): the
# build's RUN steps and the checks below run in a chroot of the image
# (buildah's chroot isolation), the same files and user a container gets.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${PROFILE:-debug}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
base=localhost/keyless-base:trixie
image=localhost/keyless:ci
work=$(mktemp -d)
ctr=
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1
  buildah rmi -f "$image" "$base" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# The base: Debian 13 with apt (as debian:trixie-slim).
mmdebstrap --quiet --variant=apt trixie "$work/base.tar" "$MIRROR"
podman import --quiet "$work/base.tar" "$base" >/dev/null

BASE=$base PROFILE=$PROFILE packaging/container/build.sh "$image"

ctr=$(buildah from --quiet "$image")
in_image() { buildah run --isolation chroot --user 65532:65532 "$ctr" -- "$@"; }
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || { echo "image user: $user, expected 65532:65532" >&2; exit 1; }
for bin in keyless-server keyless-edge keyless-tool; do
  out=$(in_image "/usr/local/bin/$bin" --version)
  echo "image: $out"
done
in_image sh -c 'ls /usr/lib/x86_64-linux-gnu/libcrypto_mb.so.11' >/dev/null \
  || { echo "image: no crypto_mb" >&2; exit 1; }
# The key server's configuration check, as the pod would run it, on a
# development PKI made in the image's /tmp.
in_image sh -c 'cd /tmp && keyless-tool gen-pki --out pki >/dev/null && keyless-server -c pki/gokeyless.yaml --test-config'
echo "image: $image built and checked ($(buildah inspect --format '{{.FromImage}}' "$ctr"))"
