#!/usr/bin/env bash
# The edge's figures in one run, each a ratio of two measurements made here:
#  1. CPU per full TLS 1.3 ECDSA P-256 handshake: edge + key server (the
#     signature remote) against the same edge holding the key in-process
#     (plain rustls signing, no key server), same client load;
#  2. resumed TLS 1.2 handshakes/s against full ones;
#  3. full handshakes/s at 256 concurrent clients with 5 ms added each way
#     between edge and key server, against the same without the delay.
#
#   perf/edge.sh            # about 3 minutes
#   DURATION=4 perf/edge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
PORT=${PORT:-24290}
OUT=${OUT:-target/perf-edge}
source perf/common.sh
EDGE_PORT=$((PORT + 10))
cargo build --release --bin keyless-edge >/dev/null 2>&1
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

edge_config() { # $1 = key server address, $2 = local key (or empty)
  cat <<YAML
listen: 127.0.0.1:$EDGE_PORT
workers: 1
handshake_threads: 512
certificates:
  - cert: $PKI/sites/${CERT:-p256}.pem
    default: true
$( [ -n "$2" ] && echo "    local_key: $2" )
key_servers: ["$1"]
key_server_name: localhost
key_server_ca: $PKI/ca.pem
client_cert: $PKI/client.pem
client_key: $PKI/client-key.pem
YAML
}
EDGE_PID=
start_edge() { # $1 = config file
  "$BIN/keyless-edge" -c "$1" -l 2 >"$OUT/edge.log" 2>&1 &
  EDGE_PID=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$EDGE_PORT) 2>/dev/null && break; sleep 0.1; done
  sleep 0.5 # key server connections
}
stop_edge() { kill "$EDGE_PID" 2>/dev/null || true; wait "$EDGE_PID" 2>/dev/null || true; }
trap 'stop_edge; stop_server; [ -n "${PROXY_PID:-}" ] && kill $PROXY_PID 2>/dev/null; true' EXIT
hs() { # handshake load; rest = args
  "$BIN/keyless-bench" handshake --server 127.0.0.1:$EDGE_PORT --ca "$PKI/ca.pem" --duration "$DURATION" \
    --warmup "$WARMUP" --json "$@"
}

echo "# keyless-edge figures, same machine, same run ($(date -u +%FT%TZ))"
start_server 0,1 1 "$OUT/server.log"

# 1. CPU per full handshake: the edge holding the key, then the edge with
#    the key on the key server, alternating for ROUNDS rounds (the median
#    ratio is the figure: one configuration moves ~15% between runs here);
#    then once in threads mode.
edge_config "127.0.0.1:$PORT" "$PKI/keys/p256.key" >"$OUT/edge-local.yaml"
edge_config "127.0.0.1:$PORT" "" >"$OUT/edge-remote.yaml"
{ edge_config "127.0.0.1:$PORT" ""; echo "handshake_mode: threads"; } >"$OUT/edge-threads.yaml"
ROUNDS=${ROUNDS:-3}
ratios=()
for round in $(seq "$ROUNDS") threads; do
  start_edge "$OUT/edge-local.yaml"
  a=$(cpu_ticks $EDGE_PID); json=$(hs --mode full --tls 1.3 --concurrency 16); b=$(cpu_ticks $EDGE_PID)
  local_n=$(echo "$json" | field handshakes); local_rate=$(echo "$json" | field handshakes_per_sec)
  stop_edge
  mode=$([ "$round" = threads ] && echo threads || echo remote)
  start_edge "$OUT/edge-$mode.yaml"
  c=$(cpu_ticks $EDGE_PID); k0=$(cpu_ticks $SERVER_PID); json=$(hs --mode full --tls 1.3 --concurrency 16)
  d=$(cpu_ticks $EDGE_PID); k1=$(cpu_ticks $SERVER_PID)
  remote_n=$(echo "$json" | field handshakes); rate=$(echo "$json" | field handshakes_per_sec)
  label=$([ "$mode" = remote ] && echo "coroutines, round $round" || echo threads)
  line=$(python3 - "$a" "$b" "$local_n" "$c" "$d" "$k0" "$k1" "$remote_n" "$(getconf CLK_TCK)" "$label" "$local_rate" "$rate" <<'PY'
import sys
a, b, ln, c, d, k0, k1, rn, hz = map(float, sys.argv[1:10])
label, lr, rr = sys.argv[10], float(sys.argv[11]), float(sys.argv[12])
local = (b - a) / hz / ln * 1e6
edge = (d - c) / hz / rn * 1e6
ks = (k1 - k0) / hz / rn * 1e6
print(f"CPU per full TLS 1.3 P-256 handshake ({label}): in-process rustls {local:.0f} us ({lr:.0f}/s); "
      f"edge {edge:.0f} us + key server {ks:.0f} us = {edge + ks:.0f} us ({rr:.0f}/s) -> {(edge + ks) / local:.2f}x")
PY
)
  echo "$line"
  [ "$mode" = remote ] && ratios+=("${line##*-> }")
  stop_edge
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = [float(x.rstrip("x")) for x in sys.argv[1:]]
print(f"CPU per full handshake, edge + key server vs in-process: median {statistics.median(r):.2f}x "
      f"over {len(r)} alternating rounds (min {min(r):.2f}x, max {max(r):.2f}x)")
PY
start_edge "$OUT/edge-remote.yaml"

# 2. Resumed vs full, TLS 1.2: the P-256 certificate (remote edge still
#    running), then an RSA-2048 one.
resumed_vs_full() { # $1 = certificate name
f0=$(cpu_ticks $EDGE_PID); full=$(hs --mode full --tls 1.2 --concurrency 16); f1=$(cpu_ticks $EDGE_PID)
r0=$(cpu_ticks $EDGE_PID); resumed=$(hs --mode resumed --tls 1.2 --concurrency 16); r1=$(cpu_ticks $EDGE_PID)
python3 - "$(echo "$full" | field handshakes_per_sec)" "$(echo "$resumed" | field handshakes_per_sec)" \
  "$(echo "$resumed" | field 'resumed/max(handshakes,1)')" "$f0" "$f1" "$(echo "$full" | field handshakes)" \
  "$r0" "$r1" "$(echo "$resumed" | field handshakes)" "$(getconf CLK_TCK)" "$1" <<'PY'
import sys
full, resumed, share, f0, f1, fn, r0, r1, rn, hz = map(float, sys.argv[1:11])
cert = sys.argv[11]
fc = (f1 - f0) / hz / fn * 1e6
rc = (r1 - r0) / hz / rn * 1e6
print(f"TLS 1.2 {cert}: full {full:.0f}/s, resumed {resumed:.0f}/s ({share*100:.0f}% resumed) -> {resumed / full:.1f}x; "
      f"edge CPU per handshake: full {fc:.0f} us, resumed {rc:.0f} us -> {fc / rc:.1f}x")
PY
}
resumed_vs_full p256
near=$(hs --mode full --tls 1.3 --concurrency 256 | field handshakes_per_sec)
stop_edge
CERT=rsa2048 edge_config "127.0.0.1:$PORT" "" >"$OUT/edge-rsa.yaml"
start_edge "$OUT/edge-rsa.yaml"
resumed_vs_full rsa2048
stop_edge

# 3. The key server 5 ms away (each way), 256 concurrent clients.
"$BIN/keyless-bench" delay-proxy --listen 127.0.0.1:$((PORT + 20)) --to 127.0.0.1:$PORT --delay-ms 5 &
PROXY_PID=$!
edge_config "127.0.0.1:$((PORT + 20))" "" >"$OUT/edge-far.yaml"
start_edge "$OUT/edge-far.yaml"
far_json=$(hs --mode full --tls 1.3 --concurrency 256)
far=$(echo "$far_json" | field handshakes_per_sec)
python3 - "$near" "$far" "$(echo "$far_json" | field "latency['p50_us']")" <<'PY'
import sys
near, far, p50 = map(float, sys.argv[1:])
print(f"256 clients, full TLS 1.3: key server near {near:.0f}/s, 5 ms away {far:.0f}/s (p50 {p50/1000:.1f} ms) -> {far / near * 100:.0f}%")
PY
