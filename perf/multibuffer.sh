#!/usr/bin/env bash
# Multi-buffer signing against single signatures, same build, same run: the
# key server on cpu 0 (one core), the load generator on cpu 1, rounds
# alternating between `multibuffer: off` and lanes, so every figure is a
# ratio of two runs minutes apart.
#
#   perf/multibuffer.sh                  # lanes through crypto_mb (AVX-512 IFMA; MB_LIB=path if needed)
#   LANES=reference perf/multibuffer.sh  # lanes through the AWS-LC reference (a release build with
#                                        # the lane-reference feature): the lanes path's own cost
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-24190}
LANES=${LANES:-crypto_mb}
MB_LIB=${MB_LIB:-}
OUT=${OUT:-target/perf-multibuffer}
# The library's lanes run in the ordinary release build (target/release,
# shared with the other perf/ scripts); only the reference needs a build
# of its own (the lane-reference feature).
if [ "$LANES" = reference ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/multibuffer-reference}
  BUILD_FEATURES=keyless-keys/lane-reference
fi
source perf/common.sh

serve() { # $1 = off | lanes
  if [ "$1" = off ]; then
    start_server 0 1 "$OUT/server-off.log" --multibuffer off
  elif [ "$LANES" = reference ]; then
    KEYLESS_TEST_LANE_MATH=reference start_server 0 1 "$OUT/server-lanes.log" --multibuffer on
  else
    start_server 0 1 "$OUT/server-lanes.log" --multibuffer on ${MB_LIB:+--multibuffer-library "$MB_LIB"}
  fi
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
run() { # $1 = key, $2 = connections, $3 = in flight
  taskset -c 1 "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
    --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/$1.pem" --connections "$2" --in-flight "$3" \
    --duration "$DURATION" --warmup "$WARMUP" --json
}
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "# multi-buffer ($LANES) vs single signatures, one server core (cpu 0), generator on cpu 1, $(date -u +%FT%TZ)"
hook=()
[ "$LANES" = reference ] && hook=(KEYLESS_TEST_LANE_MATH=reference)
for key in p256 rsa2048; do
  env "${hook[@]}" taskset -c 0 "$BIN/keyless-bench" ceiling --key-file "$PKI/keys/$key.key" --duration 2 \
    ${MB_LIB:+--multibuffer-library "$MB_LIB"} | sed 's/^/# /'
done
printf "%-8s %-6s %12s %12s %7s %10s %10s %s\n" key load "off ops/s" "lanes ops/s" ratio "off p50" "lanes p50" "lanes per call"
for key in p256 rsa2048; do
  for load in "1 1" "1 128" "32 1"; do
    set -- $load
    declare -a off_ops=() lanes_ops=() off_p50=() lanes_p50=()
    fill=-
    for round in $(seq "$ROUNDS"); do
      for mode in off lanes; do
        serve "$mode"
        json=$(run "$key" "$1" "$2")
        errors=$(echo "$json" | field "sum(errors.values()) + verify_failures")
        [ "$errors" = 0 ] || echo "WARNING: $errors errors or bad signatures ($mode)" >&2
        ops=$(echo "$json" | field ops_per_sec)
        p50=$(echo "$json" | field "latency['p50_us']")
        if [ "$mode" = off ]; then off_ops+=("$ops"); off_p50+=("$p50"); else
          lanes_ops+=("$ops"); lanes_p50+=("$p50")
          m=$(curl -s "http://127.0.0.1:$((PORT + 1))/metrics")
          fill=$(echo "$m" | python3 -c "
import sys
calls = lanes = 0
for l in sys.stdin:
    if l.startswith('keyless_multibuffer_calls_total'): calls += float(l.split()[-1])
    if l.startswith('keyless_multibuffer_lanes_total'): lanes += float(l.split()[-1])
print(f'{lanes/calls:.1f}' if calls else 'none')")
        fi
        stop_server
      done
    done
    o=$(median "${off_ops[@]}"); l=$(median "${lanes_ops[@]}")
    printf "%-8s %-6s %12.0f %12.0f %6.1f%% %10.0f %10.0f %s\n" "$key" "${1}x${2}" "$o" "$l" \
      "$(python3 -c "print($l*100/$o)")" "$(median "${off_p50[@]}")" "$(median "${lanes_p50[@]}")" "$fill"
  done
done
