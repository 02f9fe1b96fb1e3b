#!/usr/bin/env bash
# SIGSTOP a worker for longer than the ack deadline: its orders move to the
# other worker; SIGCONT later (late acks, a re-announced worker) loses nothing.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-300}
python3 "$HELPERS/orders.py" "$ORDERS" 3 "$WORK/orders.jsonl" "$WORK/expected.json" stop
start_broker --heartbeat-interval-ms 500 --ack-timeout-ms 2000
start_worker w1 --concurrency 2 --exec "sleep 0.05; cat > /dev/null" ; W1=$LAST_PID
start_worker w2 --concurrency 2 --sink "$WORK/sink2"
wait_for 20 "two workers" status_cmp 'sum(w["ready"] for w in v["workers"])' -eq 2
"$BIN/orderly-producer" send --id stop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 30 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 20 "w1 to hold orders" status_cmp '[w["in_flight"] for w in v["workers"] if w["id"]=="w1"][0]' -gt 0
kill -STOP "$W1"
echo "stopped w1"
sleep 4 # > liveness (1.5 s) and > ack deadline (2 s)
[ "$(status_field 'v["counters"]["redeliveries"]')" -ge 1 ] || fail "nothing was redelivered while w1 was stopped"
kill -CONT "$W1"
echo "continued w1"
wait_for 60 "every order acknowledged" status_cmp 'v["counters"]["orders_acked"]' -ge "$ORDERS"
sleep 1
[ "$(status_field 'v["pending_orders"] + v["in_flight_orders"] + v["dead_letters"]')" -eq 0 ] || fail "orders left"
echo "stop: redeliveries $(status_field 'v["counters"]["redeliveries"]'), duplicate acks $(status_field 'v["counters"]["duplicate_acks"]')"
echo "worker_stop: all $ORDERS orders acknowledged; w1's were moved while it was stopped"
