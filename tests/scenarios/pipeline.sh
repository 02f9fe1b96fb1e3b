#!/usr/bin/env bash
# 1000 orders of 10 items through a broker and two sink workers on
# loopback: every order arrives complete, byte-identical, exactly once.
source "$(dirname "$0")/../lib.sh"

ORDERS=${ORDERS:-1000}
INTAKE="tcp://127.0.0.1:$(free_port)"
FANOUT="tcp://127.0.0.1:$(free_port)"
CONTROL="tcp://127.0.0.1:$(free_port)"

python3 "$HELPERS/orders.py" "$ORDERS" 10 "$WORK/orders.jsonl" "$WORK/expected.json"

start broker "$BIN/orderly-broker" run --data-dir "$WORK/data" \
    --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "${ADMIN:-127.0.0.1:0}" --status-interval-secs 1
for w in 1 2; do
    start "worker$w" "$BIN/orderly-worker" run --id "w$w" --fanout "$FANOUT" --control "$CONTROL" \
        --concurrency 4 --sink "$WORK/sink$w"
done

"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" \
    --file "$WORK/orders.jsonl" --confirmed-log "$WORK/confirmed.txt" --timeout 30 \
    >"$WORK/producer.log" 2>&1 || fail "producer exited $? ($(tail -n 3 "$WORK/producer.log"))"
grep -q "$ORDERS confirmed, 0 rejected" "$WORK/producer.log" || fail "not every order confirmed: $(tail -n 1 "$WORK/producer.log")"

delivered() {
    local n=0
    for w in 1 2; do
        [ -f "$WORK/sink$w/deliveries.log" ] && n=$((n + $(wc -l <"$WORK/sink$w/deliveries.log")))
    done
    [ "$n" -ge "$ORDERS" ]
}
wait_for 60 "$ORDERS deliveries" delivered
sleep 1 # a duplicate, if any, would land now
python3 "$HELPERS/check_sinks.py" shop "$WORK/expected.json" --exactly-once "$WORK/sink1" "$WORK/sink2"
[ "$(wc -l <"$WORK/confirmed.txt")" -eq "$ORDERS" ] || fail "confirmed log has $(wc -l <"$WORK/confirmed.txt") lines"
echo "pipeline: $ORDERS orders delivered exactly once, byte-identical"
