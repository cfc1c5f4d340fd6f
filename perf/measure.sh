#!/usr/bin/env bash
# The whole-path measurement in one go: the key server pinned to core 0, the
# load generator pinned to core 1, and the raw signing ceiling of the same
# key on core 0 measured in the same run, so every figure is a ratio. Where
# crypto_mb can run (AVX-512 IFMA), the key's multi-buffer ceiling too, and
# the server signs through it (multibuffer: auto); MB_LIB names the library
# if it is not in the loader path (e.g. /opt/keyless-crypto-mb/lib/libcrypto_mb.so.11).
#
#   perf/measure.sh            # full run (about 3 minutes)
#   DURATION=2 perf/measure.sh # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
PORT=${PORT:-24090}
OUT=${OUT:-target/perf}
source perf/common.sh
MB_LIB=${MB_LIB:-}
[ -n "$MB_LIB" ] && export KEYLESS_MULTIBUFFER_LIBRARY=$MB_LIB

bench() { # $1 = cpu, rest = keyless-bench run args
  local cpu=$1; shift
  taskset -c "$cpu" "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" \
    --cert "$PKI/client.pem" --key "$PKI/client-key.pem" --duration "$DURATION" --warmup "$WARMUP" --json "$@"
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }

echo "# keyless-server vs raw signing, same machine, same run ($(date -u +%FT%TZ))"
echo "# server: 1 core (cpu 0); generator: cpu 1"
start_server 0 1 "$OUT/server.log"
printf "%-22s %-10s %10s %10s %7s %9s %9s\n" operation load "ops/s" ceiling ratio "p50 us" "p99 us"
for key in p256 rsa2048; do
  cjson=$(taskset -c 0 "$BIN/keyless-bench" ceiling --key-file "$PKI/keys/$key.key" --duration 3 --json \
    ${MB_LIB:+--multibuffer-library "$MB_LIB"})
  ceiling=$(echo "$cjson" | field ops_per_sec)
  mb=$(echo "$cjson" | field "multibuffer_ops_per_sec or 0")
  if [ "$mb" != 0 ]; then
    printf "%-22s multi-buffer ceiling %.0f ops/s (%.2fx single)\n" "$key" "$mb" "$(python3 -c "print($mb/$ceiling)")"
  else
    printf "%-22s no multi-buffer ceiling: %s\n" "$key" "$(echo "$cjson" | field multibuffer)"
  fi
  [ "$key" = p256 ] && ceiling_p256=$ceiling
  for load in "1 128" "16 8"; do
    set -- $load
    json=$(bench 1 --pubkey "$PKI/pubkeys/$key.pem" --connections "$1" --in-flight "$2")
    ops=$(echo "$json" | field ops_per_sec)
    p50=$(echo "$json" | field "latency['p50_us']")
    p99=$(echo "$json" | field "latency['p99_us']")
    errors=$(echo "$json" | field "sum(errors.values()) + verify_failures")
    [ "$errors" = 0 ] || echo "WARNING: $errors errors or bad signatures: $(echo "$json" | field "errors")" >&2
    printf "%-22s %-10s %10.0f %10.0f %6.1f%% %9.0f %9.0f\n" "$key" "${1}x${2}" "$ops" "$ceiling" \
      "$(python3 -c "print($ops*100/$ceiling)")" "$p50" "$p99"
    if [ "$mb" != 0 ]; then
      printf "%-22s %-10s %10.0f %10.0f %6.1f%% of the multi-buffer ceiling\n" "" "" "$ops" "$mb" \
        "$(python3 -c "print($ops*100/$mb)")"
    fi
  done
  # Latency at half of the measured capacity (open loop), against raw sign time.
  rate=$(python3 -c "print(int($ops/2))")
  # The generator spins (--spin): its requests leave on time and answers
  # cost the server no wake-up of the generator, as from another machine.
  k0=$(kdamond_ms)
  json=$(bench 1 --pubkey "$PKI/pubkeys/$key.pem" --connections 1 --in-flight 256 --rate "$rate" --spin)
  k1=$(kdamond_ms)
  p50=$(echo "$json" | field "latency['p50_us']")
  p90=$(echo "$json" | field "latency['p90_us']")
  p99=$(echo "$json" | field "latency['p99_us']")
  lag=$(echo "$json" | field "send_lag['p99_us']")
  raw_us=$(python3 -c "print(1e6/$ceiling)")
  printf "%-22s %-10s p99 %.0f us = raw sign %.0f us + %.0f us (p50 %.0f, p90 %.0f; send lag p99 %.0f us; kdamond ran %s ms)\n" \
    "$key" "@50% ($rate/s)" "$p99" "$raw_us" "$(python3 -c "print($p99-$raw_us)")" "$p50" "$p90" "$lag" "$((k1 - k0))"
done
stop_server

echo
echo "# both cores serving, one connection (1x256), generator unpinned"
start_server 0,1 2 "$OUT/server.log"
handled() { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^keyless_core_handled_total/ {print $2}'; }
before=($(handled))
json=$(bench 0,1 --pubkey "$PKI/pubkeys/p256.pem" --connections 1 --in-flight 256)
after=($(handled))
c0=$((after[0] - before[0])); c1=$((after[1] - before[1]))
printf "p256 1x256 on 2 cores: %.0f ops/s (%.2fx one-core ceiling); core 0 signed %.1f%%, core 1 %.1f%%\n" \
  "$(echo "$json" | field ops_per_sec)" "$(python3 -c "print($(echo "$json" | field ops_per_sec)/$ceiling_p256)")" \
  "$(python3 -c "print($c0*100/($c0+$c1))")" "$(python3 -c "print($c1*100/($c0+$c1))")"

echo
echo "# sweep: 1 connection, in-flight 1..256, server on cpu 0 (table; plot in $OUT/sweep.svg)"
stop_server
start_server 0 1 "$OUT/server.log"
taskset -c 1 "$BIN/keyless-bench" sweep --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" --cert "$PKI/client.pem" \
  --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/p256.pem" --duration "$((DURATION / 2 + 1))" --warmup 1 \
  --levels 1,4,16,64,256 --svg "$OUT/sweep.svg" 2>&1 | grep -v '^\s*$' 
stop_server
