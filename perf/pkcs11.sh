#!/usr/bin/env bash
# The PKCS#11 module's figures, each a ratio of two measurements made in
# this run against the same one-core key server (cpu 0):
#  1. signatures/s through C_Sign from 1, 8 and 64 application threads (one
#     session each, back to back: `keyless-bench hsm-ceiling` with the
#     module) against `keyless-bench run` on the same server with as many
#     requests outstanding on as many links (2, the module's default);
#  2. nginx (one worker, cpu 1) full TLS 1.3 ECDSA P-256 handshakes/s with
#     its key in the module against the same nginx with the key in a file;
#  3. the blocking cost: resumed handshakes (no signature) on that worker,
#     one at a time, while full ones run beside them: their latency with
#     the key in the module against the key in a file.
#
#   perf/pkcs11.sh            # about 2 minutes
#   DURATION=3 perf/pkcs11.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
PORT=${PORT:-24390}
OUT=${OUT:-target/perf-pkcs11}
THREADS=${THREADS:-"1 8 64"}
PARTS=${PARTS:-"sign nginx"}
source perf/common.sh
cargo build --release -p keyless-pkcs11 --lib >/dev/null 2>&1
MODULE=$PWD/$BIN/libkeyless_pkcs11.so
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
ratio() { python3 -c "print(f'{$1*100/$2:.1f}%')"; }

start_server 0 1 "$OUT/server.log"
conf=$PWD/$OUT/pkcs11.yaml
cat >"$conf" <<YAML
key_servers: ["127.0.0.1:$PORT"]
key_server_name: localhost
key_server_ca: $PWD/$PKI/ca.pem
client_cert: $PWD/$PKI/client.pem
client_key: $PWD/$PKI/client-key.pem
keys:
  - certificate: $PWD/$PKI/sites/p256.pem
    label: p256
  - certificate: $PWD/$PKI/sites/rsa2048.pem
    label: rsa2048
YAML
chmod 600 "$conf"
export KEYLESS_PKCS11_CONFIG=$conf
uri() { echo "pkcs11:token=keyless;object=$1?module-path=$MODULE&pin-value=none"; }

if [[ " $PARTS " == *" sign "* ]]; then
echo "# the PKCS#11 module vs keyless-bench, one key-server core, same run ($(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf "%-8s %-8s %12s %14s %8s\n" key threads "C_Sign/s" "bench ops/s" ratio
for key in p256 rsa2048; do
  op=$([ "$key" = p256 ] && echo ecdsa-sha256 || echo rsa-pkcs1-sha256)
  for threads in $THREADS; do
    # As many requests outstanding as threads, on as many links as the module's (2).
    connections=$((threads < 2 ? threads : 2))
    in_flight=$((threads / connections))
    bench=$(taskset -c 1 "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --server-name localhost --ca "$PKI/ca.pem" \
      --cert "$PKI/client.pem" --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/$key.pem" --op "$op" \
      --connections "$connections" --in-flight "$in_flight" --duration "$DURATION" --warmup "$WARMUP" --json | field ops_per_sec)
    module=$(taskset -c 1 "$BIN/keyless-bench" hsm-ceiling --uri "$(uri "$key")" --op "$op" --sessions "$threads" \
      --duration "$DURATION" --json | field ops_per_sec)
    printf "%-8s %-8s %12.0f %14.0f %8s\n" "$key" "$threads" "$module" "$bench" "$(ratio "$module" "$bench")"
  done
done
fi
[[ " $PARTS " == *" nginx "* ]] || exit 0

# nginx: one worker on cpu 1, the key in the module (port N) or in a file (port N+1).
NGINX=$PWD/$OUT/nginx
rm -rf "$NGINX"; mkdir -p "$NGINX"
cat >"$NGINX/openssl.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
MODULE_PATH = $MODULE
init = 0
CNF
NPORT=$((PORT + 20))
server_block() { # port key
  printf '  server {\n    listen 127.0.0.1:%s ssl;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_certificate %s;\n    ssl_certificate_key "%s";\n    ssl_session_cache shared:S%s:10m;\n    location / { return 200 "ok\\n"; }\n  }\n' \
    "$1" "$PWD/$PKI/sites/p256.pem" "$2" "$1"
}
{
  printf 'daemon off;\nmaster_process on;\nworker_processes 1;\nworker_cpu_affinity 10;\nerror_log %s/error.log;\npid %s/nginx.pid;\n' "$NGINX" "$NGINX"
  printf 'env KEYLESS_PKCS11_CONFIG;\nssl_engine pkcs11;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n'
  for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/%s;\n' "$t" "$NGINX" "$t"; done
  server_block "$NPORT" "engine:pkcs11:pkcs11:object=p256;type=private"
  server_block "$((NPORT + 1))" "$PWD/$PKI/keys/p256.key"
  printf '}\n'
} >"$NGINX/nginx.conf"
OPENSSL_CONF=$NGINX/openssl.cnf nginx -p "$NGINX" -c "$NGINX/nginx.conf" >"$NGINX/stdout.log" 2>&1 &
NGINX_PID=$!
trap 'kill -TERM $NGINX_PID 2>/dev/null; wait $NGINX_PID 2>/dev/null; stop_server' EXIT
for _ in $(seq 100); do curl -sk "https://127.0.0.1:$((NPORT + 1))/" >/dev/null 2>&1 && break; sleep 0.1; done

# The load generator shares cpu 1 with nginx (the same for both keys), so
# the key server has cpu 0 to itself, as a key server on its own machine
# would: what differs between the two is only where the key is.
handshakes() { # port mode concurrency duration
  taskset -c 1 "$BIN/keyless-bench" handshake --server 127.0.0.1:"$1" --server-name localhost --ca "$PKI/ca.pem" \
    --mode "$2" --tls 1.3 --concurrency "$3" --duration "$4" --warmup "$WARMUP" --threads 1 --json
}
echo
echo "# nginx 1.22, one worker (cpu 1): full TLS 1.3 ECDSA P-256 handshakes, key in the module vs in a file, same run"
printf "%-8s %14s %14s %8s\n" clients "module hs/s" "file hs/s" ratio
for c in 16 64; do
  m=$(handshakes "$NPORT" full "$c" "$DURATION" | field handshakes_per_sec)
  f=$(handshakes "$((NPORT + 1))" full "$c" "$DURATION" | field handshakes_per_sec)
  printf "%-8s %14.0f %14.0f %8s\n" "$c" "$m" "$f" "$(ratio "$m" "$f")"
done

echo
echo "# the blocking cost: resumed handshakes (1 client) beside 16 clients of full ones, same worker"
printf "%-8s %10s %10s %10s\n" key "p50 us" "p99 us" "full hs/s"
for port in "$NPORT" "$((NPORT + 1))"; do
  name=$([ "$port" = "$NPORT" ] && echo module || echo file)
  handshakes "$port" full 16 "$((DURATION + 2))" >"$OUT/full-$name.json" &
  full=$!
  sleep 1
  resumed=$(handshakes "$port" resumed 1 "$DURATION")
  wait "$full"
  printf "%-8s %10.0f %10.0f %10.0f\n" "$name" "$(echo "$resumed" | field "latency['p50_us']")" \
    "$(echo "$resumed" | field "latency['p99_us']")" "$(field handshakes_per_sec <"$OUT/full-$name.json")"
done
echo "kdamond CPU so far: $(kdamond_ms) ms"
