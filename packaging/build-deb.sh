#!/usr/bin/env bash
# Build the Debian package from already-built binaries.
#
#   cargo build --release --workspace && packaging/build-deb.sh             # target/debian/keyless_<version>_amd64.deb
#   PROFILE=debug COMPRESS=none packaging/build-deb.sh                   # CI: the test build, fast
#
# Layout as gokeyless's package: binaries in /usr/bin, /etc/keyless with the
# configuration (a conffile) and keys/ (0700, user keyless), systemd units.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
COMPRESS=${COMPRESS:-xz}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
ROOT=target/debian/root
OUT=target/debian/keyless_${VERSION}_${ARCH}.deb
rm -rf "$ROOT"
install -d "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/keyless" \
  "$ROOT/usr/share/doc/keyless"
for bin in keyless-server keyless-edge keyless-tool keyless-bench; do
  [ -x "target/$PROFILE/$bin" ] || { echo "target/$PROFILE/$bin missing: build it first" >&2; exit 1; }
  install -m 0755 "target/$PROFILE/$bin" "$ROOT/usr/bin/$bin"
done
# The PKCS#11 module (docs/pkcs11.md), where MODULE_PATH and p11-kit point.
[ -f "target/$PROFILE/libkeyless_pkcs11.so" ] || { echo "target/$PROFILE/libkeyless_pkcs11.so missing: build it first" >&2; exit 1; }
install -d "$ROOT/usr/lib/keyless"
install -m 0644 "target/$PROFILE/libkeyless_pkcs11.so" "$ROOT/usr/lib/keyless/libkeyless_pkcs11.so"
install -m 0644 packaging/debian/keyless-server.service packaging/debian/keyless-edge.service "$ROOT/lib/systemd/system/"
install -m 0640 packaging/debian/gokeyless.yaml "$ROOT/etc/keyless/gokeyless.yaml"
install -m 0640 packaging/debian/edge.yaml "$ROOT/etc/keyless/edge.yaml"
install -m 0644 README.md "$ROOT/usr/share/doc/keyless/README.md"
install -m 0644 docs/*.md "$ROOT/usr/share/doc/keyless/"
# crypto_mb for Debian 12, which does not package it (docs/operating.md).
install -m 0755 packaging/fetch-crypto-mb.sh "$ROOT/usr/share/doc/keyless/fetch-crypto-mb.sh"
# Manual pages and shell completions, from the binaries' own definitions.
gen=$(mktemp -d)
"target/$PROFILE/keyless-tool" man --out "$gen" >/dev/null
install -d "$ROOT/usr/share/man/man1" "$ROOT/usr/share/bash-completion/completions" \
  "$ROOT/usr/share/zsh/vendor-completions" "$ROOT/usr/share/fish/vendor_completions.d"
for page in "$gen"/man1/*.1; do gzip -9n <"$page" >"$ROOT/usr/share/man/man1/$(basename "$page").gz"; done
install -d "$ROOT/usr/share/man/man5"
gzip -9n <"$gen/man5/edge.yaml.5" >"$ROOT/usr/share/man/man5/edge.yaml.5.gz"
for f in "$gen"/completions/bash/*.bash; do
  install -m 0644 "$f" "$ROOT/usr/share/bash-completion/completions/$(basename "$f" .bash)"
done
install -m 0644 "$gen"/completions/zsh/_* "$ROOT/usr/share/zsh/vendor-completions/"
install -m 0644 "$gen"/completions/fish/*.fish "$ROOT/usr/share/fish/vendor_completions.d/"
rm -rf "$gen"
install -m 0755 packaging/debian/postinst packaging/debian/postrm packaging/debian/prerm "$ROOT/DEBIAN/"
printf "%s\n" /etc/keyless/gokeyless.yaml /etc/keyless/edge.yaml >"$ROOT/DEBIAN/conffiles"
cat >"$ROOT/DEBIAN/control" <<CONTROL
Package: keyless
Version: $VERSION
Architecture: $ARCH
Maintainer: keyless developers <keyless@localhost>
Depends: adduser, libc6
Conflicts: gokeyless
Replaces: gokeyless
Provides: gokeyless
Recommends: openssl, libcrypto-mb11
Suggests: softhsm2
Section: net
Priority: optional
Description: Keyless SSL key server and edge (gokeyless-compatible)
 keyless-server answers gokeyless's binary protocol over mutual TLS with
 keys in files or in a PKCS#11 HSM; keyless-edge terminates TLS with keys
 that stay on key servers. Thread-per-core (io_uring).
CONTROL
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$ROOT" "$OUT" >/dev/null
echo "$OUT"
