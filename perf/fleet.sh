#!/usr/bin/env bash
# The fleet's figures, same machine, same run:
#  1. full TLS 1.3 handshakes/s of a 2-core edge holding 1 connection per
#     key server for the whole process (key_server_connections: 1, so one
#     core hands its signatures to the other) against 2 on every core
#     (connections_per_server: 2), alternating for ROUNDS rounds;
#  2. the key server's connections and resident memory with EDGES edge
#     processes of 2 cores each: per process (the default, 2) against per
#     core (connections_per_server: 2);
#  3. DNS: the fleet test's own figures (a key server added to the answer
#     signs after ..., one removed has its connections closed after ...),
#     with zero failed handshakes (the test fails otherwise).
#
#   perf/fleet.sh            # about 5 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
PORT=${PORT:-24590}
OUT=${OUT:-target/perf-fleet}
ROUNDS=${ROUNDS:-8}
EDGES=${EDGES:-20}
source perf/common.sh
EDGE_PORT=$((PORT + 10))
cargo build --release --bin keyless-edge >/dev/null 2>&1
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
open_connections() {
  curl -sf "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^keyless_connections_open/ {s += $2} END {print s + 0}'
}

edge_config() { # $1 = port, $2 = the connections setting
  edge_yaml "$1" 2 "disable_mlock: true" "$2"
}
EDGE_PIDS=()
start_edge() { # $1 = port, $2 = config file
  "$BIN/keyless-edge" -c "$2" -l 2 >>"$OUT/edge.log" 2>&1 &
  EDGE_PIDS+=($!)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && break; sleep 0.1; done
}
stop_edges() {
  for p in "${EDGE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${EDGE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  EDGE_PIDS=()
}
trap 'stop_edges; stop_server' EXIT
hs() {
  "$BIN/keyless-bench" handshake --server 127.0.0.1:$EDGE_PORT --ca "$PKI/ca.pem" --duration "$DURATION" \
    --warmup "$WARMUP" --json --mode full --tls 1.3 --concurrency 32
}

echo "# keyless fleet figures, same machine, same run ($(date -u +%FT%TZ))"
# --disable-mlock: with every page locked as it is mapped, resident memory
# moves in whole allocator segments, not per connection.
start_server 0,1 1 "$OUT/server.log" --disable-mlock

# 1. Hand-over between cores: 1 connection for the process vs 2 per core.
edge_config $EDGE_PORT "key_server_connections: 1" >"$OUT/edge-process.yaml"
edge_config $EDGE_PORT "connections_per_server: 2" >"$OUT/edge-core.yaml"
# Each round runs both, in turn first (ABBA): the rate moves +-15% between
# runs of one configuration here, so the median of the rounds' ratios is
# the figure, beside the edge's CPU time per handshake.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # $1 = config file; prints "rate cpu_us_per_handshake"
  start_edge $EDGE_PORT "$1"; sleep 0.5
  local t0 t1 json
  t0=$(cpu_ticks "${EDGE_PIDS[0]}"); json=$(hs); t1=$(cpu_ticks "${EDGE_PIDS[0]}")
  stop_edges
  python3 - "$(echo "$json" | field handshakes_per_sec)" "$(echo "$json" | field handshakes)" "$t0" "$t1" \
    "$(getconf CLK_TCK)" <<'PY'
import sys
rate, n, t0, t1, hz = map(float, sys.argv[1:])
print(f"{rate:.0f} {(t1 - t0) / hz / n * 1e6:.0f}")
PY
}
ratios=(); cpus=()
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    read -r core core_cpu < <(measure "$OUT/edge-core.yaml")
    read -r process process_cpu < <(measure "$OUT/edge-process.yaml")
  else
    read -r process process_cpu < <(measure "$OUT/edge-process.yaml")
    read -r core core_cpu < <(measure "$OUT/edge-core.yaml")
  fi
  ratio=$(python3 -c "import sys; print(f'{float(sys.argv[2]) / float(sys.argv[1]) * 100:.1f}')" "$core" "$process")
  cpu=$(python3 -c "import sys; print(f'{float(sys.argv[2]) / float(sys.argv[1]) * 100:.1f}')" "$core_cpu" "$process_cpu")
  echo "round $round: 2-core edge, full TLS 1.3 P-256, 32 clients: 2 connections per core $core/s ($core_cpu us of edge CPU each), 1 for the process $process/s ($process_cpu us) -> rate $ratio%, CPU $cpu%"
  ratios+=("$ratio"); cpus+=("$cpu")
done
python3 - "${ratios[*]}" "${cpus[*]}" <<'PY'
import statistics, sys
r = [float(x) for x in sys.argv[1].split()]
c = [float(x) for x in sys.argv[2].split()]
print(f"1 connection per edge process vs 2 per core: handshakes/s median {statistics.median(r):.1f}% "
      f"(min {min(r):.1f}%, max {max(r):.1f}%), edge CPU per handshake median {statistics.median(c):.1f}%, "
      f"over {len(r)} rounds")
PY

# 2. The key server's side of EDGES 2-core edge processes.
fan_in() { # $1 = label, $2 = connections setting; a fresh key server each
  local before rss0 i
  stop_server
  start_server 0,1 1 "$OUT/server.log" --disable-mlock
  sleep 1
  before=$(open_connections); rss0=$(rss_kib "$SERVER_PID")
  for i in $(seq "$EDGES"); do
    edge_config $((EDGE_PORT + i)) "$2" >"$OUT/edge-$i.yaml"
    start_edge $((EDGE_PORT + i)) "$OUT/edge-$i.yaml"
  done
  sleep 3
  local after rss1
  after=$(open_connections); rss1=$(rss_kib "$SERVER_PID")
  python3 - "$1" "$EDGES" "$before" "$after" "$rss0" "$rss1" <<'PY'
import sys
label, edges, c0, c1, r0, r1 = sys.argv[1], *map(int, sys.argv[2:])
links = c1 - c0
print(f"{edges} edge processes x 2 cores, {label}: key server holds {links} connections "
      f"({links / edges:.0f} per edge), resident memory +{(r1 - r0) / 1024:.2f} MiB "
      f"({(r1 - r0) / max(links, 1):.1f} KiB per connection)")
PY
  stop_edges
}
fan_in "per process (default)" ""
fan_in "per core (connections_per_server: 2)" "connections_per_server: 2"

# 3. DNS: the fleet test (the test build), its own timings.
cargo test -p keyless-tool --test fleet -- --nocapture --test-threads 1 2>&1 \
  | grep -E "after it (joined|left)|test result" | sed 's/^/DNS test: /'
