#!/usr/bin/env bash
# kill -9 the producer (with --outbox) during a send, then run it again with
# the same outbox: every order of the input is processed at least once and
# the confirmed log is complete.
source "$(dirname "$0")/../lib.sh"
# Enough that the first run is still sending when it is killed: 5,000 took
# 0.19 s on a fast day, less than one poll of wait_for (0.2 s).
ORDERS=${ORDERS:-30000}
python3 "$HELPERS/orders.py" "$ORDERS" 5 "$WORK/orders.jsonl" "$WORK/expected.json" outbox
start_broker --heartbeat-interval-ms 500
start_worker w1 --concurrency 8 --sink "$WORK/sink"
SEND=("$BIN/orderly-producer" send --id outbox --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl"
    --outbox "$WORK/outbox" --confirmed-log "$WORK/confirmed.txt" --confirm-timeout 1 --timeout 60)
# Started directly (not through a function) so $! is the producer itself.
"${SEND[@]}" >"$WORK/producer.1.log" 2>&1 &
FIRST=$!
PIDS+=("$FIRST")
wait_for 60 "the first run to be under way" count_cmp -ge 500 cat "$WORK/confirmed.txt"
kill -KILL "$FIRST" 2>/dev/null || fail "the first run finished before it could be killed: raise ORDERS"
wait "$FIRST" 2>/dev/null || true
echo "producer killed with $(sort -u "$WORK/confirmed.txt" | wc -l) orders confirmed"
"${SEND[@]}" >"$WORK/producer.2.log" 2>&1 || fail "second run exited $?: $(tail -n 3 "$WORK/producer.2.log")"
grep -h "recovered\|resending" "$WORK/producer.2.log" | head -n 2
tail -n 1 "$WORK/producer.2.log"
[ "$(sort -u "$WORK/confirmed.txt" | wc -l)" -eq "$ORDERS" ] || fail "confirmed log has $(sort -u "$WORK/confirmed.txt" | wc -l) of $ORDERS"
all_delivered() { python3 "$HELPERS/check_sinks.py" outbox "$WORK/expected.json" "$WORK/sink" >"$WORK/check.out" 2>&1; }
wait_for 60 "every order in the sink" all_delivered || { cat "$WORK/check.out"; fail "orders missing"; }
cat "$WORK/check.out"
echo "producer_outbox: all $ORDERS orders processed and confirmed across a producer kill -9"
