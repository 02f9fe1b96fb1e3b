#!/usr/bin/env bash
# Dead letters an operator can work with: a handler that always fails
# (exit 3) with --max-attempts 1 dead-letters 3 orders; `dlq list` pages
# them with the total, `dlq show` prints the JSON line the handler got,
# `orders show` the details, `dlq delete` removes one, then `--all` the
# rest, and the list is empty.
source "$(dirname "$0")/../lib.sh"
# show and delete need the admin token; the broker and the commands read
# it from the environment.
(umask 077; head -c 32 /dev/urandom | base64 >"$WORK/admin.token")
export ORDERLY_BROKER_ADMIN_TOKEN="$WORK/admin.token"
for id in o/1 o/2 o/3; do echo "{\"id\": \"$id\", \"items\": [{\"sku\": \"X\"}]}"; done >"$WORK/orders.jsonl"
start_broker --heartbeat-interval-ms 500 --max-attempts 1
start_worker bad --concurrency 1 --exec 'exit 3'
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 10 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 30 "3 dead letters" status_cmp 'v["dead_letters"]' -eq 3
dlq() { "$BIN/orderly-broker" dlq "$@" --admin "$ADMIN"; }

dlq list | tee "$WORK/list.txt"
grep -q "^showing 3 of 3 dead letters$" "$WORK/list.txt" || fail "dlq list does not say 'showing 3 of 3'"
[ "$(grep -c "^shop/o/[123]	attempts 1	first seen .*	last worker bad	.*exit code 3" "$WORK/list.txt")" -eq 3 ] \
    || fail "dlq list does not show the 3 orders with their attempts, worker and reason"
dlq list --limit 2 >"$WORK/page.txt"
grep -q "^next page: orderly-broker dlq list --after shop/o/2 --limit 2$" "$WORK/page.txt" \
    || fail "a page of 2 does not say where the next starts: $(cat "$WORK/page.txt")"

dlq show shop/o/1 | tee "$WORK/show.json"
[ "$(wc -l <"$WORK/show.json")" -eq 1 ] || fail "dlq show printed more than one line"
python3 - "$WORK/show.json" <<'PY' || fail "dlq show is not the handler's JSON for shop/o/1"
import json, sys
v = json.load(open(sys.argv[1]))
assert (v["producer"], v["id"], v["attempt"], v["redelivered"]) == ("shop", "o/1", 1, False), v
assert v["items"] == [{"sku": "X"}], v
PY
"$BIN/orderly-broker" orders show shop/o/2 --admin "$ADMIN" | tee "$WORK/orders-show.txt"
grep -q "^place  *dead$" "$WORK/orders-show.txt" || fail "orders show does not say the order is dead"

dlq delete shop/o/1 | grep -q "^1 dead letters deleted$" || fail "dlq delete of one did not delete it"
if dlq delete shop/o/1 >/dev/null 2>&1; then fail "deleting a dead letter twice succeeded"; fi
if dlq show shop/o/1 >/dev/null 2>&1; then fail "a deleted dead letter is still shown"; fi
dlq delete --all | grep -q "^2 dead letters deleted$" || fail "dlq delete --all did not delete the other 2"
dlq list | tee "$WORK/empty.txt"
grep -q "^showing 0 of 0 dead letters$" "$WORK/empty.txt" || fail "the list is not empty"
dlq delete --all | grep -q "^0 dead letters deleted$" || fail "dlq delete --all with none did not print 0"
[ "$(status_field 'v["counters"]["orders_discarded"]')" -eq 3 ] || fail "the broker did not count 3 discarded"
echo "dlq_admin: 3 dead letters listed with the total, shown as the handler saw them, deleted one and then all"
