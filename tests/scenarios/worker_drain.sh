#!/usr/bin/env bash
# SIGTERM on a busy worker: it takes no new orders, finishes the ones it
# holds, says bye, and exits 0; the broker redelivers nothing.
source "$(dirname "$0")/../lib.sh"
for n in 1 2 3 4; do echo "{\"id\": \"d$n\", \"items\": [$n]}"; done >"$WORK/orders.jsonl"
mkdir -p "$WORK/started" "$WORK/done"
start_broker --heartbeat-interval-ms 500
start_worker busy --concurrency 4 \
    --exec "touch \"$WORK/started/\$ORDERLY_ORDER_ID\"; sleep 2; cat > /dev/null; touch \"$WORK/done/\$ORDERLY_ORDER_ID\""
BUSY=$LAST_PID
"$BIN/orderly-producer" send --id drain --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 10 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 10 "4 running orders" count_cmp -eq 4 ls "$WORK/started"
kill -TERM "$BUSY"
wait "$BUSY" && code=0 || code=$?
[ "$code" -eq 0 ] || fail "worker exited $code after SIGTERM"
[ "$(ls "$WORK/done" | wc -l)" -eq 4 ] || fail "only $(ls "$WORK/done" | wc -l) of 4 orders finished before exit"
wait_for 10 "acks recorded" status_cmp 'v["counters"]["orders_acked"]' -eq 4
[ "$(status_field 'v["counters"]["redeliveries"]')" -eq 0 ] || fail "the broker redelivered after a clean drain"
[ "$(status_field 'len(v["workers"])')" -eq 0 ] || fail "the worker did not say bye"
echo "worker_drain: 4 in-flight orders finished after SIGTERM, exit 0, no redelivery"
