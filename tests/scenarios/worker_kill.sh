#!/usr/bin/env bash
# kill -9 one of three workers mid-run: its orders go to the other two after
# the liveness timeout; every order is delivered, none lost.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-2000}
python3 "$HELPERS/orders.py" "$ORDERS" 5 "$WORK/orders.jsonl" "$WORK/expected.json" kill
start_broker --heartbeat-interval-ms 500
declare -A WORKER_PID
# A slow handler (about 3 s for the run) so the victim surely holds orders.
for w in 1 2 3; do
    start_worker "w$w" --concurrency 2 \
        --exec "sleep 0.02; cat > \"\$(mktemp \"$WORK/out.XXXXXXXX\")\""
    WORKER_PID[w$w]=$LAST_PID
done
"$BIN/orderly-producer" send --id kill --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --confirmed-log "$WORK/confirmed.txt" --timeout 30 >"$WORK/producer.log" 2>&1 &
PRODUCER=$!
PIDS+=("$PRODUCER")
wait_for 30 "the run to be under way" status_cmp 'v["counters"]["orders_acked"]' -gt 100
held=$(status_field '[w["in_flight"] for w in v["workers"] if w["id"]=="w2"][0]')
[ "$held" -gt 0 ] || fail "w2 held nothing when it was to be killed"
kill -KILL "${WORKER_PID[w2]}"
echo "killed worker w2 while it held $held orders"
wait "$PRODUCER" || fail "producer exited $?: $(tail -n 2 "$WORK/producer.log")"
wait_for 60 "every order acknowledged" status_cmp 'v["counters"]["orders_acked"]' -ge "$ORDERS"
[ "$(status_field 'v["counters"]["workers_expired"]')" -ge 1 ] || fail "the killed worker was never declared dead"
[ "$(status_field 'v["pending_orders"] + v["in_flight_orders"] + v["dead_letters"]')" -eq 0 ] || fail "orders left"
# Every order's JSON reached a handler (at least once).
python3 - "$WORK" "$WORK/expected.json" <<'PY' || fail "some orders never reached a handler"
import glob, json, sys
work, expected = sys.argv[1], json.load(open(sys.argv[2]))
seen, cut = set(), 0
for path in glob.glob(work + "/out.*"):
    try:
        seen.add(json.load(open(path))["id"])
    except ValueError:
        cut += 1  # a handler killed together with its worker mid-write
missing = set(expected) - seen
print(f"handlers saw {len(seen)} distinct orders of {len(expected)} complete ({cut} cut-off outputs of the killed worker)")
sys.exit(1 if missing else 0)
PY
echo "worker_kill: all $ORDERS orders delivered after losing a worker that held $held"
