#!/usr/bin/env bash
# A group of three brokers (`--group`, issue 16's preview) loses its leader
# to kill -9 while a producer sends 3,000 orders at a modest pace. The
# producer and the worker take the group file too (`--group`) and follow
# the new leader: the producer finishes with every order confirmed (exit
# 0), and every confirmed order reaches the worker's sink, item-for-item
# identical. Prints the time from the kill to the next confirm.
source "$(dirname "$0")/../lib.sh"

ORDERS=${ORDERS:-3000}
RATE=${RATE:-400} # orders per second fed to the producer: sending lasts ~7 s
KILL_AFTER=${KILL_AFTER:-600} # confirmed orders before the leader is killed

python3 "$HELPERS/orders.py" "$ORDERS" 3 "$WORK/orders.jsonl" "$WORK/expected.json" failover

GROUP="$WORK/group.toml"
ADMINS=()
for id in 1 2 3; do
    ADMINS+=("127.0.0.1:$(free_port)")
    cat >>"$GROUP" <<EOF
[[member]]
id = $id
intake = "tcp://127.0.0.1:$(free_port)"
fanout = "tcp://127.0.0.1:$(free_port)"
control = "tcp://127.0.0.1:$(free_port)"
peer = "tcp://127.0.0.1:$(free_port)"
admin = "${ADMINS[$((id - 1))]}"
EOF
done

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }

MEMBER_PIDS=()
for id in 1 2 3; do
    start "member$id" "$BIN/orderly-broker" run --group "$GROUP" --node-id "$id" --data-dir "$WORK/data$id" \
        --status-interval-secs 1
    MEMBER_PIDS+=("$LAST_PID")
done

# role_of ID: the member's role in /status (leader, catching_up, follower).
role_of() {
    "$BIN/orderly-broker" status --admin "${ADMINS[$(($1 - 1))]}" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["group"]["role"])'
}
# Sets LEADER to the member serving as leader; fails while there is none.
find_leader() {
    local id
    for id in "$@"; do
        if [ "$(role_of "$id" 2>/dev/null)" = leader ]; then LEADER=$id; return 0; fi
    done
    return 1
}
wait_for 30 "a leader" find_leader 1 2 3
echo "member $LEADER leads"

start worker "$BIN/orderly-worker" run --id w1 --group "$GROUP" --concurrency 4 --sink "$WORK/sink" \
    --heartbeat-interval-ms 500

# The orders are fed at RATE per second through a FIFO, so the kill lands
# mid-stream (the producer reads --file as it sends).
mkfifo "$WORK/orders.fifo"
start pacer python3 -c '
import sys, time
rate = float(sys.argv[1])
with open(sys.argv[3], "w") as out:
    start = time.monotonic()
    for n, line in enumerate(open(sys.argv[2])):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(line)
        out.flush()
' "$RATE" "$WORK/orders.jsonl" "$WORK/orders.fifo"
start producer "$BIN/orderly-producer" send --id failover --group "$GROUP" --file "$WORK/orders.fifo" \
    --confirmed-log "$WORK/confirmed.txt"
PRODUCER=$LAST_PID

confirmed() { cat "$WORK/confirmed.txt" 2>/dev/null | wc -l; }
wait_for 30 "$KILL_AFTER confirmed orders" '[ "$(confirmed)" -ge "$KILL_AFTER" ]'
find_leader 1 2 3 || fail "no leader before the kill"
"$BIN/orderly-broker" group status --group "$GROUP" >"$WORK/group-before.txt" ||
    fail "group status before the kill: $(cat "$WORK/group-before.txt")"
[ "$(grep -c ' leader ' "$WORK/group-before.txt")" -ge 1 ] && grep -q "^member $LEADER  *leader " "$WORK/group-before.txt" ||
    fail "group status does not show member $LEADER leading: $(cat "$WORK/group-before.txt")"
before=$(confirmed)
OLD_PID=${MEMBER_PIDS[$((LEADER - 1))]}
kill -KILL "$OLD_PID"
killed_at=$(now)
{ wait "$OLD_PID" || true; } 2>/dev/null # (bash's "Killed" notice too)
OLD_LEADER=$LEADER
echo "killed leader $OLD_LEADER with $before orders confirmed"

# Confirms already on their way when the leader died may still arrive; the
# failover is the stall that follows: polled every 50 ms (bounded: 30 s),
# it ends with the first confirm after at least STALL_MIN s without one.
STALL_MIN=0.5
last=$before last_at=$killed_at resumed_at=
for _ in $(seq 1 600); do
    sleep 0.05
    count=$(confirmed) at=$(now)
    [ "$count" -gt "$last" ] || continue
    if python3 -c "import sys; sys.exit(0 if $at - $last_at >= $STALL_MIN else 1)"; then resumed_at=$at; break; fi
    last=$count last_at=$at
    [ "$count" -lt "$ORDERS" ] || break
done
survivors=()
for id in 1 2 3; do [ "$id" = "$OLD_LEADER" ] || survivors+=("$id"); done
wait_for 30 "a new leader" find_leader "${survivors[@]}"
# group status: the new leader leads, the old one is unreachable, a majority
# answers (exit 0).
wait_for 10 "group status to show the new leader" \
    '"$BIN/orderly-broker" group status --group "$GROUP" >"$WORK/group-after.txt"'
cat "$WORK/group-after.txt"
grep -q "^member $LEADER  *leader " "$WORK/group-after.txt" && grep -q "^member $OLD_LEADER  *unreachable " "$WORK/group-after.txt" ||
    fail "group status after the kill: $(cat "$WORK/group-after.txt")"
if [ -n "$resumed_at" ]; then
    echo "confirms resumed $(python3 -c "print(f'{$resumed_at - $killed_at:.2f}')") s after the kill (new leader: member $LEADER)"
else
    echo "no stall of ${STALL_MIN} s in the confirms after the kill (new leader: member $LEADER)"
fi

deadline=$((SECONDS + 40))
while kill -0 "$PRODUCER" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the producer did not finish within 40 s of the kill"
    sleep 0.2
done
wait "$PRODUCER" || fail "the producer exited with $?: $(tail -n 5 "$WORK/producer.log")"
count=$(sort -u "$WORK/confirmed.txt" | wc -l)
[ "$count" -eq "$ORDERS" ] || fail "$count of $ORDERS orders confirmed"

all_delivered() {
    python3 "$HELPERS/check_sinks.py" failover "$WORK/expected.json" --only "$WORK/confirmed.txt" \
        "$WORK/sink" >"$WORK/check.out" 2>&1
}
wait_for 30 "every confirmed order delivered" all_delivered || { cat "$WORK/check.out"; fail "confirmed orders missing"; }
cat "$WORK/check.out"
echo "group_failover: leader $OLD_LEADER killed, $count orders confirmed, all delivered"
