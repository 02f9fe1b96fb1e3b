#!/usr/bin/env bash
# A handler that hangs is cut off at --handler-timeout-ms: its whole process
# group (grandchildren too) is killed, the attempt is failed with the
# reason, and after --max-attempts the order is a dead letter naming the
# timeout.
source "$(dirname "$0")/../lib.sh"
echo '{"id": "hangs/1", "items": [{"sku": "H"}]}' >"$WORK/orders.jsonl"
start_broker --heartbeat-interval-ms 500 --max-attempts 2
# Each run records its process group (the shell's pid: the worker starts it
# as a group leader), then hangs in a background and a foreground sleep.
start_worker hung --concurrency 1 --handler-timeout-ms 1000 \
    --exec "echo \$\$ >> \"$WORK/groups\"; sleep 30 & sleep 30"
started=$SECONDS
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 10 >"$WORK/producer.log" 2>&1 || fail "producer: $(tail -n 2 "$WORK/producer.log")"
wait_for 15 "a dead letter" status_cmp 'v["dead_letters"]' -eq 1
took=$((SECONDS - started))
[ "$took" -le 12 ] || fail "dead-lettered only after ${took}s; two 1 s attempts should take a few"
"$BIN/orderly-broker" dlq list --admin "$ADMIN"
"$BIN/orderly-broker" dlq list --admin "$ADMIN" --json >"$WORK/dlq.json"
python3 - "$WORK/dlq.json" <<'PY' || fail "dlq list does not show 2 attempts ending in the timeout"
import json, sys
[letter] = json.load(open(sys.argv[1]))
assert (letter["producer"], letter["id"], letter["attempts"]) == ("shop", "hangs/1", 2), letter
assert "handler timed out after 1000 ms (process group killed)" in letter["reason"], letter
PY
[ "$(wc -l <"$WORK/groups")" -eq 2 ] || fail "expected 2 runs, got $(wc -l <"$WORK/groups")"

# Live (non-zombie) processes in process group $1.
group_members() {
    python3 - "$1" <<'PY'
import os, sys
group = sys.argv[1]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] != "Z" and fields[2] == group:
        print(pid)
PY
}
for group in $(cat "$WORK/groups"); do
    wait_for 5 "process group $group to be gone" count_cmp -eq 0 group_members "$group"
done
echo "handler_timeout: 2 runs cut off at 1 s with their process groups, dead-lettered with the reason in ${took}s"
