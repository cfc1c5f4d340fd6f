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
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_server; }
trap cleanup EXIT

# hold KIND PORT: CONNECTIONS connections from PROCESSES clients, held for
# 30 s; returns once every client has said `held N`.
hold() {
  local each=$((CONNECTIONS / PROCESSES)) i
  rm -f "$OUT"/hold-*.out
  for i in $(seq "$PROCESSES"); do
    # From 127.0.0.2: on the new client's own address, each of its
    # connects would scan the kernel's ports past every one held (and run
    # out of them, with the handshake runs' TIME_WAITs).
    "$BIN/keyless-bench" hold --kind "$1" --server "127.0.0.1:$2" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
      --bind 127.0.0.2 \
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
hs() { "$BIN/keyless-bench" handshake --server "127.0.0.1:$1" --ca "$PKI/ca.pem" --duration 5 --warmup 1 --json \
  --mode full --tls 1.3 --concurrency 16 | field handshakes_per_sec; }
HOLDERS=()

echo "# connections at scale, same machine, same run ($(date -u +%FT%TZ)); $CONNECTIONS connections from $PROCESSES clients"

# 1 and 2: the edge (signing through the key server), then nginx.
start_server 1 1 "$OUT/server.log"
cat >"$OUT/edge.yaml" <<YAML
listen: 127.0.0.1:$EDGE_PORT
workers: 1
certificates:
  - cert: $PKI/sites/p256.pem
    default: true
key_servers: ["127.0.0.1:$PORT"]
key_server_name: localhost
key_server_ca: $PKI/ca.pem
client_cert: $PKI/client.pem
client_key: $PKI/client-key.pem
idle_timeout: 300s
max_connections_per_core: $((CONNECTIONS + 1000))
YAML
taskset -c 0 "$BIN/keyless-edge" -c "$OUT/edge.yaml" -l 2 >"$OUT/edge.log" 2>&1 &
EDGE_PID=$!; PIDS+=("$EDGE_PID")
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$EDGE_PORT) 2>/dev/null && break; sleep 0.1; done
sleep 1
idle_rate=$(hs "$EDGE_PORT")
before=$(rss_kib "$EDGE_PID")
hold edge "$EDGE_PORT"
after=$(rss_kib "$EDGE_PID")
held_rate=$(hs "$EDGE_PORT")
release
edge_per=$(( (after - before) * 1024 / HELD ))
echo "edge: $HELD idle TLS keep-alive connections held: RSS ${before} -> ${after} KiB = $((edge_per / 1024)).$(( (edge_per % 1024) * 10 / 1024 )) KiB per connection"
python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'edge: full TLS 1.3 handshakes/s with none held {a:.0f}, with all held {b:.0f} -> {b/a*100:.0f}%')" "$idle_rate" "$held_rate"
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
  nginx_idle_rate=$(hs "$NGINX_PORT")
  before=$(rss_kib "$NGINX_WORKER")
  hold edge "$NGINX_PORT"
  after=$(rss_kib "$NGINX_WORKER")
  nginx_held_rate=$(hs "$NGINX_PORT")
  release
  python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'nginx: full TLS 1.3 handshakes/s with none held {a:.0f}, with all held {b:.0f} -> {b/a*100:.0f}%')" "$nginx_idle_rate" "$nginx_held_rate"
  nginx_per=$(( (after - before) * 1024 / HELD ))
  echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'): $HELD idle TLS keep-alive connections held: RSS ${before} -> ${after} KiB = $((nginx_per / 1024)).$(( (nginx_per % 1024) * 10 / 1024 )) KiB per connection"
  python3 -c "import sys; e,n=map(float,sys.argv[1:]); print(f'edge vs nginx, memory per idle connection: {e/n:.2f}x')" "$edge_per" "$nginx_per"
  kill "$NGINX_MASTER"; wait "$NGINX_MASTER" 2>/dev/null || true
else
  echo "nginx: not installed (apt-get install nginx-light) - no comparison"
fi

# 3: the key server, idle mutual-TLS connections (one ping each).
before=$(rss_kib "$SERVER_PID")
hold key-server "$PORT"
after=$(rss_kib "$SERVER_PID")
release
ks_per=$(( (after - before) * 1024 / HELD ))
echo "key server: $HELD idle mutual-TLS connections held: RSS ${before} -> ${after} KiB = $((ks_per / 1024)).$(( (ks_per % 1024) * 10 / 1024 )) KiB per connection"
