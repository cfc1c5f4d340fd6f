#!/usr/bin/env bash
# Flame graphs of a key server under load, two ways:
#  1. the server's own profiler: GET /debug/pprof/flamegraph on the metrics port;
#  2. `perf record --call-graph dwarf` (cpu-clock), folded by keyless-tool.
# Writes both SVGs to $OUT and prints the top frames.
#
#   perf/flamegraph.sh               # 10 s of ECDSA P-256 load
#   SECONDS_PROFILE=5 KEY=rsa2048 perf/flamegraph.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECONDS_PROFILE:-10}
KEY=${KEY:-p256}
PORT=${PORT:-24290}
OUT=${OUT:-target/perf}
source perf/common.sh
start_server 0 1 "$OUT/flame-server.log"
SERVER=$SERVER_PID

# Load for both captures, one after the other.
taskset -c 1 "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
  --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/$KEY.pem" --warmup 1 --duration $((2 * SECS + 4)) \
  >"$OUT/flame-load.txt" 2>/dev/null &
LOAD=$!
sleep 1

echo "# pprof flame graph from the server's metrics port ($SECS s)"
curl -sf "http://127.0.0.1:$((PORT + 1))/debug/pprof/flamegraph?seconds=$SECS" -o "$OUT/pprof-flamegraph.svg"
echo "written $OUT/pprof-flamegraph.svg ($(wc -c <"$OUT/pprof-flamegraph.svg") bytes)"

echo "# perf record --call-graph dwarf ($SECS s)"
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$SERVER" -o "$OUT/perf.data" -- sleep "$SECS" \
  >/dev/null 2>&1
perf script -i "$OUT/perf.data" 2>/dev/null >"$OUT/perf.script"
"$BIN/keyless-tool" flamegraph --perf-script "$OUT/perf.script" --svg "$OUT/perf-flamegraph.svg" --top 12
wait "$LOAD" || true
grep -E "ops/s|latency" "$OUT/flame-load.txt" || true
