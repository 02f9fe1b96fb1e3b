#!/usr/bin/env bash
# A closed stderr never kills a process: a broker started with `2>&-` and
# a worker whose stderr is a pipe nobody reads any more (EPIPE on every log
# line) both log at debug level through a whole run; every order is
# confirmed and processed, the broker is still alive, its journal is sound
# (no log line landed in it through a reused fd 2), and SIGTERM stops it
# with exit 0. Then the broker again, its stderr a broken pipe too.
source "$(dirname "$0")/../lib.sh"
ORDERS=${ORDERS:-200}
python3 "$HELPERS/orders.py" "$ORDERS" 3 "$WORK/orders.jsonl" "$WORK/expected.json"
INTAKE="tcp://127.0.0.1:$(free_port)"
FANOUT="tcp://127.0.0.1:$(free_port)"
CONTROL="tcp://127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"

"$BIN/orderly-broker" run --data-dir "$WORK/data" --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" \
    --admin "$ADMIN" --status-interval-secs 1 --log-level debug >"$WORK/broker.stdout.log" 2>&- &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
wait_for 20 "the broker's admin endpoint" '"$BIN/orderly-broker" status --admin "$ADMIN" --json >/dev/null 2>&1'

# broken_stderr CMD...: runs CMD with stderr the write end of a pipe whose
# read end is closed before CMD starts, so every write fails with EPIPE.
broken_stderr() {
    exec python3 -c 'import os, sys
r, w = os.pipe()
os.close(r)
os.dup2(w, 2)
os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}
broken_stderr "$BIN/orderly-worker" run --id w1 --fanout "$FANOUT" --control "$CONTROL" --heartbeat-interval-ms 500 \
    --concurrency 4 --sink "$WORK/sink" --log-level debug >"$WORK/worker.stdout.log" &
WORKER_PID=$!
PIDS+=("$WORKER_PID")

"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --timeout 30 >"$WORK/producer.log" 2>&1 || fail "producer exited $? ($(tail -n 3 "$WORK/producer.log"))"
grep -q "$ORDERS confirmed, 0 rejected" "$WORK/producer.log" || fail "not every order confirmed: $(tail -n 1 "$WORK/producer.log")"
sink_cmp() { [ "$(sink_count "$WORK/sink/deliveries.log")" -ge "$ORDERS" ]; }
wait_for 30 "every order processed" sink_cmp
sleep 2 # a few periodic status lines, at debug level, into the void
kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker died with its stderr closed"
kill -0 "$WORKER_PID" 2>/dev/null || fail "the worker died with its stderr a broken pipe"
[ "$(status_field 'v["counters"]["orders_acked"]')" -eq "$ORDERS" ] || fail "not every order acknowledged"

kill -TERM "$BROKER_PID"
status=0
wait "$BROKER_PID" || status=$?
[ "$status" -eq 0 ] || fail "the broker exited $status on SIGTERM with its stderr closed"
"$BIN/orderly-broker" journal verify --data-dir "$WORK/data" >"$WORK/verify.log" 2>&1 \
    || fail "the journal is not sound: $(tail -n 3 "$WORK/verify.log")"

# The broker again, on the same data, its stderr a broken pipe.
broken_stderr "$BIN/orderly-broker" run --data-dir "$WORK/data" --intake "$INTAKE" --fanout "$FANOUT" \
    --control "$CONTROL" --admin "$ADMIN" --status-interval-secs 1 --log-level debug >>"$WORK/broker.stdout.log" &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
wait_for 20 "the restarted broker's admin endpoint" '"$BIN/orderly-broker" status --admin "$ADMIN" --json >/dev/null 2>&1'
python3 "$HELPERS/orders.py" 20 3 "$WORK/more.jsonl" "$WORK/more.json" more
"$BIN/orderly-producer" send --id shop --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/more.jsonl" \
    --timeout 30 >"$WORK/producer2.log" 2>&1 || fail "producer exited $? ($(tail -n 3 "$WORK/producer2.log"))"
ORDERS=$((ORDERS + 20))
wait_for 30 "every order processed" sink_cmp
sleep 2
kill -TERM "$BROKER_PID"
status=0
wait "$BROKER_PID" || status=$?
[ "$status" -eq 0 ] || fail "the broker exited $status on SIGTERM with its stderr a broken pipe"
echo "closed_stderr: $ORDERS orders through a broker with stderr closed, then broken, and a worker with a broken stderr pipe"
