#!/usr/bin/env bash
# Soak the broker-restart test beside two CPU-burning processes and print the tally. The
# test runs on a RabbitMQ node of its own (never the shared broker).
#
#   scripts/soak_bus_restart.sh [N=50] [python=python]
#
# Default: one pytest session, N rounds of the test on one node (BUS_RESTART_ROUNDS=N).
# SOAK_SEPARATE=1: N separate pytest runs, each starting its own node (slower).
# Output goes to $SOAK_DIR (default /tmp/soak-bus-restart).
set -uo pipefail
N="${1:-50}"
PY="${2:-python}"
OUT="${SOAK_DIR:-/tmp/soak-bus-restart}"
mkdir -p "$OUT"
"$PY" -c "while 1: pass" & b1=$!
"$PY" -c "while 1: pass" & b2=$!
trap 'kill "$b1" "$b2" 2>/dev/null' EXIT
TEST=(-m pytest -q -p no:cacheprovider -rf tests/test_bus_resilience.py -k restart)
if [ "${SOAK_SEPARATE:-0}" = 1 ]; then
    pass=0
    fail=0
    for i in $(seq "$N"); do
        if timeout 600 "$PY" "${TEST[@]}" >"$OUT/run-$i.log" 2>&1; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1))
            echo "run $i FAILED: $(grep -m1 -E '^E ' "$OUT/run-$i.log")"
        fi
        echo "run $i: $pass passed, $fail failed"
    done
else
    BUS_RESTART_ROUNDS="$N" timeout $((N * 120 + 120)) "$PY" "${TEST[@]}" >"$OUT/session.log" 2>&1
    tail -n 20 "$OUT/session.log"
    pass=$(grep -oE '[0-9]+ passed' "$OUT/session.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
    fail=$((N - pass))
fi
echo "broker-restart soak: $pass/$N passed beside two CPU burners"
[ "$fail" -eq 0 ]
