#!/usr/bin/env bash
# Connections at scale, same run, same client (`keyless-bench hold`, from
# several processes):
#  1. the edge's resident memory per held idle TLS keep-alive connection
#     (one GET each), beside nginx's (Debian's, one worker, key in process)
#     when nginx is installed;
#  2. full TLS 1.3 handshakes/s against the edge with none held and with
#     all of them held;
#  3. the key server's resident memory per held idle mutual-TLS connection
#     (one ping each).
#
#   perf/connections.sh                       # 15,000 connections
#   CONNECTIONS=30000 PROCESSES=6 perf/connections.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-15000}
PROCESSES=${PROCESSES:-3}
PORT=${PORT:-24490}
OUT=${OUT:-target/perf-connections}
source perf/common.sh
EDGE_PORT=$((PORT + 10))
NGINX_PORT=$((PORT + 20))
cargo build --release --bin keyless-edge >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((CONNECTIONS + 1000)) ] || { echo "ulimit -n $(ulimit -n) is too low for $CONNECTIONS connections" >&2; exit 1; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

PIDS=()
cleanup() { for p in "${PIDS[@]}" "${HOLDERS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_server; }
trap cleanup EXIT

# hold KIND PORT FROM: CONNECTIONS connections from PROCESSES clients on
# address FROM, held for 30 s; returns once every client has said `held N`.
hold() {
  local each=$((CONNECTIONS / PROCESSES)) i
  rm -f "$OUT"/hold-*.out
  for i in $(seq "$PROCESSES"); do
    # From another address than the handshake runs' (127.0.0.1): on theirs,
    # each of their connects would scan the kernel's ports past every one
    # held. A fresh one each time: the last hold's ports are in TIME_WAIT.
    "$BIN/keyless-bench" hold --kind "$1" --server "127.0.0.1:$2" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
      --bind "$3" \
      --key "$PKI/client-key.pem" --connections "$each" --parallel 32 --hold 30 >"$OUT/hold-$i.out" 2>&1 &
    HOLDERS+=($!)
  done
  for _ in $(seq 600); do
    [ "$(cat "$OUT"/hold-*.out 2>/dev/null | grep -c '^held')" = "$PROCESSES" ] && break
    sleep 0.2
  done
  HELD=$(cat "$OUT"/hold-*.out | awk '/^held/{s+=$2} END {print s+0}')
  sleep 2 # let the server settle
}
release() { for p in "${HOLDERS[@]}"; do kill "$p" 2>/dev/null || true; done; HOLDERS=(); sleep 1; }
# Full TLS 1.3 handshakes/s (a failed handshake is counted, not fatal).
hs() { { "$BIN/keyless-bench" handshake --server "127.0.0.1:$1" --ca "$PKI/ca.pem" --duration 5 --warmup 1 --json \
  --mode full --tls 1.3 --concurrency 16 || true; } | field handshakes_per_sec; }
HOLDERS=()
kib() { echo "$(($1 / 1024)).$(( ($1 % 1024) * 10 / 1024 ))"; }

# measure NAME PID PORT FROM: full handshakes/s with none held and with all
# held, and resident memory per held connection (PER, bytes).
measure() {
  local idle before after held
  idle=$(hs "$3")
  before=$(rss_kib "$2")
  hold edge "$3" "$4"
  after=$(rss_kib "$2")
  held=$(hs "$3")
  release
  PER=$(( (after - before) * 1024 / HELD ))
  echo "$1: $HELD idle TLS keep-alive connections held: RSS ${before} -> ${after} KiB = $(kib $PER) KiB per connection"
  python3 -c "import sys; n,a,b=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]); print(f'{n}: full TLS 1.3 handshakes/s with none held {a:.0f}, with all held {b:.0f} -> {b/a*100:.0f}%')" "$1" "$idle" "$held"
}

echo "# connections at scale, same machine, same run ($(date -u +%FT%TZ)); $CONNECTIONS connections from $PROCESSES clients"

# 1 and 2: the edge (signing through the key server), then nginx.
start_server 1 1 "$OUT/server.log"
edge_yaml "$EDGE_PORT" 1 "idle_timeout: 300s" "max_connections_per_core: $((CONNECTIONS + 1000))" >"$OUT/edge.yaml"
taskset -c 0 "$BIN/keyless-edge" -c "$OUT/edge.yaml" -l 2 >"$OUT/edge.log" 2>&1 &
EDGE_PID=$!; PIDS+=("$EDGE_PID")
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$EDGE_PORT) 2>/dev/null && break; sleep 0.1; done
sleep 1
measure keyless-edge "$EDGE_PID" "$EDGE_PORT" 127.0.0.2
edge_per=$PER
kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true

if command -v nginx >/dev/null; then
  mkdir -p "$OUT/nginx"
  cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $((CONNECTIONS + 1000));
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
events { worker_connections $((CONNECTIONS + 1000)); }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  client_body_temp_path $PWD/$OUT/nginx;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $PWD/$PKI/sites/p256.pem;
    ssl_certificate_key $PWD/$PKI/keys/p256.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    location / { return 200 "hello from nginx\n"; }
  }
}
CONF
  taskset -c 0 nginx -c "$PWD/$OUT/nginx/nginx.conf" -g 'daemon off;' &
  NGINX_MASTER=$!; PIDS+=("$NGINX_MASTER")
  sleep 1
  NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
  measure "nginx $(nginx -v 2>&1 | sed 's/.*\///')" "$NGINX_WORKER" "$NGINX_PORT" 127.0.0.3
  nginx_per=$PER
  python3 -c "import sys; e,n=map(float,sys.argv[1:]); print(f'edge vs nginx, memory per idle connection: {e/n:.2f}x')" "$edge_per" "$nginx_per"
  kill "$NGINX_MASTER"; wait "$NGINX_MASTER" 2>/dev/null || true
else
  echo "nginx: not installed (apt-get install nginx-light) - no comparison"
fi

# 3: the key server, idle mutual-TLS connections (one ping each).
before=$(rss_kib "$SERVER_PID")
hold key-server "$PORT" 127.0.0.4
after=$(rss_kib "$SERVER_PID")
release
ks_per=$(( (after - before) * 1024 / HELD ))
echo "keyless-server: $HELD idle mutual-TLS connections held: RSS ${before} -> ${after} KiB = $(kib $ks_per) KiB per connection"
