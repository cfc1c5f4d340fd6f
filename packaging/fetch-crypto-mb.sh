#!/usr/bin/env bash
# Intel's multi-buffer library (crypto_mb) for Debian 12, which does not
# package it: Debian 13's libcrypto-mb11, downloaded through apt (so its
# signature is checked against the Debian archive keys) with a private apt
# configuration, and unpacked under PREFIX/lib. Nothing is installed and
# the system's sources are not touched: installing the trixie package would
# upgrade libc. The library needs only GLIBC_2.4 and OPENSSL_3.0.0 symbols,
# which Debian 12 has.
#
#   packaging/fetch-crypto-mb.sh /opt/keyless-crypto-mb
#   # then, in gokeyless.yaml:
#   #   multibuffer_library: /opt/keyless-crypto-mb/lib/libcrypto_mb.so.11
#
# On Debian 13 and Ubuntu 24.04+ install libcrypto-mb11 instead; on Fedora,
# intel-ipp-crypto-mb.
set -euo pipefail
PREFIX=${1:?usage: $0 PREFIX}
SUITE=${SUITE:-trixie}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/unpacked"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
  -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libcrypto-mb11)
dpkg-deb -x "$work"/libcrypto-mb11_*.deb "$work/unpacked"
mkdir -p "$PREFIX/lib"
cp -a "$work"/unpacked/usr/lib/*/libcrypto_mb.so.* "$PREFIX/lib/"
version=$(dpkg-deb -f "$work"/libcrypto-mb11_*.deb Version)
echo "crypto_mb $version ($SUITE) in $PREFIX/lib: $(cd "$PREFIX/lib" && ls libcrypto_mb.so.*)"
