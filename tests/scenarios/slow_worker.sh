#!/usr/bin/env bash
# A slow worker with concurrency 1 never holds more than one order, while
# a faster worker with concurrency 4 takes the rest.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-40}
python3 "$HELPERS/orders.py" "$ORDERS" 2 "$WORK/orders.jsonl" "$WORK/expected.json" slow
start_broker --heartbeat-interval-ms 500
# The handler holds a lock directory while it runs: a second concurrent
# run on this worker would fail mkdir and record a violation.
start_worker slow --concurrency 1 --exec "mkdir \"$WORK/lock\" || echo \$ORDERLY_ORDER_ID >> \"$WORK/violations\"; sleep 0.3; cat > /dev/null; rmdir \"$WORK/lock\"; echo x >> \"$WORK/slow.done\""
start_worker fast --concurrency 4 --exec "sleep 0.05; cat > /dev/null"
"$BIN/orderly-producer" send --id slow --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 10 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
max_held=0
for _ in $(seq 1 100); do
    held=$(status_field '[w["in_flight"] for w in v["workers"] if w["id"]=="slow"][0] if any(w["id"]=="slow" for w in v["workers"]) else 0')
    [ "$held" -gt "$max_held" ] && max_held=$held
    [ "$(status_field 'v["counters"]["orders_acked"]')" -ge "$ORDERS" ] && break
    sleep 0.1
done
[ "$(status_field 'v["counters"]["orders_acked"]')" -ge "$ORDERS" ] || fail "not every order was acknowledged"
[ ! -e "$WORK/violations" ] || fail "the slow worker ran orders concurrently: $(cat "$WORK/violations")"
[ "$max_held" -le 1 ] || fail "the broker had $max_held orders in flight on a concurrency-1 worker"
echo "slow_worker: slow worker did $(wc -l <"$WORK/slow.done" 2>/dev/null || echo 0) orders, never more than $max_held at once"
