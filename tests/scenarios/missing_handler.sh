#!/usr/bin/env bash
# A worker whose --exec command does not exist (exit 127) must not destroy
# the queue: it returns its orders unrun (no attempt spent), shows as broken
# in `status`, logs one error line rather than one per order, and probes
# again with backoff; once a healthy worker joins, every order is processed
# and none is dead-lettered.
# Needs the broker side of issue 15 (returned nacks requeue without an
# attempt; no dispatch to a broken worker).
source "$(dirname "$0")/../lib.sh"
ORDERS=200
python3 "$HELPERS/orders.py" "$ORDERS" 1 "$WORK/orders.jsonl" "$WORK/expected.json" missing
start_broker --heartbeat-interval-ms 500
start_worker broken --concurrency 4 --exec /nonexistent/handler
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 20 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 10 "the worker to show as broken" \
    status_cmp 'sum(1 for w in v["workers"] if w["id"] == "broken" and w.get("broken"))' -eq 1
# Long enough for several probes (1 s, 2 s, ...) and for a broker that
# kept dispatching to burn every attempt.
sleep 5
[ "$(status_field 'v["dead_letters"]')" -eq 0 ] || fail "orders were dead-lettered: $("$BIN/orderly-broker" dlq list --admin "$ADMIN" | head -n 3)"
[ "$("$BIN/orderly-broker" dlq list --admin "$ADMIN" | grep -c '	attempts ')" -eq 0 ] || fail "dlq list is not empty"
[ "$(status_field 'v["counters"]["orders_acked"]')" -eq 0 ] || fail "a missing handler acknowledged orders"
reason=$(status_field '[w["broken"] for w in v["workers"] if w["id"] == "broken"][0]')
case "$reason" in *127*) ;; *) fail "the broken reason does not name exit code 127: $reason" ;; esac
loud=$(grep -c " ERROR " "$WORK/broken.log" || true)
[ "$loud" -eq 1 ] || fail "expected one error line from the broken worker, found $loud"
grep " ERROR " "$WORK/broken.log" | grep -q "/nonexistent/handler" || fail "the error line does not name the command"
warnings=$(grep -c " WARN " "$WORK/broken.log" || true)
[ "$warnings" -le 10 ] || fail "the broken worker wrote $warnings warnings (one per order?)"

start_worker healthy --concurrency 4 --sink "$WORK/sink"
wait_for 40 "all orders acknowledged" status_cmp 'v["counters"]["orders_acked"]' -eq "$ORDERS"
[ "$(sink_count "$WORK/sink/deliveries.log")" -eq "$ORDERS" ] || fail "the sink holds $(sink_count "$WORK/sink/deliveries.log") of $ORDERS orders"
[ "$(status_field 'v["dead_letters"]')" -eq 0 ] || fail "orders were dead-lettered after the healthy worker joined"
echo "missing_handler: broken worker returned its orders ($warnings warnings, 1 error line); all $ORDERS processed by a healthy one, 0 dead letters"
