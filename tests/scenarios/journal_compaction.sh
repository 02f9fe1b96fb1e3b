#!/usr/bin/env bash
# Compaction bounds disk use: 200,000 orders through the broker with noop
# workers acknowledging; at the end the journal on disk is a small
# fraction of what the broker wrote over the run.
source "$(dirname "$0")/../lib.sh"

ORDERS=${ORDERS:-200000}
SEGMENT_BYTES=${SEGMENT_BYTES:-1048576}
INTAKE="tcp://127.0.0.1:$(free_port)"
FANOUT="tcp://127.0.0.1:$(free_port)"
CONTROL="tcp://127.0.0.1:$(free_port)"

# A short dedup window: acknowledged keys (kept for the window) leave the
# journal soon after the run.
start broker "$BIN/orderly-broker" run --data-dir "$WORK/data" --journal-segment-bytes "$SEGMENT_BYTES" \
    --dedup-window-ms 1000 \
    --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "${ADMIN:-127.0.0.1:0}" --status-interval-secs 2
BROKER_PID=$LAST_PID
for w in 1 2; do
    start "worker$w" "$BIN/orderly-worker" run --id "w$w" --fanout "$FANOUT" --control "$CONTROL" \
        --concurrency 64 --noop
done
"$BIN/orderly-producer" bench --id compact --intake "$INTAKE" --fanout "$FANOUT" \
    --orders "$ORDERS" --items 2 --item-bytes 100 --timeout 30 >"$WORK/bench.log" 2>&1 &
BENCH_PID=$!
# While the load lasts, compaction keeps up too (it must not wait for a
# quiet moment): the journal on disk stays well below what is written.
disk_max=0 samples=0
while kill -0 "$BENCH_PID" 2>/dev/null; do
    disk_now=$(du -sb "$WORK/data/journal" 2>/dev/null | cut -f1) || disk_now=0
    if [ "${disk_now:-0}" -gt "$disk_max" ]; then disk_max=$disk_now; fi
    samples=$((samples + 1))
    sleep 0.5
done
wait "$BENCH_PID" || fail "bench exited $?: $(tail -n 2 "$WORK/bench.log")"
cat "$WORK/bench.log" | tail -n 1

all_acked() { "$BIN/orderly-broker" journal inspect --data-dir "$WORK/data" >"$WORK/inspect.txt" 2>&1 &&
    grep -q "^pending orders: *0$" "$WORK/inspect.txt" && grep -q "^in-flight orders: *0$" "$WORK/inspect.txt"; }
wait_for 120 "every order acknowledged" all_acked || { cat "$WORK/inspect.txt"; fail "orders left"; }
keys_forgotten() { "$BIN/orderly-broker" journal inspect --data-dir "$WORK/data" 2>/dev/null | grep -q "^dedup keys: *0 "; }
wait_for 30 "the dedup window to pass" keys_forgotten
kill -TERM "$BROKER_PID"
wait "$BROKER_PID" || fail "broker exited non-zero on SIGTERM"
line=$(grep "shut down cleanly" "$WORK/broker.log") || fail "no shutdown summary"
written=$(sed -n 's/.*journal_bytes_written=\([0-9]*\).*/\1/p' <<<"$line")
on_disk=$(du -sb "$WORK/data/journal" | cut -f1)
cat "$WORK/inspect.txt"
echo "journal: $written bytes written over the run, $on_disk bytes on disk at the end"
[ "$written" -gt $((ORDERS * 200)) ] || fail "the broker wrote only $written bytes for $ORDERS orders"
# Live data is nil at the end: at most the active segment plus one more.
[ "$on_disk" -le $((3 * SEGMENT_BYTES)) ] || fail "journal holds $on_disk bytes; compaction did not keep up"
[ $((on_disk * 20)) -le "$written" ] || fail "journal on disk ($on_disk) is more than 5% of bytes written ($written)"
echo "journal during the load: at most $disk_max bytes on disk ($samples samples)"
# Without compaction under load it would end the load near all of it.
[ $((disk_max * 4)) -le $((written * 3)) ] || fail "during the load the journal reached $disk_max of $written bytes written"
echo "journal_compaction: on disk $((on_disk * 1000 / written))‰ of bytes written"
