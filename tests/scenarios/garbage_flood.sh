#!/usr/bin/env bash
# A rogue PUSH floods intake with garbage while a legitimate producer sends
# 20,000 orders: every legitimate order is processed, the broker's memory
# stays bounded, and throughput stays within a stated fraction (1/5) of the
# flood-free run. Both rates are printed.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-20000}
RSS_MAX_KIB=${RSS_MAX_KIB:-524288}
start_broker --heartbeat-interval-ms 500
for w in 1 2; do start_worker "w$w" --concurrency 16 --noop; done

rate() { sed -n 's/.* \([0-9]*\) orders\/s.*/\1/p' "$1" | head -n 1; }
"$BIN/orderly-producer" bench --id calm --intake "$INTAKE" --fanout "$FANOUT" --orders "$ORDERS" --items 2 \
    --timeout 30 >"$WORK/calm.out" 2>&1 || fail "flood-free bench failed: $(tail -n 2 "$WORK/calm.out")"
calm=$(rate "$WORK/calm.out")

start flood "$BIN/orderly-flood" "$INTAKE" 120
FLOOD=$LAST_PID
sleep 1
"$BIN/orderly-producer" bench --id legit --intake "$INTAKE" --fanout "$FANOUT" --orders "$ORDERS" --items 2 \
    --timeout 30 >"$WORK/flood.out" 2>&1 || fail "bench under flood failed: $(tail -n 2 "$WORK/flood.out")"
flooded=$(rate "$WORK/flood.out")
kill -TERM "$FLOOD" 2>/dev/null || true

wait_for 60 "every legitimate order acknowledged" status_cmp 'v["counters"]["orders_acked"]' -ge $((2 * ORDERS))
errors=$(status_field 'v["decode_errors_intake"]')
rss=$(awk '/VmHWM/ {print $2}' "/proc/$BROKER_PID/status")
echo "flood-free: $calm orders/s; under flood: $flooded orders/s; decode errors counted: $errors; broker peak RSS: $rss KiB"
[ "$errors" -gt 1000 ] || fail "the flood barely arrived ($errors decode errors)"
[ "$rss" -le "$RSS_MAX_KIB" ] || fail "broker peak RSS $rss KiB is above $RSS_MAX_KIB KiB"
[ $((flooded * 5)) -ge "$calm" ] || fail "throughput under flood ($flooded) is below 1/5 of flood-free ($calm)"
echo "garbage_flood: all $((2 * ORDERS)) legitimate orders processed; under flood $((flooded * 100 / calm))% of flood-free throughput"
