#!/usr/bin/env bash
# Locked memory, forbidden dumps and the sandbox cost nothing measurable:
# the key server as shipped (mlockall, no dumps, Landlock and seccomp)
# against `disable_mlock`, `allow_core_dumps` and `sandbox: off`, same
# build, same run, rounds alternating. One server
# core (cpu 0), the generator on cpu 1, every 100th answer verified.
#
#   perf/keys-stay.sh                      # AWS-LC single signatures
#   MB_LIB=/opt/keyless-crypto-mb/lib/libcrypto_mb.so.11 perf/keys-stay.sh   # multi-buffer lanes
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-24290}
OUT=${OUT:-target/perf-keys-stay}
source perf/common.sh

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, d))" "$1"; }
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

path="single signatures"; [ -n "${MB_LIB:-}" ] && path="lanes: $MB_LIB"
echo "# keys stay put vs not ($path), one server core (cpu 0), generator on cpu 1, $(date -u +%FT%TZ)"
printf "%-8s %-6s %14s %14s %7s %12s %12s\n" key load "as shipped" "unguarded" ratio "p50 shipped" "p50 unguarded"
for key in ${KEYS:-p256 rsa2048}; do
  for load in ${LOADS:-"1 1" "1 128"}; do
    set -- $load
    declare -a a_ops=() b_ops=() a_p50=() b_p50=()
    for round in $(seq "$ROUNDS"); do
      for mode in shipped unguarded; do
        if [ "$mode" = shipped ]; then
          start_server 0 1 "$OUT/server.log" ${MB_LIB:+--multibuffer-library "$MB_LIB"}
          locked=$(awk '/^Locked:/ {print $2}' "/proc/$SERVER_PID/smaps_rollup")
          [ "$locked" -gt 0 ] || { echo "not locked:" >&2; cat "$OUT/server.log" >&2; exit 1; }
          # Ready before the filter goes on: give it a moment.
          for _ in $(seq 50); do grep -q "^Seccomp:[[:space:]]*2" "/proc/$SERVER_PID/status" && break; sleep 0.05; done
          grep -q "^Seccomp:[[:space:]]*2" "/proc/$SERVER_PID/status" \
            || { echo "no seccomp filter:" >&2; cat "$OUT/server.log" >&2; exit 1; }
        else
          start_server 0 1 "$OUT/server.log" ${MB_LIB:+--multibuffer-library "$MB_LIB"} --disable-mlock --allow-core-dumps --sandbox off
        fi
        json=$(taskset -c 1 "$BIN/keyless-bench" run --server 127.0.0.1:"$PORT" --ca "$PKI/ca.pem" \
          --cert "$PKI/client.pem" --key "$PKI/client-key.pem" --pubkey "$PKI/pubkeys/$key.pem" \
          --connections "$1" --in-flight "$2" --duration "$DURATION" --warmup "$WARMUP" --json)
        errors=$(echo "$json" | field "sum(errors.values()) + verify_failures")
        [ "$errors" = 0 ] || echo "WARNING: $errors errors or bad signatures ($mode)" >&2
        ops=$(echo "$json" | field ops_per_sec); p50=$(echo "$json" | field "latency['p50_us']")
        if [ "$mode" = shipped ]; then a_ops+=("$ops"); a_p50+=("$p50"); else b_ops+=("$ops"); b_p50+=("$p50"); fi
        stop_server
      done
    done
    a=$(median "${a_ops[@]}"); b=$(median "${b_ops[@]}")
    printf "%-8s %-6s %14.0f %14.0f %6.1f%% %12.0f %12.0f\n" "$key" "${1}x${2}" "$a" "$b" \
      "$(python3 -c "print($a*100/$b)")" "$(median "${a_p50[@]}")" "$(median "${b_p50[@]}")"
  done
done
