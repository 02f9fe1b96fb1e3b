#!/usr/bin/env bash
# Figures for issue 15 (redelivery an operator can live with), on the
# broker's defaults: prints what a broken deployment does to a backlog and
# how far apart the attempts of a failing order land. Not a pass/fail test
# (tests/scenarios/missing_handler.sh and handler_timeout.sh are).
#
#   bench/redelivery.sh [--orders N]    (default 1005, as measured in the issue)
source "$(dirname "$0")/../tests/lib.sh"
ORDERS=1005
while [ $# -gt 0 ]; do
    case $1 in
    --orders) ORDERS=$2; shift 2 ;;
    *) echo "usage: bench/redelivery.sh [--orders N]" >&2; exit 2 ;;
    esac
done
python3 "$HELPERS/orders.py" "$ORDERS" 1 "$WORK/orders.jsonl" "$WORK/expected.json" backlog

# 1. A mistyped --exec path (exit 127) in front of a backlog.
start_broker
start_worker mistyped --concurrency 4 --exec /usr/local/bin/handle-order-typo
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 30 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
sleep 10
dead=$(status_field 'v["dead_letters"]')
returned=$(status_field 'v["counters"].get("orders_returned", 0)')
state=$(status_field '[w.get("broken") for w in v["workers"]][0]')
lines=$(wc -l <"$WORK/mistyped.log")
errors=$(grep -c " ERROR " "$WORK/mistyped.log" || true)
broker_lines=$(grep -c " INFO .*worker broken" "$WORK/broker.1.log" || true)
echo "mistyped --exec, $ORDERS orders, 10 s: dead letters $dead, orders returned unrun $returned," \
    "worker log lines $lines ($errors errors), broker 'worker broken' lines $broker_lines; status says broken: $state"
start_worker healthy --concurrency 8 --noop
started=$SECONDS
wait_for 60 "the backlog to be processed" status_cmp 'v["counters"]["orders_acked"]' -eq "$ORDERS"
echo "a healthy worker joined: all $ORDERS acknowledged in $((SECONDS - started)) s, dead letters $(status_field 'v["dead_letters"]')"
stop_started

# 2. A handler that always fails: when do its attempts land?
PIDS=()
DATA_DIR="$WORK/data2"
unset INTAKE FANOUT CONTROL ADMIN
start_broker
start_worker failing --concurrency 1 --exec 'exit 3'
echo '{"id": "fails/1", "items": [{"sku": "F"}]}' | "$BIN/orderly-producer" send --id shop --intake "$INTAKE" \
    --fanout "$FANOUT" --timeout 10 >"$WORK/producer2.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer2.log")"
started=$SECONDS
wait_for 60 "the failing order to be dead-lettered" status_cmp 'v["dead_letters"]' -eq 1
"$BIN/orderly-broker" dlq list --admin "$ADMIN" --json | python3 -c '
import json, sys
[d] = json.load(sys.stdin)
span = (d["dead_since_unix_ms"] - d["first_seen_unix_ms"]) / 1000
attempts = d["attempts"]
print(f"a handler that always fails: {attempts} attempts spread over {span:.1f} s before the dead letter"
      " (backoff 1 s doubling, jitter [1/2, 1])")'
grep " INFO .*order dead-lettered" "$WORK/broker.$BROKER_STARTS.log" | tail -n 1 | cut -c1-220
