#!/usr/bin/env bash
# Soak: a bounded mixed load on a key server and an edge in front of it —
# pipelined ECDSA and RSA clients, a closed-loop client, full and resumed
# handshakes through the edge (connects and disconnects), pages fetched
# through a second edge that proxies to an HTTP/1.1 upstream, a key-server
# reload (SIGHUP) and a ticket-key rotation every RELOAD seconds. Passes
# with zero errors and bad signatures, and each process's resident memory
# at the end within 5% of its value once warm (after the first minute, or
# the first third of a shorter run), or within SLACK_KIB of it (default 0):
# a one-minute debug run starts from ~40 MB and its allocator is still
# warming up by a few MB, which is not a leak.
#
#   perf/soak.sh                                   # 10 minutes, release build
#   PROFILE=debug DURATION=60 RELOAD=20 perf/soak.sh   # CI: one minute
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
DURATION=${DURATION:-600}
RELOAD=${RELOAD:-60}
PORT=${PORT:-24390}
OUT=${OUT:-target/soak}
BIN=target/$PROFILE
WARM=$(( DURATION / 3 < 60 ? DURATION / 3 : 60 ))
mkdir -p "$OUT"
if [ "$PROFILE" = release ]; then
  cargo build --release --bin keyless-server --bin keyless-edge --bin keyless-bench --bin keyless-tool >/dev/null 2>&1
fi
PKI="$OUT/pki"
rm -rf "$PKI"
"$BIN/keyless-tool" gen-pki --out "$PKI" --port "$PORT" >/dev/null
"$BIN/keyless-tool" ticket-keys --file "$OUT/tickets.json" >/dev/null
cat >"$OUT/edge.yaml" <<YAML
listen: 127.0.0.1:$((PORT + 10))
workers: 1
certificates:
  - cert: $PKI/sites/p256.pem
key_servers: ["127.0.0.1:$PORT"]
key_server_name: localhost
key_server_ca: $PKI/ca.pem
client_cert: $PKI/client.pem
client_key: $PKI/client-key.pem
tickets:
  key_file: $OUT/tickets.json
YAML
# A second edge proxies to an HTTP/1.1 upstream (python's http.server, as
# an operator replacing hitch would try it): pages fetched through it over
# new TLS connections, every byte compared.
mkdir -p "$OUT/www"
head -c 65536 /dev/urandom >"$OUT/www/page.bin"
echo "hello through the edge" >"$OUT/www/small.txt"
sed -e "s/^listen: .*/listen: 127.0.0.1:$((PORT + 20))/" "$OUT/edge.yaml" >"$OUT/edge-proxy.yaml"
echo "upstream: 127.0.0.1:$((PORT + 30))" >>"$OUT/edge-proxy.yaml"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$BIN/keyless-server" -c "$PKI/gokeyless.yaml" --listen-host 127.0.0.1 --metrics-port $((PORT + 1)) \
  --workers 2 -l 2 >"$OUT/server.log" 2>&1 &
SERVER=$!; pids+=($SERVER)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null && break; sleep 0.1; done
"$BIN/keyless-edge" -c "$OUT/edge.yaml" -l 2 >"$OUT/edge.log" 2>&1 &
EDGE=$!; pids+=($EDGE)
python3 -m http.server --bind 127.0.0.1 --directory "$OUT/www" $((PORT + 30)) >"$OUT/upstream.log" 2>&1 &
pids+=($!)
"$BIN/keyless-edge" -c "$OUT/edge-proxy.yaml" -l 2 >"$OUT/edge-proxy.log" 2>&1 &
PROXY_EDGE=$!; pids+=($PROXY_EDGE)
for port in $((PORT + 10)) $((PORT + 20)) $((PORT + 30)); do
  for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
sleep 1
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

common=(--server 127.0.0.1:$PORT --ca "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem"
        --duration "$DURATION" --warmup 0 --verify-every 10 --json)
"$BIN/keyless-bench" run "${common[@]}" --pubkey "$PKI/pubkeys/p256.pem" --connections 4 --in-flight 32 >"$OUT/ecdsa.json" &
loads=($!)
"$BIN/keyless-bench" run "${common[@]}" --pubkey "$PKI/pubkeys/rsa2048.pem" --connections 2 --in-flight 8 >"$OUT/rsa.json" &
loads+=($!)
"$BIN/keyless-bench" run "${common[@]}" --pubkey "$PKI/pubkeys/p256.pem" --connections 2 --in-flight 1 >"$OUT/closed.json" &
loads+=($!)
hs=(--server 127.0.0.1:$((PORT + 10)) --ca "$PKI/ca.pem" --duration "$DURATION" --warmup 0 --threads 1 --json)
"$BIN/keyless-bench" handshake "${hs[@]}" --mode full --tls 1.3 --concurrency 4 >"$OUT/full.json" &
loads+=($!)
"$BIN/keyless-bench" handshake "${hs[@]}" --mode resumed --tls 1.2 --concurrency 2 >"$OUT/resumed.json" &
loads+=($!)
python3 - "$((PORT + 20))" "$PKI/ca.pem" "$OUT/www" "$DURATION" >"$OUT/proxied.json" <<'PY' &
import http.client, json, ssl, sys, threading, time
port, ca, www, duration = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
pages = {p: open(f"{www}/{p}", "rb").read() for p in ("page.bin", "small.txt")}
ctx = ssl.create_default_context(cafile=ca)
counts = {"requests": 0, "errors": 0}
lock = threading.Lock()
def run():
    end, i = time.time() + duration, 0
    while time.time() < end:
        name = ("page.bin", "small.txt")[i % 2]; i += 1
        ok = False
        try:
            c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
            c.request("GET", "/" + name)
            r = c.getresponse()
            ok = r.status == 200 and r.read() == pages[name]
            c.close()
        except Exception as e:
            print(f"proxied request failed: {e!r}", file=sys.stderr)
        with lock:
            counts["requests"] += 1
            counts["errors"] += 0 if ok else 1
threads = [threading.Thread(target=run) for _ in range(2)]
started = time.time()
for t in threads: t.start()
for t in threads: t.join()
counts["per_sec"] = counts["requests"] / (time.time() - started)
print(json.dumps(counts))
PY
loads+=($!)

start=$(date +%s)
warm_server= warm_edge=
reloads=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  sleep 1
  elapsed=$(( $(date +%s) - start ))
  if [ -z "$warm_server" ] && [ "$elapsed" -ge "$WARM" ]; then
    warm_server=$(rss $SERVER); warm_edge=$(rss $EDGE)
  fi
  if [ $(( elapsed % RELOAD )) -eq 0 ] && [ "$elapsed" -lt "$DURATION" ]; then
    kill -HUP $SERVER
    "$BIN/keyless-tool" ticket-keys --file "$OUT/tickets.json" --rotate >/dev/null
    reloads=$((reloads + 1))
  fi
done
end_server=$(rss $SERVER); end_edge=$(rss $EDGE)
status=0
for p in "${loads[@]}"; do wait "$p" || status=1; done
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[2])); print(eval(sys.argv[1], {}, d))" "$1" "$2"; }
errors=0
for f in ecdsa rsa closed; do
  n=$(field "sum(errors.values()) + verify_failures" "$OUT/$f.json"); errors=$((errors + n))
  printf "%-8s %10.0f ops/s  errors+bad signatures: %s\n" "$f" "$(field ops_per_sec "$OUT/$f.json")" "$n"
done
n=$(field errors "$OUT/proxied.json"); errors=$((errors + n))
printf "%-8s %10.0f requests/s through the proxy (%s in all, bytes compared)  errors: %s\n" proxied \
  "$(field per_sec "$OUT/proxied.json")" "$(field requests "$OUT/proxied.json")" "$n"
for f in full resumed; do
  n=$(field failures "$OUT/$f.json"); errors=$((errors + n))
  printf "%-8s %10.0f handshakes/s (%s resumed)  failures: %s\n" "$f" "$(field handshakes_per_sec "$OUT/$f.json")" \
    "$(field resumed "$OUT/$f.json")" "$n"
done
SLACK_KIB=${SLACK_KIB:-0}
sg=$(python3 -c "print(f'{($end_server - $warm_server) * 100 / $warm_server:+.1f}')")
eg=$(python3 -c "print(f'{($end_edge - $warm_edge) * 100 / $warm_edge:+.1f}')")
echo "reloads: $reloads; RSS key server ${warm_server} -> ${end_server} KiB (${sg}%), edge ${warm_edge} -> ${end_edge} KiB (${eg}%)"
python3 -c "import sys; ok = lambda a, b, pct: pct <= 5 or b - a <= $SLACK_KIB; \
sys.exit(0 if ok($warm_server, $end_server, $sg) and ok($warm_edge, $end_edge, $eg) else 1)" \
  || { echo "soak: memory grew more than 5% (and more than $SLACK_KIB KiB)"; status=1; }
[ "$errors" -eq 0 ] || { echo "soak: $errors unexpected errors"; status=1; }
[ "$status" -eq 0 ] && echo "soak: ok"
exit $status
