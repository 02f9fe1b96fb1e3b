#!/usr/bin/env bash
# A full disk is backpressure, not a crash (issue 13): the broker's data
# directory is on a small ext4 filesystem made here, filled up while a
# producer sends. The broker stays up (same PID), says so in status and
# /metrics, the producer reports the broker's reason (not "is the broker
# running?"); once the filler is deleted the broker resumes by itself, and
# every confirmed order is delivered byte-identical.
source "$(dirname "$0")/../lib.sh"

if [ "$(id -u)" != 0 ] || ! command -v mkfs.ext4 >/dev/null; then
    echo "disk_full: skipped (needs root and mkfs.ext4 to loop-mount a small filesystem)"
    exit 0
fi

MNT="$WORK/mnt"
# Runs before lib.sh's cleanup (which it then calls with the same status):
# stop what we started, so the filesystem is not busy, then unmount it.
unmount_disk() {
    local status=$?
    stop_started 50
    if mountpoint -q "$MNT"; then
        umount "$MNT" 2>/dev/null || umount -l "$MNT" || echo "disk_full: could not unmount $MNT" >&2
    fi
    # cleanup reads the status from $?; `|| cleanup` keeps `set -e` from
    # ending this handler at the `(exit 1)`.
    if [ "$status" = 0 ]; then cleanup; else (exit "$status") || cleanup; fi
}
trap unmount_disk EXIT

truncate -s 40M "$WORK/disk.img"
mkfs.ext4 -q -F "$WORK/disk.img"
mkdir -p "$MNT"
mount -o loop "$WORK/disk.img" "$MNT"

python3 "$HELPERS/orders.py" 10000 20 "$WORK/orders.jsonl" "$WORK/expected.json" full
python3 "$HELPERS/orders.py" 50 2 "$WORK/after.jsonl" "$WORK/expected_after.json" after
DATA_DIR="$MNT/data" start_broker --journal-segment-bytes $((4 * 1024 * 1024))
pid=$BROKER_PID

start producer "$BIN/orderly-producer" send --id full --intake "$INTAKE" --fanout "$FANOUT" \
    --file "$WORK/orders.jsonl" --confirmed-log "$WORK/confirmed.txt" --timeout 4
producer=$LAST_PID
wait_for 60 "orders confirmed before the disk fills" count_cmp -ge 100 cat "$WORK/confirmed.txt"
# Fill every free block (root may use the reserved ones too).
dd if=/dev/zero of="$MNT/filler" bs=1M status=none 2>/dev/null || true
sync

wait_for 60 "the broker to report the full disk" status_cmp 'v["disk_full"]' = True
kill -0 "$pid" 2>/dev/null || fail "the broker exited on a full disk"
[ "$(status_field 'v["intake_closed"]["reason"]')" = disk_full ] || fail "intake_closed does not say disk_full"
"$BIN/orderly-broker" status --admin "$ADMIN" | grep -q "^intake .*closed (disk_full)" ||
    fail "orderly-broker status does not show the closed intake"
metrics=$(curl -sf "http://$ADMIN/metrics" || python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://$ADMIN/metrics').read().decode())")
grep -qx "orderly_disk_full 1" <<<"$metrics" || fail "/metrics does not show orderly_disk_full 1"
grep -qx "orderly_intake_open 0" <<<"$metrics" || fail "/metrics does not show orderly_intake_open 0"
[ "$(grep -c "disk full: not reading intake" "$WORK/broker.1.log")" -eq 1 ] || fail "want exactly one disk-full warning"

# The producer gives up after its timeout and says why.
code=0
wait "$producer" || code=$?
cat "$WORK/producer.log"
[ "$code" -eq 4 ] || fail "producer exited $code, want 4 (timed out)"
grep -q "disk_full" "$WORK/producer.log" || fail "the producer does not report the broker's reason"
grep -q "is the broker running" "$WORK/producer.log" && fail "the producer suggests the broker is down"

rm -f "$MNT/filler"
wait_for 30 "the broker to resume by itself" status_cmp 'v["disk_full"]' = False
kill -0 "$pid" 2>/dev/null || fail "the broker exited"
grep -q "disk space is back: reading intake again" "$WORK/broker.1.log" || fail "no log line when space returned"
[ "$BROKER_STARTS" -eq 1 ] || fail "the broker was restarted"

# Intake is open again: a new run is confirmed at once.
"$BIN/orderly-producer" send --id after --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/after.jsonl" \
    --confirmed-log "$WORK/confirmed_after.txt" --timeout 30 >"$WORK/producer_after.log" 2>&1 ||
    fail "a producer after the disk was freed did not succeed"

start_worker w1 --concurrency 8 --sink "$WORK/sink"
wait_for 120 "the backlog drained" status_cmp 'v["pending_orders"] + v["in_flight_orders"]' -eq 0
confirmed=$(wc -l <"$WORK/confirmed.txt")
[ "$confirmed" -ge 100 ] || fail "only $confirmed orders confirmed"
python3 "$HELPERS/check_sinks.py" full "$WORK/expected.json" --exactly-once --only "$WORK/confirmed.txt" "$WORK/sink"
python3 "$HELPERS/check_sinks.py" after "$WORK/expected_after.json" --exactly-once "$WORK/sink"
echo "disk_full: the broker stayed up (pid $pid), held intake with backpressure disk_full, resumed by itself; $confirmed confirmed orders delivered"
