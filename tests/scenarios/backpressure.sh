#!/usr/bin/env bash
# At its pending-orders bound the broker stops reading intake: the producer
# reports backpressure and exits non-zero; nothing accepted is dropped, and
# a worker arriving later drains the backlog.
source "$(dirname "$0")/../lib.sh"
python3 "$HELPERS/orders.py" 50 2 "$WORK/orders.jsonl" "$WORK/expected.json" bp
start_broker --pending-orders-max 5
# One order per intake message (--batch-bytes 0): the bound is checked per
# message (docs/PROTOCOL.md, the `orders` message), so a producer that
# batched all 50 due orders into its first message would have them all
# taken below the bound; one by one, the broker stops exactly at it.
if "$BIN/orderly-producer" send --id bp --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --batch-bytes 0 --confirmed-log "$WORK/confirmed.txt" --timeout 2 >"$WORK/producer.log" 2>&1; then
    fail "the producer succeeded although the broker was full"
else
    code=$?
fi
cat "$WORK/producer.log"
[ "$code" -eq 4 ] || fail "producer exited $code, want 4 (timed out)"
grep -q "backpressure" "$WORK/producer.log" || fail "the producer's message does not name backpressure"
confirmed=$(wc -l <"$WORK/confirmed.txt")
[ "$confirmed" -eq 5 ] || fail "$confirmed orders confirmed, want the bound (5)"
[ "$(status_field 'v["pending_orders"]')" -eq "$confirmed" ] ||
    fail "the broker holds $(status_field 'v["pending_orders"]') orders, but confirmed $confirmed"
start_worker w1 --concurrency 2 --sink "$WORK/sink"
# Orders the producer gave up on may already sit in the broker's socket
# queue: they are read (and delivered) once there is room — not dropped.
wait_for 30 "the backlog drained" status_cmp 'v["pending_orders"] + v["in_flight_orders"]' -eq 0
python3 "$HELPERS/check_sinks.py" bp "$WORK/expected.json" --exactly-once --only "$WORK/confirmed.txt" "$WORK/sink"
echo "backpressure: producer stopped at the bound with a clear message; every confirmed order was delivered"
