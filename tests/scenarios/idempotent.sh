#!/usr/bin/env bash
# The same order sent three times (before and after it was processed, and
# across a broker restart): one order processed, three confirms.
source "$(dirname "$0")/../lib.sh"
echo '{"id": "order-1", "items": [{"sku": "A"}, {"sku": "B"}]}' >"$WORK/orders.jsonl"
python3 - "$WORK/expected.json" <<'PY'
import json, sys
json.dump({"order-1": ['{"sku": "A"}', '{"sku": "B"}']}, open(sys.argv[1], "w"))
PY
start_broker --heartbeat-interval-ms 500
start_worker w1 --concurrency 1 --sink "$WORK/sink"
send_once() {
    "$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
        --confirmed-log "$WORK/confirmed.txt" --timeout 10 >>"$WORK/producer.log" 2>&1 || fail "send failed"
}
send_once
wait_for 20 "the first delivery" count_cmp -eq 1 cat "$WORK/sink/deliveries.log"
send_once
kill -KILL "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
start_broker --heartbeat-interval-ms 500
send_once
sleep 2 # a second processing, if any, would land now
[ "$(wc -l <"$WORK/confirmed.txt")" -eq 3 ] || fail "$(wc -l <"$WORK/confirmed.txt") confirms, want 3"
python3 "$HELPERS/check_sinks.py" shop "$WORK/expected.json" --exactly-once "$WORK/sink"
[ "$(status_field 'v["counters"]["orders_deduplicated"]')" -ge 1 ] || fail "the broker did not count the resend"
echo "idempotent: 3 sends, 3 confirms, 1 order processed"
