#!/usr/bin/env bash
# A handler that always fails: the order is dead-lettered after max_attempts
# and shows in `dlq list`; it survives a broker restart; `dlq retry` with a
# fixed handler finishes it.
source "$(dirname "$0")/../lib.sh"
# `dlq retry` (a POST) needs the admin token; the broker and the commands
# both read it from the environment.
(umask 077; head -c 32 /dev/urandom | base64 >"$WORK/admin.token")
export ORDERLY_BROKER_ADMIN_TOKEN="$WORK/admin.token"
echo '{"id": "poison/1", "items": [{"sku": "X"}]}' >"$WORK/orders.jsonl"
start_broker --heartbeat-interval-ms 500 --max-attempts 3
start_worker bad --concurrency 1 --exec 'echo "cannot handle $ORDERLY_ORDER_ID" >&2; exit 7'
BAD=$LAST_PID
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 10 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 30 "a dead letter" status_cmp 'v["dead_letters"]' -eq 1
"$BIN/orderly-broker" dlq list --admin "$ADMIN" | tee "$WORK/dlq.txt"
grep -q "^shop/poison/1	attempts 3	.*exit code 7" "$WORK/dlq.txt" || fail "dlq list does not show the order with 3 attempts and its reason"
kill -TERM "$BAD"
wait "$BAD" || true
# Dead letters persist across a restart (they are in the journal).
kill -KILL "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
start_broker --heartbeat-interval-ms 500 --max-attempts 3
[ "$(status_field 'v["dead_letters"]')" -eq 1 ] || fail "the dead letter did not survive a restart"
start_worker good --concurrency 1 --sink "$WORK/sink"
"$BIN/orderly-broker" dlq retry --admin "$ADMIN" "shop/poison/1" | tee "$WORK/retry.txt"
grep -q "^1 dead letters returned" "$WORK/retry.txt" || fail "retry did not revive it"
wait_for 20 "the retried order in the sink" count_cmp -eq 1 cat "$WORK/sink/deliveries.log"
[ "$(status_field 'v["dead_letters"]')" -eq 0 ] || fail "still dead-lettered"
if "$BIN/orderly-broker" dlq retry --admin "$ADMIN" "shop/nope" >/dev/null 2>&1; then fail "retry of an unknown id succeeded"; fi
echo "dead_letters: dead-lettered after 3 attempts, survived a restart, retried and delivered"
