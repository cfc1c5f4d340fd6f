# Shared by the perf/ scripts: build, a PKI, and a key server to measure.
# Expects PORT and OUT (and optionally CARGO_TARGET_DIR, BUILD_FEATURES);
# sets BIN, PKI, SERVER_PID.
BIN=${CARGO_TARGET_DIR:-target}/release
PKI="$OUT/pki"
mkdir -p "$OUT"
cargo build --release ${BUILD_FEATURES:+--features "$BUILD_FEATURES"} \
  --bin keyless-server --bin keyless-bench --bin keyless-tool >/dev/null 2>&1
[ -f "$PKI/gokeyless.yaml" ] || "$BIN/keyless-tool" gen-pki --out "$PKI" --port "$PORT" >/dev/null

SERVER_PID=
# start_server CPUS WORKERS LOG [FLAGS...]: a pinned server; waits until
# /readyz answers.
start_server() {
  local cpus=$1 workers=$2 log=$3
  shift 3
  taskset -c "$cpus" "$BIN/keyless-server" -c "$PKI/gokeyless.yaml" --listen-host 127.0.0.1 --port "$PORT" \
    --metrics-port "$((PORT + 1))" --workers "$workers" -l 2 "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$log" >&2; exit 1
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

# edge_yaml PORT WORKERS [LINES...]: an edge on 127.0.0.1:PORT serving the
# P-256 site, signing with the key server on $PORT, each of LINES appended.
edge_yaml() {
  local port=$1 workers=$2
  shift 2
  cat <<YAML
listen: 127.0.0.1:$port
workers: $workers
certificates:
  - cert: $PKI/sites/p256.pem
    default: true
key_servers: ["127.0.0.1:$PORT"]
key_server_name: localhost
key_server_ca: $PKI/ca.pem
client_cert: $PKI/client.pem
client_key: $PKI/client-key.pem
YAML
  local line
  for line in "$@"; do echo "$line"; done
}
trap stop_server EXIT

# CPU time (ms) used so far by the kernel's DAMON threads (kdamond). On this
# VM the host runs a DAMON pageout scheme that samples every 500 ms and
# takes 2-9 ms of one of our two cores each time, preempting whatever runs
# there: the cause of the few-ms open-loop tails (perf sched timehist).
kdamond_ms() {
  local total=0 pid
  for pid in $(pgrep -x 'kdamond\..*' 2>/dev/null || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $((total * 1000 / $(getconf CLK_TCK)))
}
