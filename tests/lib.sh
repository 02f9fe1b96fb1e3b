#!/usr/bin/env bash
# Shared helpers for orderly's shell-scripted tests. Source it; it sets a
# trap that kills every process started with `start` and removes the work
# directory, on success, failure or interrupt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ORDERLY_BIN_DIR:-$ROOT/target/debug}"
HELPERS="$ROOT/tests/helpers"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/orderly-test.XXXXXX")"
PIDS=()

# stop_started [TENTHS]: SIGTERM to every process started with `start`,
# up to TENTHS tenths of a second (default 30) for them to drain, then
# SIGKILL to any still running.
stop_started() {
    local tenths="${1:-30}"
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 "$tenths"); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

cleanup() {
    local status=$?
    stop_started
    if [ "$status" != 0 ] && [ -d "$WORK" ]; then
        echo "--- logs of the failed run ($WORK) ---" >&2
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            echo "== $(basename "$log") (last 20 lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    if [ -z "${ORDERLY_KEEP_WORK:-}" ]; then rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints a TCP port that is free right now on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log,
# and remembers its PID (in $LAST_PID) for cleanup.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_for SECONDS DESCRIPTION CMD ARGS...: runs CMD until it succeeds.
# Pass a function (e.g. status_cmp), never "$(...)": that would be expanded
# once, before the first try. A single argument is evaluated as shell code.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until if [ $# -eq 1 ]; then eval "$1"; else "$@"; fi; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after ${seconds}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# start_broker [EXTRA FLAGS...]: a broker on run-time ports; sets INTAKE,
# FANOUT, CONTROL, ADMIN and BROKER_PID. Restartable (same ports, data).
# Its data directory is $DATA_DIR if set, else $WORK/data.
start_broker() {
    INTAKE=${INTAKE:-"tcp://127.0.0.1:$(free_port)"}
    FANOUT=${FANOUT:-"tcp://127.0.0.1:$(free_port)"}
    CONTROL=${CONTROL:-"tcp://127.0.0.1:$(free_port)"}
    ADMIN=${ADMIN:-"127.0.0.1:$(free_port)"}
    BROKER_STARTS=$((${BROKER_STARTS:-0} + 1))
    start "broker.$BROKER_STARTS" "$BIN/orderly-broker" run --data-dir "${DATA_DIR:-$WORK/data}" \
        --intake "$INTAKE" --fanout "$FANOUT" --control "$CONTROL" --admin "$ADMIN" --status-interval-secs 1 "$@"
    BROKER_PID=$LAST_PID
    wait_for 20 "the broker's admin endpoint" '"$BIN/orderly-broker" status --admin "$ADMIN" --json >/dev/null 2>&1'
}

# start_worker NAME FLAGS...: a worker connected to the broker above.
start_worker() {
    local name=$1
    shift
    start "$name" "$BIN/orderly-worker" run --id "$name" --fanout "$FANOUT" --control "$CONTROL" \
        --heartbeat-interval-ms 500 "$@"
}

# status_field EXPR: a value from the broker's /status JSON (python expr on v).
status_field() {
    "$BIN/orderly-broker" status --admin "$ADMIN" --json | python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"
}

# status_cmp EXPR OP N: compares a /status value (see status_field) with N.
status_cmp() {
    local value
    value=$(status_field "$1") || return 1
    test "$value" "$2" "$3"
}

# count_cmp OP N CMD...: compares the number of lines CMD prints with N.
count_cmp() {
    local op=$1 n=$2
    shift 2
    test "$("$@" 2>/dev/null | wc -l)" "$op" "$n"
}

# sink_count DIR...: distinct orders delivered into the sinks.
sink_count() {
    cat "$@" 2>/dev/null | cut -f2 | sort -u | wc -l
}
