#!/usr/bin/env bash
# Issue 14, attack 5: a sender that never finishes a multipart message
# (every frame under ZMQ_MAXMSGSIZE, MORE always set) makes libzmq buffer
# frames until the broker runs out of memory; orderly cannot bound that.
# The mitigation is a memory limit and a restart: this runs the broker under
# a memory limit (a cgroup v2 or v1 memory group where the machine allows
# one, else RLIMIT_AS via prlimit; the output says which), confirms orders
# with no worker running, floods intake until the broker is killed at its
# limit, restarts it (as systemd's Restart=on-failure would) and checks that
# every confirmed order reaches a worker byte-identical.
source "$(dirname "$0")/../lib.sh"

ORDERS=${ORDERS:-500}
LIMIT_MIB=${LIMIT_MIB:-256}
# RLIMIT_AS counts address space, not memory: thread stacks and allocator
# reservations count too, so it needs more room than a cgroup limit.
LIMIT_AS_MIB=${LIMIT_AS_MIB:-1024}
FLOOD_SECS=${FLOOD_SECS:-60}
# auto: a cgroup if one can be made, else RLIMIT_AS; rlimit: RLIMIT_AS only.
MEMORY_LIMIT=${MEMORY_LIMIT:-auto}
INTAKE="tcp://127.0.0.1:$(free_port)"
FANOUT="tcp://127.0.0.1:$(free_port)"
CONTROL="tcp://127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"

# ---- the memory limit: a cgroup of our own, else RLIMIT_AS ---------------------
GROUP=
LIMIT_KIND=
limit_with_cgroup_v2() {
    local base
    [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers || return 1
    base="/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)"
    grep -qw memory "$base/cgroup.subtree_control" 2>/dev/null || return 1
    mkdir "$base/orderly-memory-limit.$$" 2>/dev/null || return 1
    GROUP="$base/orderly-memory-limit.$$"
    echo $((LIMIT_MIB * 1024 * 1024)) >"$GROUP/memory.max" || return 1
    [ ! -f "$GROUP/memory.swap.max" ] || echo 0 >"$GROUP/memory.swap.max"
    LIMIT_KIND="cgroup v2 memory.max=${LIMIT_MIB}MiB"
}
limit_with_cgroup_v1() {
    local base
    base="/sys/fs/cgroup/memory$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)"
    [ -f "$base/memory.limit_in_bytes" ] || return 1
    mkdir "$base/orderly-memory-limit.$$" 2>/dev/null || return 1
    GROUP="$base/orderly-memory-limit.$$"
    echo $((LIMIT_MIB * 1024 * 1024)) >"$GROUP/memory.limit_in_bytes" || return 1
    # Memory plus swap at the same limit: no swap.
    [ ! -f "$GROUP/memory.memsw.limit_in_bytes" ] ||
        echo $((LIMIT_MIB * 1024 * 1024)) >"$GROUP/memory.memsw.limit_in_bytes" 2>/dev/null || true
    LIMIT_KIND="cgroup v1 memory.limit_in_bytes=${LIMIT_MIB}MiB"
}
remove_group() {
    [ -n "$GROUP" ] && [ -d "$GROUP" ] || return 0
    # A group can go only once empty; its processes were killed just before.
    for _ in $(seq 1 50); do rmdir "$GROUP" 2>/dev/null && return 0; sleep 0.1; done
    echo "warning: could not remove $GROUP" >&2
}
on_exit() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    remove_group
    (exit "$status")
    cleanup
}
trap on_exit EXIT

if [ "$MEMORY_LIMIT" = rlimit ] || { ! limit_with_cgroup_v2 && { remove_group; GROUP=; ! limit_with_cgroup_v1; }; }; then
    remove_group
    GROUP=
    command -v prlimit >/dev/null || fail "no cgroup memory group can be made here and prlimit is missing"
    LIMIT_KIND="RLIMIT_AS (prlimit --as) ${LIMIT_AS_MIB}MiB"
fi
echo "memory limit: $LIMIT_KIND"

# The command prefix that runs a program under the limit, by exec (so
# $LAST_PID is the broker's). A group is joined before the exec: every byte
# the broker ever allocates is charged to it.
if [ -n "$GROUP" ]; then
    LIMITED=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$GROUP")
else
    LIMITED=(prlimit --as=$((LIMIT_AS_MIB * 1024 * 1024)) --)
fi

start_limited_broker() {
    start "broker.$1" "${LIMITED[@]}" "$BIN/orderly-broker" run --data-dir "$WORK/data" \
        --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "$ADMIN" --status-interval-secs 1
    BROKER_PID=$LAST_PID
    wait_for 20 "the broker's admin endpoint" '"$BIN/orderly-broker" status --admin "$ADMIN" --json >/dev/null 2>&1'
}

# ---- 1. confirmed orders, no worker yet --------------------------------------------
python3 "$HELPERS/orders.py" "$ORDERS" 10 "$WORK/orders.jsonl" "$WORK/expected.json" memlimit
start_limited_broker 1
"$BIN/orderly-producer" send --id memlimit --intake "$INTAKE" --fanout "$FANOUT" --file "$WORK/orders.jsonl" \
    --confirmed-log "$WORK/confirmed.txt" --timeout 30 >"$WORK/producer.log" 2>&1 ||
    fail "the producer did not get its orders confirmed: $(tail -n 2 "$WORK/producer.log")"
confirmed=$(sort -u "$WORK/confirmed.txt" | wc -l)
[ "$confirmed" -eq "$ORDERS" ] || fail "$confirmed of $ORDERS orders confirmed"
echo "$confirmed orders confirmed, none delivered yet (no worker)"

# ---- 2. the flood, until the broker dies at its limit --------------------------
port=${INTAKE##*:}
broker_dead() { ! kill -0 "$BROKER_PID" 2>/dev/null; }
# A flood whose connection ends early (it prints why) is started again, so
# one lost connection is not read as a broker that survived.
floods=0
flood_started=$SECONDS
while ! broker_dead && [ $((SECONDS - flood_started)) -lt "$FLOOD_SECS" ]; do
    floods=$((floods + 1))
    start "flood.$floods" python3 "$HELPERS/endless_multipart.py" 127.0.0.1 "$port" "$FLOOD_SECS"
    FLOOD=$LAST_PID
    while kill -0 "$FLOOD" 2>/dev/null && ! broker_dead; do sleep 0.2; done
done
wait_for 10 "the broker to die at its memory limit" broker_dead ||
    fail "the broker survived ${FLOOD_SECS}s of an endless multipart message ($floods floods: $(cat "$WORK"/flood.*.log | tr '\n' ' ')): was the limit applied?"
code=0
wait "$BROKER_PID" || code=$?
kill -TERM "$FLOOD" 2>/dev/null || true
wait "$FLOOD" 2>/dev/null || true
cat "$WORK"/flood.*.log
[ "$code" -gt 128 ] || fail "the broker exited $code, not killed by a signal: $(tail -n 3 "$WORK/broker.1.log")"
peak=
if [ -n "$GROUP" ]; then
    peak=$(cat "$GROUP/memory.peak" 2>/dev/null || cat "$GROUP/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
    peak=" (its group's peak: $((peak / 1024 / 1024)) MiB)"
fi
echo "the broker died at its limit by signal $((code - 128))$peak"

# ---- 3. restart (as systemd would) and deliver -----------------------------------
start_limited_broker 2
start worker "$BIN/orderly-worker" run --id w1 --fanout "$FANOUT" --control "$CONTROL" --concurrency 8 \
    --sink "$WORK/sink"
all_delivered() {
    python3 "$HELPERS/check_sinks.py" memlimit "$WORK/expected.json" --only "$WORK/confirmed.txt" \
        "$WORK/sink" >"$WORK/check.out" 2>&1
}
wait_for 120 "every confirmed order delivered" all_delivered || { cat "$WORK/check.out"; fail "confirmed orders missing"; }
cat "$WORK/check.out"
echo "memory_limit ($LIMIT_KIND): the broker was killed at its limit; after a restart all $confirmed confirmed orders were delivered byte-identical"
