#!/usr/bin/env bash
# Offer the key server ten times what it can sign, open loop, and watch its
# resident memory: it must stay flat, because each connection stops being
# read at its in-flight cap (1024) instead of buffering.
#
#   perf/overload.sh                 # 60 s
#   SECONDS_TOTAL=10 perf/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${SECONDS_TOTAL:-60}
PORT=${PORT:-24190}
OUT=${OUT:-target/perf}
source perf/common.sh
start_server 0 1 "$OUT/overload-server.log"
SERVER=$SERVER_PID

capacity=$(taskset -c 0 "$BIN/keyless-bench" ceiling --key-file "$PKI/keys/p256.key" --duration 2 --json |
  python3 -c "import json,sys; print(int(json.load(sys.stdin)['ops_per_sec']))")
rate=$((capacity * 10))
echo "# offering $rate/s (10x the one-core signing ceiling of $capacity/s) for ${TOTAL}s, 8 connections x 4096 slots"
taskset -c 1 "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
  --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/p256.pem" --connections 8 --in-flight 4096 \
  --rate "$rate" --warmup 0 --duration "$TOTAL" --json >"$OUT/overload.json" 2>/dev/null &
LOAD=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
start=$(date +%s)
samples=()
while kill -0 "$LOAD" 2>/dev/null; do
  sleep 5
  t=$(( $(date +%s) - start ))
  r=$(rss)
  samples+=("$t:$r")
  echo "t=${t}s rss=${r} KiB"
done
wait "$LOAD" || true
python3 - "$OUT/overload.json" "${samples[@]}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
samples = [tuple(map(int, s.split(":"))) for s in sys.argv[2:]]
after_warm = [r for t, r in samples if t >= min(10, samples[-1][0])]
first, last = after_warm[0], samples[-1][1]
print(f"served {report['ops_per_sec']:.0f} ops/s while offered 10x; not sent by the generator: {report['not_sent']}")
print(f"errors: {report['errors'] or 'none'}; bad signatures: {report['verify_failures']}")
print(f"resident memory: {first} KiB at 10 s, {last} KiB at the end ({(last - first) * 100 / first:+.1f}%)")
PY
