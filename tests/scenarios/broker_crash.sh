#!/usr/bin/env bash
# kill -9 the broker at random moments (at least 10 times) while 20,000
# orders flow, restarting it on the same data directory each time. At the
# end every order the broker confirmed (sealed and fsynced) has been
# processed at least once, item-for-item identical; duplicates are counted.
# Chunks alternate between packed frames (the producer's default) and one
# frame per item, so both journal paths (one Accepted record per order;
# Begun/ItemStored/Sealed) meet the crashes. BROKER_FLAGS adds broker flags
# (payload_spill_crash.sh runs this with almost no payload cache).
source "$(dirname "$0")/../lib.sh"

ORDERS=${ORDERS:-20000}
CHUNK=${CHUNK:-1000}
KILLS=${KILLS:-10}
INTAKE="tcp://127.0.0.1:$(free_port)"
FANOUT="tcp://127.0.0.1:$(free_port)"
CONTROL="tcp://127.0.0.1:$(free_port)"

python3 "$HELPERS/orders.py" "$ORDERS" 10 "$WORK/orders.jsonl" "$WORK/expected.json" crash
split -l "$CHUNK" -d -a 3 "$WORK/orders.jsonl" "$WORK/chunk."

BROKER_PID=
start_broker() {
    start "broker.$1" "$BIN/orderly-broker" run --data-dir "$WORK/data" \
        --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "${ADMIN:-127.0.0.1:0}" --status-interval-secs 1 \
        ${BROKER_FLAGS:-}
    BROKER_PID=$LAST_PID
}
start_broker 0
for w in 1 2; do
    start "worker$w" "$BIN/orderly-worker" run --id "w$w" --fanout "$FANOUT" --control "$CONTROL" \
        --concurrency 4 --sink "$WORK/sink$w"
done

# Producers, one chunk after another; a chunk cut by a crash times out
# (exit 4) and its unconfirmed orders are simply not in the confirmed log.
(
    n=0
    for chunk in "$WORK"/chunk.*; do
        framing=()
        [ $((n % 2)) -eq 0 ] || framing=(--one-frame-per-item)
        n=$((n + 1))
        "$BIN/orderly-producer" send --id crash --intake "$INTAKE" --fanout "$FANOUT" --file "$chunk" \
            --confirmed-log "$WORK/confirmed.txt" --confirm-timeout 1 --timeout 3 "${framing[@]}" \
            >>"$WORK/producer.log" 2>&1 || true
    done
) &
PRODUCERS=$!
PIDS+=("$PRODUCERS")

RANDOM=20261121
kills=0
while [ "$kills" -lt "$KILLS" ]; do
    sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
    sleep "$((RANDOM % 2))"
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    kills=$((kills + 1))
    confirmed=$(wc -l <"$WORK/confirmed.txt" 2>/dev/null || echo 0)
    echo "kill $kills: broker killed with $confirmed orders confirmed so far"
    sleep 0.3
    start_broker "$kills"
    # A start that refuses (e.g. a corrupt journal) must fail the test.
    sleep 0.5
    kill -0 "$BROKER_PID" 2>/dev/null || fail "broker did not restart after kill $kills: $(tail -n 5 "$WORK/broker.$kills.log")"
done
wait "$PRODUCERS" || true
grep -h "^sent" "$WORK/producer.log" | tail -n 3

confirmed=$(sort -u "$WORK/confirmed.txt" | wc -l)
[ "$confirmed" -gt 0 ] || fail "no order was confirmed"
all_delivered() {
    python3 "$HELPERS/check_sinks.py" crash "$WORK/expected.json" --only "$WORK/confirmed.txt" \
        "$WORK/sink1" "$WORK/sink2" >"$WORK/check.out" 2>&1
}
wait_for 120 "every confirmed order delivered" all_delivered || { cat "$WORK/check.out"; fail "confirmed orders missing"; }
cat "$WORK/check.out"
grep -q "WARN.*torn tail" "$WORK"/broker.*.log && echo "(some restarts cut off a torn tail, as designed)"
if [ -n "${EXPECT_PAYLOAD_READS:-}" ]; then
    # The most payload reads any broker process reported in its status lines.
    reads=$(grep -ho 'payload_reads=[0-9]*' "$WORK"/broker.*.log | cut -d= -f2 | sort -n | tail -n 1)
    [ "${reads:-0}" -gt 0 ] || fail "no payload was read back from the journal: the cache bound was never reached"
    echo "payloads read back from the journal: up to $reads per broker process"
fi
echo "broker_crash: $kills kills, $confirmed orders confirmed, all delivered"
