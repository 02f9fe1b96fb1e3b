#!/usr/bin/env bash
# Rejects reach the CLI user as a message naming the order and the reason,
# with exit code 3; good orders in the same run are confirmed.
source "$(dirname "$0")/../lib.sh"
big=$(python3 -c 'print("\"" + "x" * 300 + "\"")')
{
    echo '{"id": "small", "items": [1, 2]}'
    echo "{\"id\": \"too-big\", \"items\": [$big]}"
    echo '{"id": "too-many", "items": [1, 2, 3, 4, 5]}'
} >"$WORK/orders.jsonl"
start_broker --order-bytes-max 200 --order-items-max 4
if "$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --confirmed-log "$WORK/confirmed.txt" --timeout 10 >"$WORK/producer.out" 2>"$WORK/producer.err"; then
    fail "send succeeded although orders were rejected"
else
    code=$?
fi
cat "$WORK/producer.out" "$WORK/producer.err"
[ "$code" -eq 3 ] || fail "exit code $code, want 3"
grep -q 'rejected order "too-big": order too large: .*limit is 200' "$WORK/producer.err" || fail "no message for too-big"
grep -q 'rejected order "too-many": order too large: .*limit of 4 items' "$WORK/producer.err" || fail "no message for too-many"
[ "$(cat "$WORK/confirmed.txt")" = "small" ] || fail "confirmed: $(cat "$WORK/confirmed.txt")"
echo "rejects: too-big and too-many rejected with their reasons; small confirmed"
