#!/usr/bin/env bash
# Issue 15, item 1: a worker the broker lost track of (stopped longer than
# the liveness) comes back still running its order. Orders the broker then
# sends it find no free slot: the worker returns them at once and they must
# go to the idle healthy worker, not bounce back until dead-lettered.
# Needs the broker side of issue 15 (returned nacks spend no attempt and
# prefer another worker; credits count what a heartbeat lists).
source "$(dirname "$0")/../lib.sh"
INTERVAL_MS=500
LIVENESS=3
MORE=10
mkdir -p "$WORK/started"
# Few attempts: a refusal that spends one soon dead-letters the order.
start_broker --heartbeat-interval-ms "$INTERVAL_MS" --heartbeat-liveness "$LIVENESS" --max-attempts 3
# "a-" sorts first: the slow worker wins the broker's ties.
start_worker a-slow --concurrency 1 \
    --exec "touch \"$WORK/started/\$ORDERLY_ORDER_ID\"; sleep 8; cat >/dev/null; echo \"\$ORDERLY_ORDER_ID\" >> \"$WORK/slow.done\""
SLOW=$LAST_PID
wait_for 10 "the slow worker to be ready" status_cmp 'sum(1 for w in v["workers"] if w["ready"])' -eq 1
echo '{"id": "A", "items": [1]}' >"$WORK/first.jsonl"
"$BIN/orderly-producer" send --id stall1 --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/first.jsonl" \
    --timeout 10 >"$WORK/producer1.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer1.log")"
wait_for 10 "the slow worker to run A" test -e "$WORK/started/A"
start_worker b-fast --concurrency 4 --sink "$WORK/sink"
wait_for 10 "both workers ready" status_cmp 'sum(1 for w in v["workers"] if w["ready"])' -eq 2
# Stopped past the broker's liveness: it is declared dead and A requeued.
kill -STOP "$SLOW"
sleep "$(python3 -c "print(($LIVENESS * $INTERVAL_MS + 500) / 1000)")"
kill -CONT "$SLOW"
for n in $(seq 1 "$MORE"); do echo "{\"id\": \"B$n\", \"items\": [$n]}"; done >"$WORK/more.jsonl"
"$BIN/orderly-producer" send --id stall2 --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/more.jsonl" \
    --timeout 10 >"$WORK/producer2.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer2.log")"

# Distinct orders finished by either worker.
done_count() {
    { cut -f2 "$WORK/sink/deliveries.log" 2>/dev/null; cat "$WORK/slow.done" 2>/dev/null; } | sort -u | wc -l
}
# Done when every order is; a dead letter on the way fails at once.
all_done() {
    local dead
    dead=$(status_field 'v["dead_letters"]') || return 1
    [ "$dead" -eq 0 ] || fail "dead letters: $("$BIN/orderly-broker" dlq list --admin "$ADMIN" | head -n 3)"
    [ "$(done_count)" -eq $((MORE + 1)) ]
}
wait_for 40 "all $((MORE + 1)) orders done" all_done
wait_for 15 "nothing pending or in flight" \
    status_cmp 'v["pending_orders"] + v["in_flight_orders"] + v["dead_letters"]' -eq 0
"$BIN/orderly-broker" dlq list --admin "$ADMIN" >"$WORK/dlq.txt"
if grep -q "does not hold it" "$WORK/dlq.txt"; then fail "an order was dead-lettered as refused: $(head -n 3 "$WORK/dlq.txt")"; fi
[ "$(status_field 'v["dead_letters"]')" -eq 0 ] || fail "dead letters: $(head -n 3 "$WORK/dlq.txt")"
acked=$(status_field 'v["counters"]["orders_acked"]')
[ "$acked" -ge $((MORE + 1)) ] || fail "only $acked acknowledgements for $((MORE + 1)) orders"
echo "long_handler_stall: slow worker stalled past liveness while running A; all $((MORE + 1)) orders done, 0 dead letters"
