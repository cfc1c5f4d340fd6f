#!/usr/bin/env bash
# Build the keyless image from binaries already built.
#
#   packaging/container/build.sh [IMAGE]        (default localhost/keyless:dev)
#
# PROFILE (release or debug; default release) picks target/PROFILE. BASE
# overrides the Containerfile's base image. With buildah, RUN steps use
# chroot isolation (ISOLATION=oci for an OCI runtime), which needs no
# cgroup setup of the host: it builds where containers cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${1:-localhost/keyless:dev}
profile=${PROFILE:-release}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
for bin in keyless-server keyless-edge keyless-tool; do
  [ -x "target/$profile/$bin" ] || { echo "target/$profile/$bin: not built (cargo build --${profile/debug/dev} --bins)" >&2; exit 1; }
  cp "target/$profile/$bin" "$context/"
done
args=(-f packaging/container/Containerfile -t "$image")
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
if command -v buildah >/dev/null; then
  buildah build --isolation "${ISOLATION:-chroot}" --network host "${args[@]}" "$context"
else
  podman build --network host "${args[@]}" "$context"
fi
