# Shared by the benchmark scripts (sourced, with BIN set to the binaries'
# directory): free ports, waiting for the broker's acked count, and
# stopping a run's processes.

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# await_acked OUT TOTAL ADMIN...: waits until TOTAL orders are acknowledged
# at the serving broker among ADMIN (a group's leader), or AWAIT_TIMEOUT_S
# pass; writes bench/await_status.py's JSON to OUT (the count and the
# broker's last-ack Unix ms); fails if the total was not reached. One python3
# process polls every AWAIT_POLL_S, called once the producers have exited:
# an `orderly-broker status` process and two greps every 50 ms during the
# run (as before 0.5) took up to a fifth of a core on two cores; the run's
# end is the broker's own last-ack time, not when a poll saw it.
#
# AWAIT_WATCH_PIDS (an array, may be empty): the run's brokers and workers.
# Once one has exited the wait ends at once (the total cannot come), and
# the JSON's `exited` names them (see await_failed).
AWAIT_POLL_S=0.5 AWAIT_TIMEOUT_S=600
AWAIT_WATCH_PIDS=()
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# bench_bins CARGO_BUILD_ARGS...: BIN is $ORDERLY_BIN_DIR when set (an A/B
# against another build's binaries, or the test command's smoke runs on
# the debug ones, whose figures mean nothing), else those release
# binaries, built first.
bench_bins() {
    if [ -n "${ORDERLY_BIN_DIR:-}" ]; then
        BIN=$ORDERLY_BIN_DIR
    else
        cargo build --release --quiet "$@"
        BIN="$BENCH_DIR/../target/release"
    fi
}
await_acked() {
    local out=$1 total=$2
    shift 2
    local watch=() pid
    for pid in "${AWAIT_WATCH_PIDS[@]}"; do watch+=(--watch "$pid"); done
    python3 "$BENCH_DIR/await_status.py" --counter orders_acked --at-least "$total" --interval "$AWAIT_POLL_S" \
        --timeout "$AWAIT_TIMEOUT_S" "${watch[@]}" "$@" >"$out"
}

# await_failed AWAITED LOG...: when await_acked's JSON says a watched
# process exited mid-run, prints that with the LOGs and fails: the run's
# figures would mean nothing.
await_failed() {
    local awaited=$1 gone
    shift
    gone=$(python3 -c 'import json, sys; print(" ".join(map(str, json.load(open(sys.argv[1])).get("exited", []))))' "$awaited")
    [ -n "$gone" ] || return 1
    echo "bench: a process of the run exited mid-run (PID $gone); the logs:" >&2
    local log
    for log in "$@"; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
    return 0
}

# ended_at AWAITED: the Unix time (s) a run ended by await_acked's JSON: the
# broker's last ack, or when the poll saw the total (a broker older than 0.5
# does not say when it last acked).
ended_at() {
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
print((v["last_ack_unix_ms"] or v["seen_unix_ms"]) / 1000)' "$1"
}

# The current run's processes and directory, stopped and removed when the
# run ends and when the script does (also on SIGINT or SIGTERM: background
# jobs of a script ignore SIGINT, so they are killed by their PIDs).
RUN_PIDS=() RUN_WORK=
# Brokers and workers stop at once on SIGTERM; an interrupted producer waits
# for confirms that will not come, so what still runs after this is killed.
STOP_GRACE_S=5
stop_run() {
    local pid deadline=$((SECONDS + STOP_GRACE_S))
    [ ${#RUN_PIDS[@]} -eq 0 ] || kill "${RUN_PIDS[@]}" 2>/dev/null || true
    for pid in "${RUN_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    [ ${#RUN_PIDS[@]} -eq 0 ] || wait "${RUN_PIDS[@]}" 2>/dev/null || true
    [ -z "$RUN_WORK" ] || rm -rf "$RUN_WORK"
    RUN_PIDS=() RUN_WORK=
}
