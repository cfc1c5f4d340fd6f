#!/usr/bin/env bash
# Soak: a bounded mixed load on a key server and an edge in front of it —
# pipelined ECDSA and RSA clients, a closed-loop client, full and resumed
# handshakes through the edge (connects and disconnects), a key-server
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
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$BIN/keyless-server" -c "$PKI/gokeyless.yaml" --listen-host 127.0.0.1 --metrics-port $((PORT + 1)) \
  --workers 2 -l 2 >"$OUT/server.log" 2>&1 &
SERVER=$!; pids+=($SERVER)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null && break; sleep 0.1; done
"$BIN/keyless-edge" -c "$OUT/edge.yaml" -l 2 >"$OUT/edge.log" 2>&1 &
EDGE=$!; pids+=($EDGE)
for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$((PORT + 10))) 2>/dev/null && break; sleep 0.1; done
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
