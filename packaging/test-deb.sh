#!/usr/bin/env bash
# CI: build the package from the test build, install it with dpkg, check
# its files and units, and start the installed server (as user keyless)
# with the installed configuration, then run the conformance suite against
# it. Needs root; removes the package at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(PROFILE=${PROFILE:-debug} COMPRESS=${COMPRESS:-none} packaging/build-deb.sh)
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge keyless >/dev/null 2>&1 || true; rm -rf /etc/keyless/keys; rmdir /etc/keyless 2>/dev/null || true' EXIT
fail() { echo "package test: $*" >&2; exit 1; }
for f in /usr/bin/keyless-server /usr/bin/keyless-edge /usr/bin/keyless-tool /usr/bin/keyless-bench \
         /usr/lib/keyless/libkeyless_pkcs11.so \
         /lib/systemd/system/keyless-server.service /lib/systemd/system/keyless-edge.service \
         /etc/keyless/gokeyless.yaml /etc/keyless/edge.yaml \
         /usr/share/man/man1/keyless-server.1.gz /usr/share/man/man1/keyless-edge.1.gz \
         /usr/share/man/man1/keyless-tool.1.gz /usr/share/man/man1/keyless-bench.1.gz \
         /usr/share/man/man5/edge.yaml.5.gz \
         /usr/share/bash-completion/completions/keyless-server /usr/share/zsh/vendor-completions/_keyless-edge \
         /usr/share/fish/vendor_completions.d/keyless-tool.fish /usr/share/doc/keyless/fetch-crypto-mb.sh; do
  [ -e "$f" ] || fail "$f not installed"
done
zcat /usr/share/man/man1/keyless-server.1.gz | grep -q -- 'keystore\\-debug' || fail "the man page misses --keystore-debug"
getent passwd keyless >/dev/null || fail "no keyless user"
getent passwd keyless-edge >/dev/null || fail "no keyless-edge user"
grep -q '^User=keyless-edge' /lib/systemd/system/keyless-edge.service || fail "the edge unit does not run as keyless-edge"
grep -q '^ExecReload=' /lib/systemd/system/keyless-edge.service || fail "no ExecReload on the edge unit"
[ "$(stat -c '%a %U' /etc/keyless/keys)" = "700 keyless" ] || fail "/etc/keyless/keys is $(stat -c '%a %U' /etc/keyless/keys)"
grep -q '^LimitMEMLOCK=infinity' /lib/systemd/system/keyless-server.service || fail "no LimitMEMLOCK"
grep -q '^User=keyless' /lib/systemd/system/keyless-server.service || fail "unit does not run as keyless"
grep -q '^Restart=on-failure' /lib/systemd/system/keyless-server.service || fail "no restart on failure"
# .ci/run installs systemd for systemd-analyze (nothing runs under it).
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (apt install systemd)"
systemd-analyze verify /lib/systemd/system/keyless-server.service /lib/systemd/system/keyless-edge.service \
  || fail "systemd-analyze verify"

# The walkthrough: certificates and keys where the installed config expects them.
pki=$(mktemp -d)
/usr/bin/keyless-tool gen-pki --out "$pki" >/dev/null
install -o root -g keyless -m 0640 "$pki/server.pem" /etc/keyless/server.pem
install -o root -g keyless -m 0640 "$pki/server-key.pem" /etc/keyless/server-key.pem
install -o root -g keyless -m 0640 "$pki/ca.pem" /etc/keyless/keyless_cacert.pem
install -o keyless -g keyless -m 0600 "$pki"/keys/*.key /etc/keyless/keys/
install -d -o keyless -g keyless /run/keyless
log=$(mktemp)
# As the unit runs it: user keyless, the installed config, LimitMEMLOCK=infinity
# where this machine lets root raise the limit (a container may not: then
# the server must say why it did not lock), and cores allowed by the limit,
# as after `ulimit -c unlimited` (the server itself must refuse them).
if [ "$(ulimit -H -l)" = unlimited ]; then memlock=unlimited; else memlock=$(ulimit -H -l); memlock=$((memlock * 1024)); fi
prlimit --memlock="$memlock" --core=unlimited -- \
  setpriv --reuid=keyless --regid=keyless --init-groups /usr/bin/keyless-server -c /etc/keyless/gokeyless.yaml >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  [ -s /run/keyless/keyless.pid ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "installed server exited"; }
  sleep 0.1
done
/usr/bin/keyless-tool conformance --server 127.0.0.1:2407 --server-name localhost --ca "$pki/ca.pem" \
  --cert "$pki/client.pem" --key "$pki/client-key.pem" --pubkeys "$pki/pubkeys" | tail -1
# The installed PKCS#11 module signs and decrypts with the running server's
# keys (pkcs11-tool --test: RSA signatures checked, decryption round trips).
command -v pkcs11-tool >/dev/null || fail "pkcs11-tool is missing (apt install opensc)"
p11conf=$(mktemp)
printf '%s\n' "key_servers: [\"127.0.0.1:2407\"]" "key_server_name: localhost" "key_server_ca: $pki/ca.pem" \
  "client_cert: $pki/client.pem" "client_key: $pki/client-key.pem" "keys:" \
  "  - certificate: $pki/sites/p256.pem" "  - certificate: $pki/sites/rsa2048.pem" >"$p11conf"
p11out=$(KEYLESS_PKCS11_CONFIG=$p11conf pkcs11-tool --module /usr/lib/keyless/libkeyless_pkcs11.so --test 2>&1) \
  || { echo "$p11out" >&2; fail "pkcs11-tool --test with the installed module"; }
echo "$p11out" | grep -q "No errors" || { echo "$p11out" >&2; fail "pkcs11-tool --test found errors"; }
rm -f "$p11conf"
if [ "$memlock" = unlimited ]; then
  grep -q "memory locked (mlockall)" "$log" || { cat "$log" >&2; fail "the installed server did not lock its memory"; }
else
  grep -q "memory not locked: RLIMIT_MEMLOCK is $((memlock / 1024)) KiB and the process lacks CAP_IPC_LOCK" "$log" \
    || { cat "$log" >&2; fail "the installed server did not say why its memory is not locked"; }
fi
grep -q "^Max core file size *0 *0 " "/proc/$pid/limits" || fail "the installed server allows core files"
# The sandbox, as the keyless user gets it: Landlock and seccomp on every
# thread (no_new_privs set, three filters), and said at start.
grep -q "sandbox: landlock enforced" "$log" || { cat "$log" >&2; fail "the installed server did not enforce Landlock"; }
grep -q "seccomp on every thread" "$log" || { cat "$log" >&2; fail "the installed server did not apply its seccomp filter"; }
grep -q "^Seccomp:[[:space:]]*2" "/proc/$pid/status" || fail "the installed server runs without a seccomp filter"
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$pid/status" || fail "the installed server may gain privileges"
kill -TERM "$pid"; wait "$pid" || fail "installed server did not exit 0 on SIGTERM"
# Without -c the edge reads the installed configuration (as nginx reads
# /etc/nginx/nginx.conf); -t checks it and names it.
out=$(/usr/bin/keyless-edge -t 2>&1 || true)
echo "$out" | grep -q "keyless-edge: /etc/keyless/edge.yaml" || fail "keyless-edge without -c did not read /etc/keyless/edge.yaml: $out"
for bin in keyless-server keyless-edge keyless-tool keyless-bench; do
  for flag in -v -V; do
    "/usr/bin/$bin" "$flag" | grep -q "^$bin .* (commit " || fail "$bin $flag does not print version and commit"
  done
done
# The edge's user cannot read the keys; the key server's can.
key=$(ls /etc/keyless/keys/*.key | head -1)
setpriv --reuid=keyless --regid=keyless --init-groups cat "$key" >/dev/null || fail "the key server cannot read $key"
if setpriv --reuid=keyless-edge --regid=keyless-edge --init-groups cat "$key" >/dev/null 2>&1; then
  fail "the edge's user can read $key"
fi
# Purging the package keeps the operator's keys, and says where they are.
purge=$(dpkg --purge keyless 2>&1)
echo "$purge" | grep -q "kept in /etc/keyless/keys" || fail "purge did not say where the keys are: $purge"
[ -f "$key" ] || fail "purge deleted $key"
rm -rf "$pki" "$log" /etc/keyless/server.pem /etc/keyless/server-key.pem /etc/keyless/keyless_cacert.pem
echo "package test: ok ($deb)"
