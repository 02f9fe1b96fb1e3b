#!/usr/bin/env bash
# kill -9 the broker during one 20,000-order send and restart it a second
# later: the producer's resends bring every order to the sink; the
# confirmed log and the sink agree; nothing is processed that was never sent.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-20000}
python3 "$HELPERS/orders.py" "$ORDERS" 5 "$WORK/orders.jsonl" "$WORK/expected.json" resend
start_broker --heartbeat-interval-ms 500
for w in 1 2; do start_worker "w$w" --concurrency 8 --sink "$WORK/sink$w"; done
"$BIN/orderly-producer" send --id resend --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --confirmed-log "$WORK/confirmed.txt" --confirm-timeout 1 --timeout 60 >"$WORK/producer.log" 2>&1 &
PRODUCER=$!
PIDS+=("$PRODUCER")
wait_for 60 "the send to be under way" count_cmp -ge 3000 cat "$WORK/confirmed.txt"
kill -KILL "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
echo "broker killed with $(wc -l <"$WORK/confirmed.txt") orders confirmed"
sleep 1
start_broker --heartbeat-interval-ms 500
wait "$PRODUCER" || fail "producer exited $?: $(tail -n 3 "$WORK/producer.log")"
tail -n 1 "$WORK/producer.log"
[ "$(sort -u "$WORK/confirmed.txt" | wc -l)" -eq "$ORDERS" ] || fail "only $(sort -u "$WORK/confirmed.txt" | wc -l) orders confirmed"
all_delivered() {
    python3 "$HELPERS/check_sinks.py" resend "$WORK/expected.json" "$WORK/sink1" "$WORK/sink2" >"$WORK/check.out" 2>&1
}
wait_for 120 "every order in the sinks" all_delivered || { cat "$WORK/check.out"; fail "orders missing"; }
cat "$WORK/check.out"
echo "producer_resend: all $ORDERS orders confirmed and delivered across a broker kill -9"
