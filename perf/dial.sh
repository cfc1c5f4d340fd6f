#!/usr/bin/env bash
# Full-handshake rate through a key server that dials in, against the same
# key server dialed by the edge, same run. One key server process does
# both: it listens (edge A dials it) and dials edge B's key_server_listen.
# The edges differ in nothing else (one core each, two connections to the
# key server each way); rounds alternate A, B and the median ratio is the
# figure.
#
#   perf/dial.sh            # about a minute
#   ROUNDS=5 DURATION=8 perf/dial.sh
#   EDGE_WORKERS=2 EDGE_CPUS=0,1 perf/dial.sh   # connections land on either core
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-24390}
OUT=${OUT:-target/perf-dial}
source perf/common.sh
EDGE_PORT=$((PORT + 10))
EDGE_METRICS=$((PORT + 11))
KS_LISTEN=$((PORT + 12))
cargo build --release --bin keyless-edge >/dev/null 2>&1
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }

edge_config() { # $1 = the line that says where key servers are
  cat <<YAML
listen: 127.0.0.1:$EDGE_PORT
metrics_listen: 127.0.0.1:$EDGE_METRICS
workers: ${EDGE_WORKERS:-1}
certificates:
  - cert: $PKI/sites/p256.pem
    default: true
$1
key_server_name: localhost
key_server_ca: $PKI/ca.pem
client_cert: $PKI/client.pem
client_key: $PKI/client-key.pem
YAML
}
edge_config "key_servers: [\"127.0.0.1:$PORT\"]" >"$OUT/edge-dials.yaml"
edge_config "key_server_listen: 127.0.0.1:$KS_LISTEN" >"$OUT/edge-dialed-in.yaml"

EDGE_PID=
start_edge() { # $1 = config file; returns once a key server is connected
  taskset -c "${EDGE_CPUS:-0}" "$BIN/keyless-edge" -c "$1" -l 2 >"$OUT/edge.log" 2>&1 &
  EDGE_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$EDGE_METRICS/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "edge has no key server" >&2; cat "$OUT/edge.log" >&2; exit 1
}
stop_edge() { kill "$EDGE_PID" 2>/dev/null || true; wait "$EDGE_PID" 2>/dev/null || true; }
trap 'stop_edge; stop_server' EXIT

echo "# keyless-edge with a key server it dials vs one that dials in, same run ($(date -u +%FT%TZ))"
KEYLESS_DIAL=127.0.0.1:$KS_LISTEN KEYLESS_DIAL_CONNECTIONS=2 start_server 1 1 "$OUT/server.log"
ratios=()
for round in $(seq "$ROUNDS"); do
  rates=()
  for way in dials dialed-in; do
    start_edge "$OUT/edge-$way.yaml"
    json=$(taskset -c 1 "$BIN/keyless-bench" handshake --server 127.0.0.1:$EDGE_PORT --ca "$PKI/ca.pem" \
      --duration "$DURATION" --warmup "$WARMUP" --json --mode full --tls 1.3 --concurrency 16)
    failures=$(echo "$json" | field failures)
    [ "$failures" = 0 ] || { echo "$way: $failures handshakes failed" >&2; exit 1; }
    rates+=("$(echo "$json" | field handshakes_per_sec)")
    stop_edge
  done
  line=$(python3 - "$round" "${rates[@]}" <<'PY'
import sys
r, a, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print(f"round {r}: full TLS 1.3 P-256 handshakes/s, edge dials {a:.0f}, key server dials in {b:.0f} -> {b / a * 100:.1f}%")
PY
)
  echo "$line"
  ratios+=("${line##*-> }")
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = [float(x.rstrip("%")) for x in sys.argv[1:]]
print(f"dialed-in vs dialed, full handshakes/s: median {statistics.median(r):.1f}% over {len(r)} alternating rounds "
      f"(min {min(r):.1f}%, max {max(r):.1f}%)")
PY
